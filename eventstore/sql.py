"""What the SQL backends share: SQLAlchemy Core (async) reads, the append skeleton, verification and
the translation of driver errors into the store's error hierarchy."""

from __future__ import annotations

import abc
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .base import Decider, EventStore, InlineProjection, WriteFragment
from .driver import DriverConnection
from .errors import EventStoreError, StoreUnavailable, WrongExpectedVersion
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
    ChainVerifier,
    DecideContext,
    check_batch_size,
    events_for_replay,
    record_events,
    replayed_result,
    resolve_partition,
    upcast,
    utc_now,
    version_matches,
)
from .schema import events, streams
from .upcasting import UpcasterRegistry

T = TypeVar("T")
VERIFY_BATCH = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class StreamHead:
    """A locked stream as an append sees it. `partition` is None while the stream has no events."""

    version: int
    partition: str | None
    last_hash: str | None
    tx_id: int | None = None
    max_position: int = 0
    prefetched: Sequence[Any] | None = None
    """The prefetch's rows when the backend read them with the lock (see `Prefetch`)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Prefetch:
    """A read of the caller's own tables that its decider needs, run under the stream lock: on
    PostgreSQL joined to the lock statement itself (one round trip fewer), elsewhere right after it.
    `statement` must be built once (PostgreSQL compiles each one once, keyed by identity) and take
    its values as bind parameters, given in `params` (names other than `stream_id`)."""

    statement: sa.Select[Any]
    params: Mapping[str, Any]


class _IdTaken(Exception):
    """An event id of the batch is already stored: resolve the retry in a fresh transaction."""


class Guard:
    """Translates driver errors at the backend edge; exceptions raised by caller code (deciders,
    inline projections) pass through unchanged."""

    def __init__(self, translate: Callable[[BaseException], EventStoreError | None]) -> None:
        self._translate = translate
        self._foreign: set[int] = set()

    async def user(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except BaseException as exc:
            self._foreign.add(id(exc))
            raise

    def __enter__(self) -> Guard:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or id(exc) in self._foreign or isinstance(exc, EventStoreError):
            return
        mapped = self._translate(exc)
        if mapped is not None:
            raise mapped from exc


def translate_common(exc: BaseException) -> EventStoreError | None:
    """Connectivity failures any driver can raise; other DBAPI errors become a plain EventStoreError."""
    if isinstance(exc, sa_exc.TimeoutError | OSError | TimeoutError):
        return StoreUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return StoreUnavailable(f"database connection lost: {exc.orig}")
        return EventStoreError(f"database error: {exc.orig}")
    return None


def row_to_event(row: Sequence[Any]) -> RecordedEvent:
    """A stored row of `select(events, ...)` (a SQLAlchemy row or an asyncpg record: the columns in
    table order come first), raw (not upcast). SQLite hands back naive datetimes: they are UTC."""
    position, event_id, stream_id, version, partition, type_, schema, data, meta, at, prev, digest = row[:12]
    return RecordedEvent(
        event_id,
        stream_id,
        version,
        position,
        partition,
        type_,
        schema,
        data,
        meta,
        at if at.tzinfo else at.replace(tzinfo=UTC),
        prev,
        digest,
    )


class SqlEventStore(EventStore):
    """The append skeleton and the reads over SQLAlchemy Core; subclasses lock streams, number
    positions, write rows and bound `read_all`. Built on an `AsyncEngine` it does not own unless
    `owns_engine` (then `close()` disposes it)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        upcasters: UpcasterRegistry | None = None,
        inline_projections: Sequence[InlineProjection] = (),
        owns_engine: bool = False,
    ) -> None:
        super().__init__(upcasters=upcasters, inline_projections=inline_projections)
        self.engine = engine
        self._owns_engine = owns_engine

    # -- backend hooks -------------------------------------------------------------------------

    @abc.abstractmethod
    def _writing(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection inside a write transaction: committed on normal exit."""

    @abc.abstractmethod
    async def _lock_stream(
        self, conn: AsyncConnection, stream_id: str, partition: str, prefetch: Prefetch | None = None
    ) -> StreamHead: ...

    @abc.abstractmethod
    def _positions(self, head: StreamHead, count: int) -> Sequence[int]: ...

    @abc.abstractmethod
    async def _write(
        self,
        conn: AsyncConnection,
        head: StreamHead,
        recorded: Sequence[RecordedEvent],
        fragments: Sequence[WriteFragment] = (),
    ) -> None:
        """Insert the events and move the stream row to the last version (running `fragments` in
        the same statement: only backends whose `_fragments` returns any)."""

    def _fragments(
        self, published: Sequence[RecordedEvent]
    ) -> tuple[list[WriteFragment], list[InlineProjection]]:
        """The inline projections' write fragments, and the projections to `apply` instead."""
        return [], list(self.inline_projections)

    def _translate(self, exc: BaseException) -> EventStoreError | None:
        return translate_common(exc)

    def _after_commit(self) -> None:
        """Called after every committed append."""

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    def _guard(self) -> Guard:
        return Guard(self._translate)

    def translated(self) -> Guard:
        """A context in which driver errors from work on this store's engine (migrations, say) are
        raised as this store's errors."""
        return self._guard()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection on this store's engine to read the caller's own tables (read models), with
        driver errors translated like the store's own (`StoreUnavailable` when the database is gone).
        For reads only: on PostgreSQL each statement commits on its own; write through `transaction()`."""
        with self._guard():
            async with self._reading() as conn:
                yield conn

    def reader(self) -> AbstractAsyncContextManager[AsyncConnection | DriverConnection]:
        """Like `connect()`, for reads that only run `driver_statement`s through `driver_fetch` (as
        `projections.queries.fetch` does): on PostgreSQL a cheaper `DriverConnection`."""
        return self.connect()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction for the caller's own tables, serialised with appends where the backend
        needs it (SQLite), with driver errors translated."""
        with self._guard():
            async with self._writing() as conn:
                yield conn

    # -- append ----------------------------------------------------------------------------------

    async def append_with(
        self,
        stream_id: str,
        decide: Decider,
        expected_version: Expected = ANY,
        *,
        partition: str | None = None,
        prefetch: Prefetch | None = None,
        optimistic: bool = True,
        hint: StreamHint | None = None,
    ) -> AppendResult:
        guard = self._guard()
        with guard:
            try:
                result = await self._append(
                    guard, stream_id, decide, expected_version, partition, prefetch, optimistic, hint
                )
            except _IdTaken as taken:
                new: Sequence[NewEvent] = taken.args[0]
                async with self._reading() as conn:
                    stored = await self._raw_by_ids(conn, [e.event_id for e in new])
                return self._replay(stream_id, new, stored)
        if result.events and not result.replayed:
            self._after_commit()
            self._appended(result)
        return result

    async def _append(
        self,
        guard: Guard,
        stream_id: str,
        decide: Decider,
        expected: Expected,
        partition: str | None,
        prefetch: Prefetch | None,
        optimistic: bool = False,
        hint: StreamHint | None = None,
    ) -> AppendResult:
        async with self._writing() as conn:
            head = await self._lock_stream(conn, stream_id, partition or "", prefetch)
            part = resolve_partition(stream_id, partition, head.partition)
            info = StreamInfo(stream_id, part, head.version) if head.version else None
            prefetched = head.prefetched
            if prefetch is not None and prefetched is None:
                prefetched = (await conn.execute(prefetch.statement, prefetch.params)).mappings().all()
            context = DecideContext(info, conn, prefetched)
            if not version_matches(expected, head.version):
                new = await guard.user(events_for_replay(decide, context))
                replay = await self._replayed(conn, stream_id, new) if new else None
                await conn.rollback()
                if replay is None:
                    raise WrongExpectedVersion(stream_id, expected, head.version)
                return replay
            new = list(await guard.user(decide(context)))
            if not new:
                await conn.rollback()
                return AppendResult(stream_id, (), head.version)
            check_batch_size(len(new))
            recorded = record_events(
                new,
                stream_id=stream_id,
                partition=part,
                version=head.version,
                prev_hash=head.last_hash or GENESIS_HASH,
                positions=self._positions(head, len(new)),
                recorded_at=utc_now(),
            )
            published = [upcast(self.upcasters, e) for e in recorded]
            fragments, rest = self._fragments(published)
            await self._write_or_classify(conn, stream_id, head, new, recorded, fragments)
            for projection in rest:
                await guard.user(projection.apply(conn, published))
        return AppendResult(stream_id, tuple(published), recorded[-1].stream_version)

    async def _write_or_classify(
        self,
        conn: AsyncConnection,
        stream_id: str,
        head: StreamHead,
        new: Sequence[NewEvent],
        recorded: Sequence[RecordedEvent],
        fragments: Sequence[WriteFragment] = (),
    ) -> None:
        try:
            await self._write(conn, head, recorded, fragments)
        except sa_exc.IntegrityError as exc:
            classify_integrity_error(exc, stream_id, head.version, new)

    async def _replayed(
        self, conn: AsyncConnection, stream_id: str, new: Sequence[NewEvent]
    ) -> AppendResult | None:
        """The original result when every id of `new` is stored (DuplicateEvent when the content
        differs); None when some id is not stored (a plain version conflict)."""
        stored = await self._raw_by_ids(conn, [e.event_id for e in new])
        return self._replay(stream_id, new, stored) if len(stored) == len({e.event_id for e in new}) else None

    def _replay(
        self, stream_id: str, new: Sequence[NewEvent], stored: Sequence[RecordedEvent]
    ) -> AppendResult:
        result = replayed_result(stream_id, new, {e.event_id: e for e in stored})
        return dataclasses.replace(result, events=tuple(upcast(self.upcasters, e) for e in result.events))

    # -- reads -----------------------------------------------------------------------------------

    async def _raw_by_ids(self, conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> list[RecordedEvent]:
        query = sa.select(events).where(events.c.event_id.in_(ids)).order_by(events.c.global_position)
        return [row_to_event(row) for row in await conn.execute(query)]

    def _out(self, rows: Sequence[Sequence[Any]]) -> list[RecordedEvent]:
        return [upcast(self.upcasters, row_to_event(row)) for row in rows]

    async def read_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        query = sa.select(events).where(
            events.c.stream_id == stream_id, events.c.stream_version > after_version
        )
        if to_version is not None:
            query = query.where(events.c.stream_version <= to_version)
        query = query.order_by(events.c.stream_version).limit(limit)
        with self._guard():
            async with self._reading() as conn:
                return self._out((await conn.execute(query)).all())

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        query = sa.select(streams.c.partition, streams.c.version).where(streams.c.stream_id == stream_id)
        with self._guard():
            async with self._reading() as conn:
                row = (await conn.execute(query)).first()
        return StreamInfo(stream_id, row.partition, row.version) if row and row.version else None

    async def get_events(self, event_ids: Sequence[Any]) -> list[RecordedEvent]:
        ids = [uuid.UUID(str(i)) for i in event_ids]
        with self._guard():
            async with self._reading() as conn:
                raw = await self._raw_by_ids(conn, ids)
        return [upcast(self.upcasters, e) for e in raw]

    # -- verify ----------------------------------------------------------------------------------

    async def verify(
        self, stream_id: str | None = None, *, progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        verifier = ChainVerifier(single_stream=stream_id is not None)
        with self._guard():
            async with self._reading() as conn:
                if stream_id is not None:
                    info = await conn.execute(
                        sa.select(streams.c.version).where(streams.c.stream_id == stream_id)
                    )
                    verifier.start(stream_id, info.scalar() or 0)
                last: tuple[str, int] | None = None
                while not verifier.done:
                    rows = (await conn.execute(_verify_batch(stream_id, last))).all()
                    for row in rows:
                        verifier.feed(row_to_event(row), row.head)
                    if progress is not None:
                        progress(verifier.events_checked)
                    if len(rows) < VERIFY_BATCH:
                        break
                    last = (rows[-1].stream_id, rows[-1].stream_version)
        return verifier.result()

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()


def _verify_batch(stream_id: str | None, last: tuple[str, int] | None) -> sa.Select[Any]:
    query = sa.select(events, streams.c.version.label("head")).join(
        streams, streams.c.stream_id == events.c.stream_id
    )
    if stream_id is not None:
        query = query.where(events.c.stream_id == stream_id)
    if last is not None:
        query = query.where(
            sa.tuple_(events.c.stream_id, events.c.stream_version)
            > sa.tuple_(sa.literal(last[0]), sa.literal(last[1]))
        )
    return query.order_by(events.c.stream_id, events.c.stream_version).limit(VERIFY_BATCH)


def classify_integrity_error(
    exc: sa_exc.IntegrityError, stream_id: str, version: int, new: Sequence[NewEvent]
) -> NoReturn:
    """What an integrity error of an append's insert means."""
    table = getattr(getattr(exc.orig, "__cause__", None), "table_name", None)
    if table is not None and table not in (events.name, streams.name):
        raise exc  # a write fragment's own table: the projection's error, not a conflict
    text = f"{exc.orig} {getattr(exc.orig, '__cause__', '')}"
    if "event_id" in text:
        raise _IdTaken(new) from exc
    # Only a writer outside this process's locks can take our versions or positions.
    raise WrongExpectedVersion(stream_id, version, -1) from exc
