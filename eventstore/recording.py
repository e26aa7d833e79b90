"""Backend-independent pieces of an append: hashing new events, version checks, idempotent replays,
chain verification and the catch-up-then-live loop of `subscribe`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import DuplicateEvent, EventStoreError, PartitionMismatch
from .hashing import canonical_json, chain_hash, envelope_for_hash
from .model import (
    ANY,
    GENESIS_HASH,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    BrokenLink,
    Expected,
    NewEvent,
    RecordedEvent,
    StreamInfo,
    VerifyResult,
)
from .upcasting import UpcasterRegistry

MAX_EVENTS_PER_APPEND = 65536
"""PostgreSQL positions keep 16 bits for the index within a transaction; every backend enforces it."""


class AppendTooLarge(EventStoreError, ValueError):
    """More events in one append than a transaction can number."""


@dataclasses.dataclass(frozen=True, slots=True)
class DecideContext:
    """The `StreamContext` handed to deciders."""

    stream: StreamInfo | None
    tx: Any
    prefetched: Sequence[Any] | None = None


def utc_now() -> datetime:
    """The application clock; one reading per append (datetime already has microsecond resolution)."""
    return datetime.now(UTC)


def version_matches(expected: Expected, version: int) -> bool:
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return version == 0
    if expected is STREAM_EXISTS:
        return version > 0
    return version == expected


def resolve_partition(stream_id: str, requested: str | None, stored: str | None) -> str:
    if stored is None:
        return requested or ""
    if requested is not None and requested != stored:
        raise PartitionMismatch(f"stream {stream_id!r} has partition {stored!r}, not {requested!r}")
    return stored


def check_batch_size(count: int) -> None:
    if count > MAX_EVENTS_PER_APPEND:
        raise AppendTooLarge(f"{count} events in one append; at most {MAX_EVENTS_PER_APPEND}")


def record_events(
    new: Sequence[NewEvent],
    *,
    stream_id: str,
    partition: str,
    version: int,
    prev_hash: str,
    positions: Sequence[int],
    recorded_at: datetime,
) -> list[RecordedEvent]:
    """Number and hash-chain `new` after stream `version` whose last hash is `prev_hash`, stamped
    `recorded_at` unless an event brings its own (an imported log keeps its original times)."""
    out: list[RecordedEvent] = []
    for offset, (event, position) in enumerate(zip(new, positions, strict=True), start=1):
        at = event.recorded_at or recorded_at
        envelope = envelope_for_hash(
            event_id=event.event_id,
            stream_id=stream_id,
            stream_version=version + offset,
            global_position=position,
            type=event.type,
            schema_version=event.schema_version,
            data=event.data,
            metadata=event.metadata,
            recorded_at=at,
            prev_hash=prev_hash,
        )
        digest = chain_hash(prev_hash, envelope)
        out.append(
            RecordedEvent(
                event_id=event.event_id,
                stream_id=stream_id,
                stream_version=version + offset,
                global_position=position,
                partition=partition,
                type=event.type,
                schema_version=event.schema_version,
                data=event.data,
                metadata=event.metadata,
                recorded_at=at,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        prev_hash = digest
    return out


def envelope_of(event: RecordedEvent) -> dict[str, Any]:
    """The hashed envelope of a stored (or about to be stored) event."""
    return envelope_for_hash(
        event_id=event.event_id,
        stream_id=event.stream_id,
        stream_version=event.stream_version,
        global_position=event.global_position,
        type=event.type,
        schema_version=event.schema_version,
        data=event.data,
        metadata=event.metadata,
        recorded_at=event.recorded_at,
        prev_hash=event.prev_hash,
    )


async def events_for_replay(
    decide: Callable[[DecideContext], Awaitable[Sequence[NewEvent]]], context: DecideContext
) -> Sequence[NewEvent]:
    """Decide for a stream at an unexpected version, only to recognise an idempotent retry."""
    try:
        return await decide(context)
    except Exception:
        return ()


def upcast(registry: UpcasterRegistry, event: RecordedEvent) -> RecordedEvent:
    version, data = registry.upcast(event.type, event.schema_version, event.data)
    if version == event.schema_version and data is event.data:
        return event
    return dataclasses.replace(event, schema_version=version, data=data)


def replayed_result(
    stream_id: str, new: Sequence[NewEvent], stored: Mapping[uuid.UUID, RecordedEvent]
) -> AppendResult:
    """The original result of an append whose events are all stored (raw rows in `stored`), or
    `DuplicateEvent` when an id is unknown, in another stream, or stored with other content."""
    for event in new:
        original = stored.get(event.event_id)
        if original is None:
            raise DuplicateEvent(event.event_id, "part of the batch is not stored")
        if original.stream_id != stream_id:
            raise DuplicateEvent(event.event_id, f"stored in stream {original.stream_id!r}")
        if not _same_content(event, original):
            raise DuplicateEvent(event.event_id)
    unique = {e.event_id: stored[e.event_id] for e in new}
    events = sorted(unique.values(), key=lambda e: e.stream_version)
    return AppendResult(stream_id, tuple(events), events[-1].stream_version, replayed=True)


def _same_content(new: NewEvent, stored: RecordedEvent) -> bool:
    return (
        new.type == stored.type
        and new.schema_version == stored.schema_version
        and canonical_json(new.data) == canonical_json(stored.data)
        and canonical_json(new.metadata) == canonical_json(stored.metadata)
    )


class ChainVerifier:
    """Walks raw events ordered by (stream, version) and finds the first broken link.

    `single_stream` stops counting at the first break; for the whole log every event is counted.
    """

    def __init__(self, *, single_stream: bool) -> None:
        self.single_stream = single_stream
        self.events_checked = 0
        self.first_broken: BrokenLink | None = None
        self._stream: str | None = None
        self._head = 0
        self._next_version = 1
        self._prev_hash = GENESIS_HASH

    @property
    def done(self) -> bool:
        return self.single_stream and self.first_broken is not None

    def start(self, stream_id: str, head_version: int) -> None:
        """Begin a stream (explicitly, so a stream whose rows are all gone is still checked)."""
        self._close_stream()
        self._stream, self._head = stream_id, head_version
        self._next_version, self._prev_hash = 1, GENESIS_HASH

    def feed(self, event: RecordedEvent, head_version: int) -> None:
        """`head_version` is the version stored on the stream row (finds deleted tail events)."""
        if event.stream_id != self._stream:
            self.start(event.stream_id, head_version)
        if self.done:
            return
        if event.stream_version != self._next_version:
            self._break(BrokenLink(event.stream_id, self._next_version, None, None, None, "missing event"))
            if self.done:
                return
        self.events_checked += 1
        if self.first_broken is None:
            self._check(event)
        self._next_version, self._prev_hash = event.stream_version + 1, event.hash

    def result(self) -> VerifyResult:
        self._close_stream()
        return VerifyResult(self.first_broken is None, self.events_checked, self.first_broken)

    def _check(self, event: RecordedEvent) -> None:
        if event.prev_hash != self._prev_hash:
            link = BrokenLink(
                event.stream_id,
                event.stream_version,
                event.global_position,
                self._prev_hash,
                event.prev_hash,
                "prev_hash mismatch",
            )
            self._break(link)
            return
        expected = chain_hash(event.prev_hash, envelope_of(event))
        if expected != event.hash:
            link = BrokenLink(
                event.stream_id,
                event.stream_version,
                event.global_position,
                expected,
                event.hash,
                "hash mismatch",
            )
            self._break(link)

    def _close_stream(self) -> None:
        if self._stream is not None and not self.done and self._next_version <= self._head:
            self._break(BrokenLink(self._stream, self._next_version, None, None, None, "missing event"))
        self._stream = None

    def _break(self, link: BrokenLink) -> None:
        if self.first_broken is None:
            self.first_broken = link


def verify_all(
    pairs: Iterable[tuple[RecordedEvent, int]], *, single: tuple[str, int] | None = None
) -> VerifyResult:
    """Verify (event, stream head version) pairs; `single` = (stream id, head) checks one stream."""
    verifier = ChainVerifier(single_stream=single is not None)
    if single is not None:
        verifier.start(*single)
    for event, head in pairs:
        verifier.feed(event, head)
        if verifier.done:
            break
    return verifier.result()


class CommitSignal:
    """Wakes subscribers after a commit. Take `waiter()` BEFORE reading, so no commit is missed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


async def follow(
    read_all: Callable[[int, int], Awaitable[list[RecordedEvent]]],
    waiter: Callable[[], asyncio.Event],
    *,
    after: int,
    batch: int = 500,
    poll_interval: float = 1.0,
) -> AsyncIterator[RecordedEvent]:
    """Catch up from `after` with `read_all`, then wait for a wake-up (or `poll_interval`, so a missed
    signal only delays) and read again. Every event comes from the same ordered, gap-safe read, so the
    hand-over from history to live can neither skip nor repeat."""
    checkpoint = after
    while True:
        wake = waiter()
        read = asyncio.ensure_future(read_all(checkpoint, batch))
        try:
            events = await asyncio.shield(read)
        except asyncio.CancelledError:
            # Let an in-flight read finish before unwinding: a query cut off mid-way can leave a
            # driver thread (aiosqlite) posting to an event loop that is already closed.
            with contextlib.suppress(BaseException):
                await read
            raise
        for event in events:
            yield event
            checkpoint = event.global_position
        if len(events) < batch:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll_interval)
