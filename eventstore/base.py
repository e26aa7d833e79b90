"""The event store contract, documented once here; backends carry only "why" comments."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from .model import ANY, AppendResult, Expected, NewEvent, RecordedEvent, StreamHint, StreamInfo, VerifyResult
from .upcasting import UpcasterRegistry


class StreamContext(Protocol):
    """What a decider sees: the stream head, and a connection to read the caller's own tables.

    Usually the stream is locked while the decider runs. On PostgreSQL an append of one event to an
    existing stream with `ANY` is first decided optimistically, on one consistent read without the
    lock, and written only if the stream has not moved since; otherwise the decider runs again. So a
    decider must be free of side effects beyond the events it returns."""

    @property
    def stream(self) -> StreamInfo | None:
        """The stream head, or None when the stream has no events yet."""

    @property
    def tx(self) -> Any:
        """The backend's transaction handle (SQLAlchemy `AsyncConnection` for SQL, None for memory),
        so the caller can read its own tables consistently with the locked stream. PostgreSQL's
        optimistic path hands over a `driver.DriverConnection` instead (`driver_fetch` only)."""

    @property
    def prefetched(self) -> Sequence[Any] | None:
        """The rows (mappings) of the `prefetch` given to `append_with`, read under the stream lock,
        on PostgreSQL in the lock's own round trip; None without a prefetch (or a backend that
        ignores it: the memory store)."""


Decider = Callable[[StreamContext], Awaitable[Sequence[NewEvent]]]


class InlineProjection(Protocol):
    """Runs inside the append's transaction, after the events are inserted (read-your-writes).

    A projection may also offer `write_fragment(dialect, events) -> WriteFragment | None`: SQL the
    backend runs as part of its own insert statement instead of calling `apply` (PostgreSQL asks;
    None means "call apply")."""

    async def apply(self, tx: Any, events: Sequence[RecordedEvent]) -> None: ...


class WriteFragment(NamedTuple):
    """Common table expressions (`name AS (...), ...`) to run inside the store's insert statement,
    so events and their read-model rows are written in one round trip. Data-modifying CTEs run
    whether or not anything reads them, so each write must be gated on `EXISTS (SELECT FROM es_ev)`
    (the store's insert, which writes nothing when an optimistic append finds the stream moved).
    `ctes` must be one of a few constant texts (each is compiled once); its names (CTEs and
    `:params`) must not start with `es_`, which the store keeps for its own. The events handed to
    `write_fragment` carry their final versions, data and times, but on PostgreSQL's optimistic path
    a placeholder `global_position` and an empty `hash` (both are computed inside the statement)."""

    ctes: str
    params: Mapping[str, Any]


class EventStore(abc.ABC):
    """A chat-agnostic, append-only event log.

    Guarantees shared by every backend:
    - `append` is atomic: all events of one call are stored, or none.
    - Stream versions are 1, 2, 3 … per stream, without gaps. Appends to one stream serialise on
      that stream only; appends to different streams run concurrently.
    - Re-appending events whose `event_id`s are all already stored in that stream with the same
      type, data and metadata returns the original `AppendResult` (`replayed=True`) and writes
      nothing; a stored id with other content raises `DuplicateEvent`.
    - `global_position` increases in commit order, so `read_all(after=p)` never skips an event that
      commits late; positions need not be contiguous.
    - Every event carries `prev_hash`/`hash` chaining it to the previous event of its stream.
    - Driver failures surface as `StoreUnavailable` (connectivity) or another `EventStoreError`.
    """

    def __init__(
        self,
        *,
        upcasters: UpcasterRegistry | None = None,
        inline_projections: Sequence[InlineProjection] = (),
    ) -> None:
        self.upcasters = upcasters or UpcasterRegistry()
        self.inline_projections = list(inline_projections)
        self.append_listeners: list[Callable[[AppendResult], None]] = []
        """Called with the result of every append that wrote events, once it is committed (replays
        and failed appends are not reported). For cheap in-process work (metrics); must not raise.
        Unlike an inline projection, a listener keeps the single-statement append path open."""

    def _appended(self, result: AppendResult) -> None:
        for listener in self.append_listeners:
            listener(result)

    async def append(
        self,
        stream_id: str,
        new_events: Sequence[NewEvent],
        expected_version: Expected = ANY,
        *,
        partition: str | None = None,
    ) -> AppendResult:
        """Append `new_events` to `stream_id` atomically.

        `expected_version`: `ANY`, `NO_STREAM` (the stream must have no events), `STREAM_EXISTS`,
        or an int (the stream must be exactly at that version); otherwise `WrongExpectedVersion`.
        `partition` is stored on the stream row at creation and on every event; appending with a
        different partition to an existing stream raises `PartitionMismatch`. None means "the
        stream's own" (or "" for a new stream).
        """

        async def constant(_: StreamContext) -> Sequence[NewEvent]:
            return new_events

        return await self.append_with(stream_id, constant, expected_version, partition=partition)

    @abc.abstractmethod
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
        """Lock `stream_id`, call `decide(context)` to produce the events, then append them as
        `append` does, in one transaction (or optimistically: see `StreamContext`; `decide` may then
        run more than once, and only its last result is written). Exceptions from `decide` roll
        everything back and propagate unchanged. An empty sequence from `decide` writes nothing and returns an
        `AppendResult` with no events at the current version. `prefetch`: a read of the caller's
        own tables that `decide` needs, run under the lock and handed over as `context.prefetched`
        (SQL stores take a `sql.Prefetch`). `optimistic=False` takes the lock first: for callers
        that know the decision will not be a single event, whose optimistic read would be wasted.
        `hint`: the caller's memory of the stream (see `StreamHint`); the optimistic append then
        decides on it without reading. Backends without an optimistic path ignore it."""

    @abc.abstractmethod
    async def read_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream with `after_version < stream_version <= to_version`, in order."""

    @abc.abstractmethod
    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events with `global_position > after`, in position order, gap-safe."""

    @abc.abstractmethod
    async def head_position(self) -> int:
        """The highest position `read_all` can return right now (0 for an empty log)."""

    @abc.abstractmethod
    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        """The head of a stream, or None when it has no events."""

    @abc.abstractmethod
    async def get_events(self, event_ids: Sequence[Any]) -> list[RecordedEvent]:
        """Stored events with these ids (any stream), in position order."""

    @abc.abstractmethod
    async def verify(
        self, stream_id: str | None = None, *, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """Recompute hash chains (one stream, or all) and report the first broken event.
        `progress(n)` is called as the walk goes, with the number of events checked so far."""

    async def subscribe(self, *, after: int = 0) -> AsyncIterator[RecordedEvent]:
        """Historic events after `after`, then live ones as they commit; never a gap or duplicate."""
        raise NotImplementedError
        yield  # pragma: no cover

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
