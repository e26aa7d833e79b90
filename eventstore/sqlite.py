"""The SQLite backend (aiosqlite), the embedded default.

SQLite has one writer at a time. A deferred transaction that reads and then writes can fail at once
with SQLITE_BUSY (busy_timeout does not help when its snapshot is stale), so write transactions start
with `BEGIN IMMEDIATE`: they take the write lock up front and wait for it through `busy_timeout`.
pysqlite's own transaction handling cannot do that, so it is switched off and the `begin` event emits
BEGIN itself (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL"). In-process
writers also queue on an `asyncio.Lock`, fairer and cheaper than polling the file lock. Because writers
are serialised, the next position is simply max(position) + 1 and commits happen in position order.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .base import InlineProjection, WriteFragment
from .errors import EventStoreError, StoreUnavailable
from .model import RecordedEvent
from .recording import CommitSignal, follow
from .schema import events, streams
from .sql import Prefetch, SqlEventStore, StreamHead, translate_common
from .upcasting import UpcasterRegistry

BEGIN_OPTION = "chatledger_sqlite_begin"
"""Execution option naming the BEGIN mode of a connection's transactions, e.g.
`engine.execution_options(chatledger_sqlite_begin="IMMEDIATE")` for one that will write."""

# Long enough for a writer to wait out an operator's rebuild or dry run in another process (its
# comparison holds the write lock for seconds on a large log) rather than fail with 503.
BUSY_TIMEOUT_MS = 30_000
_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly")
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # busy_timeout first, so it (not sqlite3's default of 5 s) bounds every wait below.
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # WAL is a property of the file, set once. Asking for it again while another connection writes
    # can fail at once with "database is locked" (no busy wait), so only a file not yet in WAL is switched.
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() != "wal":
        cursor.execute("PRAGMA journal_mode=WAL")
    for pragma in ("foreign_keys=ON", "synchronous=NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_begin(conn: sa.Connection) -> None:
    mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def configure_sqlite_engine(engine: AsyncEngine) -> None:
    """Install WAL, busy_timeout, foreign keys and explicit BEGIN on `engine` (idempotent)."""
    sync_engine = engine.sync_engine
    if not event.contains(sync_engine, "connect", _on_connect):
        event.listen(sync_engine, "connect", _on_connect)
        event.listen(sync_engine, "begin", _on_begin)


def is_memory_database(engine: AsyncEngine) -> bool:
    database = engine.url.database or ""
    return (
        database in ("", ":memory:") or "mode=memory" in database or engine.url.query.get("mode") == "memory"
    )


class SqliteEventStore(SqlEventStore):
    """Event store on SQLite. Writers are serialised (in process by a lock, across processes by
    `BEGIN IMMEDIATE`); subscribers are woken in process after each commit and poll every second
    for writers in other processes. A `:memory:` database has one shared connection, so every
    operation of this store takes the lock."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        upcasters: UpcasterRegistry | None = None,
        inline_projections: Sequence[InlineProjection] = (),
        owns_engine: bool = False,
    ) -> None:
        super().__init__(
            engine, upcasters=upcasters, inline_projections=inline_projections, owns_engine=owns_engine
        )
        configure_sqlite_engine(engine)
        self._write_engine = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._lock = _WRITE_LOCKS.setdefault(engine.sync_engine, asyncio.Lock())
        self._memory = is_memory_database(engine)
        self._signal = CommitSignal()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        async with self._lock, self._write_engine.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        shared: AbstractAsyncContextManager[Any] = self._lock if self._memory else nullcontext()
        async with shared, self.engine.connect() as conn:
            yield conn

    async def _lock_stream(
        self, conn: AsyncConnection, stream_id: str, partition: str, prefetch: Prefetch | None = None
    ) -> StreamHead:
        last_hash = (
            sa.select(events.c.hash)
            .where(events.c.stream_id == stream_id, events.c.stream_version == streams.c.version)
            .scalar_subquery()
        )
        top = sa.select(sa.func.coalesce(sa.func.max(events.c.global_position), 0)).scalar_subquery()
        query = sa.select(
            streams.c.version, streams.c.partition, last_hash.label("last_hash"), top.label("top")
        ).where(streams.c.stream_id == stream_id)
        row = (await conn.execute(query)).first()
        if row is None or not row.version:
            max_position = row.top if row else (await conn.execute(sa.select(top))).scalar_one()
            return StreamHead(0, None, None, max_position=max_position)
        return StreamHead(row.version, row.partition, row.last_hash, max_position=row.top)

    def _positions(self, head: StreamHead, count: int) -> Sequence[int]:
        return range(head.max_position + 1, head.max_position + 1 + count)

    async def _write(
        self,
        conn: AsyncConnection,
        head: StreamHead,
        recorded: Sequence[RecordedEvent],
        fragments: Sequence[WriteFragment] = (),
    ) -> None:
        first, last = recorded[0], recorded[-1]
        await conn.execute(events.insert(), [_row(e) for e in recorded])
        upsert = sqlite_insert(streams).values(
            stream_id=last.stream_id,
            partition=last.partition,
            version=last.stream_version,
            created_at=first.recorded_at,
            updated_at=last.recorded_at,
        )
        await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[streams.c.stream_id],
                set_={"version": upsert.excluded.version, "updated_at": upsert.excluded.updated_at},
            )
        )

    def _after_commit(self) -> None:
        self._signal.notify()

    def _translate(self, exc: BaseException) -> EventStoreError | None:
        if isinstance(exc, sa_exc.OperationalError) and any(s in str(exc.orig).lower() for s in _UNAVAILABLE):
            return StoreUnavailable(f"database unavailable: {exc.orig}")
        return translate_common(exc)

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        query = (
            sa.select(events)
            .where(events.c.global_position > after)
            .order_by(events.c.global_position)
            .limit(limit)
        )
        with self._guard():
            async with self._reading() as conn:
                return self._out((await conn.execute(query)).all())

    async def head_position(self) -> int:
        query = sa.select(sa.func.coalesce(sa.func.max(events.c.global_position), 0))
        with self._guard():
            async with self._reading() as conn:
                return int((await conn.execute(query)).scalar_one())

    async def subscribe(self, *, after: int = 0) -> AsyncIterator[RecordedEvent]:
        async def read(checkpoint: int, limit: int) -> list[RecordedEvent]:
            return await self.read_all(after=checkpoint, limit=limit)

        async for recorded in follow(read, self._signal.waiter, after=after):
            yield recorded


def _row(event: RecordedEvent) -> dict[str, Any]:
    return {
        "global_position": event.global_position,
        "event_id": event.event_id,
        "stream_id": event.stream_id,
        "stream_version": event.stream_version,
        "partition": event.partition,
        "type": event.type,
        "schema_version": event.schema_version,
        "data": event.data,
        "metadata": event.metadata,
        "recorded_at": event.recorded_at,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "tx_id": None,
    }
