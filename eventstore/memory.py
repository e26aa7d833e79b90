"""The in-memory backend: a real implementation of the contract, for fast tests and embedding."""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from .base import Decider, EventStore, InlineProjection
from .errors import WrongExpectedVersion
from .model import (
    ANY,
    GENESIS_HASH,
    AppendResult,
    Expected,
    NewEvent,
    RecordedEvent,
    StreamHint,
    StreamInfo,
    VerifyResult,
)
from .recording import (
    CommitSignal,
    DecideContext,
    check_batch_size,
    events_for_replay,
    follow,
    record_events,
    replayed_result,
    resolve_partition,
    upcast,
    utc_now,
    verify_all,
    version_matches,
)
from .upcasting import UpcasterRegistry


@dataclasses.dataclass
class _Stream:
    partition: str
    version: int = 0
    events: list[RecordedEvent] = dataclasses.field(default_factory=list)


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    # A JSON round trip: stored payloads are as JSON-shaped and as isolated from callers as in SQL.
    result: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    return result


class MemoryEventStore(EventStore):
    """Keeps the log in process memory. Appends lock their stream (an `asyncio.Lock` each); inline
    projections get `tx=None`."""

    def __init__(
        self,
        *,
        upcasters: UpcasterRegistry | None = None,
        inline_projections: Sequence[InlineProjection] = (),
    ) -> None:
        super().__init__(upcasters=upcasters, inline_projections=inline_projections)
        self._streams: dict[str, _Stream] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._log: list[RecordedEvent] = []
        self._by_id: dict[uuid.UUID, RecordedEvent] = {}
        self._next_position = 1
        # First positions reserved by appends still running their inline projections: read_all stops
        # below the lowest one, as the PostgreSQL watermark does, so a late commit is never skipped.
        self._pending: set[int] = set()
        self._signal = CommitSignal()

    async def append_with(
        self,
        stream_id: str,
        decide: Decider,
        expected_version: Expected = ANY,
        *,
        partition: str | None = None,
        prefetch: Any = None,
        optimistic: bool = True,
        hint: StreamHint | None = None,
    ) -> AppendResult:
        async with self._locks.setdefault(stream_id, asyncio.Lock()):
            stream = self._streams.get(stream_id)
            version = stream.version if stream else 0
            part = resolve_partition(stream_id, partition, stream.partition if stream else None)
            info = StreamInfo(stream_id, part, version) if stream else None
            context = DecideContext(info, None)
            if not version_matches(expected_version, version):
                new = await events_for_replay(decide, context)
                if new and all(e.event_id in self._by_id for e in new):
                    return self._replay(stream_id, new)
                raise WrongExpectedVersion(stream_id, expected_version, version)
            new = list(await decide(context))
            if not new:
                return AppendResult(stream_id, (), version)
            check_batch_size(len(new))
            if len({e.event_id for e in new}) < len(new) or any(e.event_id in self._by_id for e in new):
                return self._replay(stream_id, new)
            return await self._commit(stream_id, part, stream, new)

    def _replay(self, stream_id: str, new: Sequence[NewEvent]) -> AppendResult:
        result = replayed_result(stream_id, new, self._by_id)
        return dataclasses.replace(result, events=tuple(self._out(e) for e in result.events))

    async def _commit(
        self, stream_id: str, partition: str, stream: _Stream | None, new: list[NewEvent]
    ) -> AppendResult:
        version = stream.version if stream else 0
        prev = stream.events[-1].hash if stream and stream.events else None
        first = self._next_position
        self._next_position += len(new)
        stored = [dataclasses.replace(e, data=_copy(e.data), metadata=_copy(e.metadata)) for e in new]
        recorded = record_events(
            stored,
            stream_id=stream_id,
            partition=partition,
            version=version,
            prev_hash=prev or GENESIS_HASH,
            positions=range(first, first + len(new)),
            recorded_at=utc_now(),
        )
        self._pending.add(first)
        try:
            published = [self._out(e) for e in recorded]
            for projection in self.inline_projections:
                await projection.apply(None, published)
            if any(e.event_id in self._by_id for e in new):  # stored meanwhile by another stream
                return self._replay(stream_id, new)
        finally:
            self._pending.discard(first)
        self._publish(stream_id, partition, recorded)
        result = AppendResult(stream_id, tuple(published), recorded[-1].stream_version)
        self._appended(result)
        return result

    def _publish(self, stream_id: str, partition: str, recorded: list[RecordedEvent]) -> None:
        stream = self._streams.setdefault(stream_id, _Stream(partition))
        stream.events.extend(recorded)
        stream.version = recorded[-1].stream_version
        for event in recorded:
            self._by_id[event.event_id] = event
            bisect.insort(self._log, event, key=_position)
        self._signal.notify()

    def _out(self, event: RecordedEvent) -> RecordedEvent:
        copied = dataclasses.replace(event, data=_copy(event.data), metadata=_copy(event.metadata))
        return upcast(self.upcasters, copied)

    async def read_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        stream = self._streams.get(stream_id)
        if stream is None:
            return []
        top = stream.version if to_version is None else to_version
        chosen = [e for e in stream.events if after_version < e.stream_version <= top]
        return [self._out(e) for e in chosen[:limit]]

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        start = bisect.bisect_right(self._log, after, key=_position)
        stop = bisect.bisect_left(self._log, self._watermark(), key=_position)
        return [self._out(e) for e in self._log[start : min(stop, start + limit)]]

    async def head_position(self) -> int:
        stop = bisect.bisect_left(self._log, self._watermark(), key=_position)
        return self._log[stop - 1].global_position if stop else 0

    def _watermark(self) -> int:
        return min(self._pending, default=self._next_position)

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        stream = self._streams.get(stream_id)
        return StreamInfo(stream_id, stream.partition, stream.version) if stream else None

    async def get_events(self, event_ids: Sequence[Any]) -> list[RecordedEvent]:
        wanted = {uuid.UUID(str(i)) for i in event_ids}
        found = [self._by_id[i] for i in wanted if i in self._by_id]
        return [self._out(e) for e in sorted(found, key=_position)]

    async def verify(
        self, stream_id: str | None = None, *, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        if stream_id is not None:
            stream = self._streams.get(stream_id)
            head = stream.version if stream else 0
            pairs = ((e, head) for e in (stream.events if stream else []))
            result = verify_all(pairs, single=(stream_id, head))
        else:
            named = sorted(self._streams.items())
            result = verify_all((e, s.version) for _, s in named for e in s.events)
        if progress is not None:
            progress(result.events_checked)
        return result

    async def subscribe(self, *, after: int = 0) -> AsyncIterator[RecordedEvent]:
        async def read(checkpoint: int, limit: int) -> list[RecordedEvent]:
            return await self.read_all(after=checkpoint, limit=limit)

        async for event in follow(read, self._signal.waiter, after=after):
            yield event


def _position(event: RecordedEvent) -> int:
    return event.global_position
