"""Asynchronous projections driven from checkpoints.

Each named projection keeps its position in `projection_checkpoints`. A batch's writes and the new
checkpoint commit in ONE transaction, so after a crash a projection resumes exactly after the last
batch it committed: no event is lost or applied twice (effectively exactly-once). The checkpoint row
is locked while a batch runs, so two runners of the same projection never apply a batch twice either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatledger.eventstore import EventStore, RecordedEvent
from chatledger.eventstore.recording import utc_now
from chatledger.eventstore.schema import events
from chatledger.eventstore.sql import SqlEventStore

from .schema import projection_checkpoints as checkpoints

log = logging.getLogger(__name__)


class Projection(Protocol):
    """Folds events into its own tables on the given connection (inside the runner's transaction)."""

    async def apply(self, tx: AsyncConnection, events: Sequence[RecordedEvent]) -> None: ...


class ProjectionRunner:
    """Drives named projections from the log: `await runner.run_once()` catches every projection up
    to the head; `await runner.run_forever(stop)` keeps them there until `stop` is set."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        projections: Mapping[str, Projection],
        *,
        batch_size: int = 500,
        retry_delay_s: float = 1.0,
    ) -> None:
        if not isinstance(store, SqlEventStore):
            raise TypeError("the projection runner needs a SQL event store")
        self.engine = engine
        self.store = store
        self.projections = dict(projections)
        self.batch_size = batch_size
        self.retry_delay_s = retry_delay_s

    def _writing(self) -> AbstractAsyncContextManager[AsyncConnection]:
        # The store's write transaction (on SQLite: BEGIN IMMEDIATE, queued with in-process appends).
        return self.store.transaction()

    async def checkpoint(self, name: str) -> int:
        """The last position `name` has applied (0 before its first batch)."""
        async with self.store.connect() as conn:
            return await _position(conn, name)

    async def run_once(self) -> int:
        """Catch every projection up to the current head; returns how many events were applied."""
        applied = 0
        for name in self.projections:
            while (count := await self._step(name)) > 0:
                applied += count
                if count < self.batch_size:
                    break
        return applied

    async def _step(self, name: str) -> int:
        """One batch of `name`: read after its checkpoint, apply and move the checkpoint atomically."""
        batch = await self.store.read_all(after=await self.checkpoint(name), limit=self.batch_size)
        if not batch:
            return 0
        async with self._writing() as tx:
            start = await _position(tx, name, lock=True)
            fresh = [e for e in batch if e.global_position > start]  # another runner got there first
            if not fresh:
                return 0
            await self.projections[name].apply(tx, fresh)
            await _save(tx, name, fresh[-1].global_position)
        return len(fresh)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set: catch up, then wake on every new event (the store's subscription:
        LISTEN/NOTIFY on PostgreSQL, an in-process signal on SQLite). A failing batch is rolled back,
        logged and retried after `retry_delay_s`."""
        while not stop.is_set():
            try:
                await self.run_once()
                head = min([await self.checkpoint(n) for n in self.projections], default=0)
                await self._wait_for_events(stop, head)
            except Exception:
                log.exception("projection batch failed; retrying in %.1fs", self.retry_delay_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.retry_delay_s)

    async def _wait_for_events(self, stop: asyncio.Event, after: int) -> None:
        """Return when an event after `after` is committed, or when `stop` is set."""
        subscription = self.store.subscribe(after=after)
        assert isinstance(subscription, AsyncGenerator)
        stopping = asyncio.ensure_future(stop.wait())
        arriving = asyncio.ensure_future(_first(subscription))
        try:
            await asyncio.wait({stopping, arriving}, return_when=asyncio.FIRST_COMPLETED)
            if arriving.done():
                arriving.result()  # surface a subscription failure
        finally:
            for task in (stopping, arriving):
                task.cancel()
            await asyncio.gather(stopping, arriving, return_exceptions=True)
            await subscription.aclose()

    async def lag(self) -> dict[str, int]:
        """Events each projection still has to apply (see `projection_lag`)."""
        return await projection_lag(self.store, self.projections)

    async def reset(self, name: str) -> None:
        """Start `name` over from the beginning of the log (its tables are the projection's business)."""
        async with self._writing() as tx:
            await tx.execute(checkpoints.delete().where(checkpoints.c.name == name))


async def projection_lag(store: EventStore, names: Sequence[str] | Mapping[str, Any] = ()) -> dict[str, int]:
    """Events between each projection's checkpoint and the store's head: `{name: events behind}`, for
    every projection with a checkpoint row plus `names` (which count from 0 when they have none).
    Counted in events, not positions (PostgreSQL positions are not contiguous). For `/metrics`."""
    if not isinstance(store, SqlEventStore):
        raise TypeError("projection_lag needs a SQL event store")
    head = await store.head_position()
    async with store.connect() as conn:
        rows = (await conn.execute(sa.select(checkpoints.c.name, checkpoints.c.position))).all()
        positions = {name: 0 for name in names} | {row.name: row.position for row in rows}
        lag: dict[str, int] = {}
        for name, position in positions.items():
            behind = sa.select(sa.func.count()).where(
                events.c.global_position > position, events.c.global_position <= head
            )
            lag[name] = int((await conn.execute(behind)).scalar_one())
    return lag


async def _position(conn: AsyncConnection, name: str, *, lock: bool = False) -> int:
    query = sa.select(checkpoints.c.position).where(checkpoints.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        # Create the row first so there is something to lock: two runners then take turns.
        await conn.execute(_upsert(conn, name, 0, overwrite=False))
        query = query.with_for_update()
    return int((await conn.execute(query)).scalar() or 0)


async def _save(conn: AsyncConnection, name: str, position: int) -> None:
    await conn.execute(_upsert(conn, name, position, overwrite=True))


def _upsert(conn: AsyncConnection, name: str, position: int, *, overwrite: bool) -> Any:
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(checkpoints).values(name=name, position=position, updated_at=utc_now())
    if not overwrite:
        return stmt.on_conflict_do_nothing(index_elements=[checkpoints.c.name])
    return stmt.on_conflict_do_update(
        index_elements=[checkpoints.c.name],
        set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
    )


async def _first(subscription: AsyncIterator[RecordedEvent]) -> RecordedEvent | None:
    return await anext(subscription, None)
