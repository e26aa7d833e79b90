"""One live subscription to the log per process, fanned out to per-conversation listeners.

Each `store.subscribe` holds a database connection (LISTEN on PostgreSQL), so a subscription per
server-sent-events client would drain the pool. The hub runs a single catch-up subscription and hands
every event to the queues registered for its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from chatledger.eventstore import EventStore, EventStoreError, RecordedEvent

log = logging.getLogger("chatledger.live")

QUEUE_LIMIT = 1000
RETRY_SECONDS = 1.0


class ListenerOverflow(Exception):
    """A listener fell more than QUEUE_LIMIT events behind and was dropped (it can resume)."""


class LiveHub:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._listeners: dict[str, set[asyncio.Queue[RecordedEvent | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def listen(self, stream_id: str) -> AsyncIterator[asyncio.Queue[RecordedEvent | None]]:
        """A queue of the stream's events committed from now on (and possibly a few before: callers
        drop versions they have already seen). `None` in the queue means the listener was dropped."""
        await self._ensure_running()
        queue: asyncio.Queue[RecordedEvent | None] = asyncio.Queue(QUEUE_LIMIT)
        self._listeners.setdefault(stream_id, set()).add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(stream_id, set())
            listeners.discard(queue)
            if not listeners:
                self._listeners.pop(stream_id, None)

    async def _ensure_running(self) -> None:
        async with self._starting:  # concurrent first listeners must not start two subscriptions
            if self._task is None or self._task.done():
                # Start at the current head, before the listener registers and reads its history:
                # whatever commits after that history read is above this head.
                head = await self.store.head_position()
                self._task = asyncio.create_task(self._run(head), name="chatledger-live-hub")

    async def _run(self, position: int) -> None:
        while True:
            try:
                async for e in self.store.subscribe(after=position):
                    position = e.global_position
                    self._dispatch(e)
            except EventStoreError as exc:
                # A missed stretch is caught up from `position` once the database is back.
                log.warning("live subscription interrupted, retrying: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)

    def _dispatch(self, e: RecordedEvent) -> None:
        for queue in list(self._listeners.get(e.stream_id, ())):
            try:
                queue.put_nowait(e)
            except asyncio.QueueFull:
                self._listeners[e.stream_id].discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
