"""The PostgreSQL backend (asyncpg through SQLAlchemy's async engine).

Why positions are not a sequence: transactions commit in any order. If A takes position 10 and B
position 11, B may commit first; a reader that saw 11 and saved it as its checkpoint would never see
10 when A commits. A global table lock would fix it by serialising every writer; instead we order by
transaction id and read only below a watermark:

- every row stores `tx_id = pg_current_xact_id()` of its writing transaction, and its position is
  `tx_id * 65536 + index within the transaction` (so at most 65536 events per append);
- `read_all` returns only rows with `tx_id < pg_snapshot_xmin(pg_current_snapshot())`. Every
  transaction below the snapshot's xmin has finished (committed rows are visible, aborted ones never
  will be), and any transaction still running or not yet started has an xid >= xmin, so all its
  positions are >= xmin * 65536, above everything returned. A checkpoint can therefore never be
  overtaken by a late commit, and xmin never moves backwards. (Refinement: xids are cluster-wide, so
  running transactions that pg_stat_activity places in another database are left out of the xmin;
  they cannot write our table.)
- The price: a long transaction holding an xid in this database holds back the watermark, delaying
  readers, never losing events. Appends hold their xid only while they run.

Appends serialise per stream on a transaction-level advisory lock keyed by the stream id (taken
before the transaction has an xid, so xids, hence positions, follow version order within a stream),
never globally. A locked append to an existing stream costs BEGIN, one statement that takes the lock
and reads the head (last hash, xid, and the caller's prefetch), one that inserts the events, moves the
stream, runs the inline projections' write fragments and NOTIFYs, and COMMIT. A single event with ANY
is first tried optimistically: one read, the decision, and one autocommit statement that does all of
that under the same advisory lock if the stream has not moved (`_append`); with the caller's
`StreamHint` the read is skipped too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from enum import Enum
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from .base import Decider, InlineProjection, WriteFragment
from .driver import DriverConnection, DriverStatement, driver_fetch, driver_statement
from .errors import EventStoreError, StoreUnavailable
from .hashing import canonical_json
from .model import ANY, AppendResult, Expected, RecordedEvent, StreamHint, StreamInfo
from .recording import (
    CommitSignal,
    DecideContext,
    envelope_of,
    follow,
    resolve_partition,
    upcast,
    utc_now,
)
from .schema import events, streams
from .sql import Guard, Prefetch, SqlEventStore, StreamHead, classify_integrity_error, translate_common

CHANNEL = "chatledger_events"
TX_SLOTS = 65536

_XID: sa.ColumnElement[int] = sa.literal_column("pg_current_xact_id()::text::bigint")
# pg_snapshot_xmin(pg_current_snapshot()), ignoring transactions that pg_stat_activity shows running in
# another database: xids are cluster-wide, but only this database's transactions can write our events.
# A transaction not (or no longer) listed there still counts, so the bound stays safe; listing it
# merely stops an idle transaction elsewhere on the server from stalling every reader here.
_WATERMARK: sa.ColumnElement[int] = sa.literal_column(
    """(SELECT least(pg_snapshot_xmax(s)::text::bigint,
                    (SELECT min(x::text::bigint) FROM pg_snapshot_xip(s) AS x
                     WHERE mod(x::text::bigint, 4294967296) NOT IN (
                         SELECT backend_xid::text::bigint FROM pg_stat_activity
                         WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())))
        FROM pg_current_snapshot() AS s)"""
)
# Connection exceptions (class 08), operator intervention (57P01-57P05), too many connections,
# query canceled (statement_timeout) and lock_not_available (lock_timeout): retrying later may work.
# Shutdown, too many connections, cancelled, lock timeout; and the database or role missing, or the
# password refused: nothing a client sent, and nothing a retry against the same server cannot outlive.
_UNAVAILABLE_STATES = (
    "57P01",
    "57P02",
    "57P03",
    "57P04",
    "57P05",
    "53300",
    "57014",
    "55P03",
    "3D000",
    "28000",
    "28P01",
)
_DRIVER_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)

_STREAM_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(CAST(:stream_id AS text), 0))")

_LAST_HASH = (
    sa.select(events.c.hash)
    .where(events.c.stream_id == streams.c.stream_id, events.c.stream_version == streams.c.version)
    .scalar_subquery()
)
_LOCKED = (
    sa.select(streams.c.version, streams.c.partition, _LAST_HASH.label("last_hash"), _XID.label("xid"))
    .where(streams.c.stream_id == sa.bindparam("stream_id"))
    .with_for_update(of=streams)
)


# The lock and the read in one round trip. The xid comes from the output row (and its row lock),
# which the join can only produce after the materialized lock row exists, so it is still assigned
# inside the lock. When the stream row is missing the lock may not have been taken: the caller then
# takes it on its own (advisory locks are re-entrant) before creating the row.
def _lock_and_read(prefetch: sa.Select[Any] | None = None, *, locked: bool = True) -> DriverStatement:
    """`locked=False`: the same read without lock or xid, for the optimistic append."""
    head: list[sa.ColumnElement[Any]] = [
        streams.c.version,
        streams.c.partition,
        _LAST_HASH.label("last_hash"),
    ]
    source: sa.FromClause = streams
    if locked:
        lock = (
            sa.select(
                sa.func.pg_advisory_xact_lock(
                    sa.func.hashtextextended(sa.cast(sa.bindparam("stream_id"), sa.Text), 0)
                ).label("locked")
            )
            .cte("stream_lock")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        head.append(_XID.label("xid"))
        source = lock.join(streams, sa.true())
    if prefetch is not None:
        # The caller's rows ride along, prefixed; `p__found` tells "no row" from a row of NULLs.
        rows = prefetch.add_columns(sa.literal_column("1").label("_found")).subquery("prefetch")
        head += [c.label(f"p_{c.name}") for c in rows.c]
        source = source.outerjoin(rows, sa.true())
    stmt = sa.select(*head).select_from(source).where(streams.c.stream_id == sa.bindparam("stream_id"))
    return driver_statement(stmt.with_for_update(of=streams) if locked else stmt)


_WITH_PREFETCH: dict[tuple[bool, int], tuple[sa.Select[Any], DriverStatement]] = {}


def _read_with(prefetch: sa.Select[Any], *, locked: bool) -> DriverStatement:
    key = (locked, id(prefetch))
    cached = _WITH_PREFETCH.get(key)
    if cached is None or cached[0] is not prefetch:
        # Holding the statement keeps its id from being reused.
        cached = _WITH_PREFETCH[key] = (prefetch, _lock_and_read(prefetch, locked=locked))
    return cached[1]


_CREATE = (
    pg_insert(streams)
    .values(
        stream_id=sa.bindparam("stream_id"),
        partition=sa.bindparam("partition"),
        version=0,
        created_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
    )
    .on_conflict_do_nothing(index_elements=[streams.c.stream_id])
    .returning(_XID.label("xid"))
)

# The store's names start with `es_`, so inline projections' write fragments can join in.
_WRITE = """
    WITH es_ev AS (
        INSERT INTO events (global_position, event_id, stream_id, stream_version, partition, type,
                            schema_version, data, metadata, recorded_at, prev_hash, hash, tx_id)
        SELECT u.position, u.event_id, CAST(:es_stream_id AS text), u.version, CAST(:es_partition AS text),
               u.type, u.schema_version, CAST(u.data AS json), CAST(u.metadata AS json),
               u.recorded_at, u.prev_hash, u.hash, CAST(:es_tx_id AS bigint)
        FROM unnest(CAST(:es_positions AS bigint[]), CAST(:es_event_ids AS uuid[]),
                    CAST(:es_versions AS bigint[]), CAST(:es_types AS text[]),
                    CAST(:es_schema_versions AS int[]), CAST(:es_datas AS text[]),
                    CAST(:es_metadatas AS text[]), CAST(:es_recorded_ats AS timestamptz[]),
                    CAST(:es_prev_hashes AS text[]), CAST(:es_hashes AS text[]))
             AS u(position, event_id, version, type, schema_version, data, metadata, recorded_at,
                  prev_hash, hash)
        RETURNING global_position
    ), es_st AS (
        UPDATE streams SET version = CAST(:es_version AS bigint), partition = CAST(:es_partition AS text),
                           updated_at = CAST(:es_recorded_at AS timestamptz)
        WHERE stream_id = CAST(:es_stream_id AS text)
    ){fragments}
    SELECT pg_notify(:es_channel, CAST(:es_last_position AS text))
"""
_SPLICED: dict[tuple[str, tuple[str, ...]], DriverStatement] = {}


def _spliced(template: str, fragments: Sequence[WriteFragment]) -> DriverStatement:
    """`template` (`_WRITE` or `_OPTIMISTIC`) with the fragments' CTEs in place, compiled once."""
    key = (template, tuple(f.ctes for f in fragments))
    found = _SPLICED.get(key)
    if found is None:
        text = template.replace("{fragments}", "".join(f",\n{ctes}" for ctes in key[1]))
        found = _SPLICED[key] = driver_statement(sa.text(text))
    return found


# The optimistic append (see `PostgresEventStore._append`): one autocommit statement that takes the
# stream's advisory lock, moves the stream only if it is still at the version the decision was made
# on and its last event still has the hash the new one chains to (`es_st` returns no row otherwise,
# and nothing else writes), and inserts the one event. The hash check makes a caller's `StreamHint`
# safe: it can be stale (another process wrote) but never chain onto the wrong event. Its
# position comes from the xid, assigned by the stream UPDATE inside the lock, so its hash is computed
# here: the client sends the canonical JSON of the envelope split around the position.
_OPTIMISTIC = """
    WITH es_lock AS MATERIALIZED (
        SELECT pg_advisory_xact_lock(hashtextextended(CAST(:es_stream_id AS text), 0)) AS locked
    ), es_st AS (
        UPDATE streams AS s SET version = s.version + 1, updated_at = CAST(:es_recorded_at AS timestamptz)
        FROM es_lock
        WHERE s.stream_id = CAST(:es_stream_id AS text) AND s.version = CAST(:es_expected AS bigint)
          AND EXISTS (SELECT FROM events AS e
                      WHERE e.stream_id = CAST(:es_stream_id AS text)
                        AND e.stream_version = CAST(:es_expected AS bigint)
                        AND e.hash = CAST(:es_prev_hash AS text))
        RETURNING s.version, pg_current_xact_id()::text::bigint AS xid
    ), es_ev AS (
        INSERT INTO events (global_position, event_id, stream_id, stream_version, partition, type,
                            schema_version, data, metadata, recorded_at, prev_hash, hash, tx_id)
        SELECT st.xid * 65536, CAST(:es_event_id AS uuid), CAST(:es_stream_id AS text), st.version,
               CAST(:es_partition AS text), CAST(:es_type AS text), CAST(:es_schema_version AS int),
               CAST(:es_data AS json), CAST(:es_metadata AS json), CAST(:es_recorded_at AS timestamptz),
               CAST(:es_prev_hash AS text),
               encode(sha256(convert_to(CAST(:es_prev_hash AS text) || CAST(:es_before AS text)
                                        || CAST(st.xid * 65536 AS text) || CAST(:es_after AS text),
                                        'UTF8')), 'hex'),
               st.xid
        FROM es_st AS st
        RETURNING global_position, hash
    ){fragments}
    SELECT e.global_position, e.hash, pg_notify(CAST(:es_channel AS text), CAST(e.global_position AS text))
    FROM es_ev AS e
"""
CONTENDED_SECONDS = 1.0
"""How long a stream that moved under an optimistic append is appended to under the lock instead."""
_MARK = -7_777_777_777_777_777
_MARK_TEXT = f'"global_position":{_MARK}'


class _Skip(Enum):
    INELIGIBLE = "the append needs the locked path"
    MOVED = "the stream moved since the decision"


_LOCK_AND_READ_SQL = _lock_and_read()
# Rebuilds and subscriptions read the log through this: asyncpg directly (records in table order).
_READ_ALL_SQL = driver_statement(
    sa.select(events)
    .where(events.c.global_position > sa.bindparam("after"), events.c.tx_id < _WATERMARK)
    .order_by(events.c.global_position)
    .limit(sa.bindparam("limit"))
)
_READ_HEAD_SQL = _lock_and_read(locked=False)


async def _last_hash(conn: AsyncConnection, stream_id: str, version: int) -> str:
    # After waiting for the row lock, READ COMMITTED hands back the newest stream row but evaluates
    # the hash subquery in the statement's older snapshot, which misses the events just committed by
    # the writer we waited for. Only then (the subquery came back empty) do we look again.
    query = sa.select(events.c.hash).where(
        events.c.stream_id == stream_id, events.c.stream_version == version
    )
    return str((await conn.execute(query)).scalar_one())


def _unprefixed(row: asyncpg.Record) -> dict[str, Any]:
    return {key[2:]: value for key, value in row.items() if key.startswith("p_") and key != "p__found"}


class PostgresEventStore(SqlEventStore):
    """Event store on PostgreSQL: per-stream row locks, transaction-id positions read below the
    xmin watermark, and LISTEN/NOTIFY for live subscriptions."""

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        # Autocommit: a read is then one round trip instead of three (BEGIN, the query, and the
        # ROLLBACK of the pool's reset). It loses nothing: under READ COMMITTED every statement takes
        # its own snapshot even inside a transaction, so a multi-statement read was never one snapshot.
        async with self._autocommit.connect() as conn:
            yield conn

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[DriverConnection]:
        fairy = await self.engine.raw_connection()
        try:
            yield DriverConnection(self.engine.dialect, fairy)
        finally:
            # Returning it may close it (an overflow connection), which awaits inside the adapter.
            await greenlet_spawn(fairy.close)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[DriverConnection]:
        with self._guard():
            async with self._driver() as conn:
                yield conn

    @functools.cached_property
    def _autocommit(self) -> AsyncEngine:
        # Same pool; the isolation level is set on checkout and reset on return (no round trip).
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _lock_stream(
        self, conn: AsyncConnection, stream_id: str, partition: str, prefetch: Prefetch | None = None
    ) -> StreamHead:
        # Positions must follow version order inside a stream, so the transaction id (our position
        # base) has to be assigned only once we hold the stream. A row lock is too late: waiting for
        # `FOR UPDATE` already assigns an xid, letting a later writer hold an older one. The advisory
        # lock takes no xid; every writer of this stream gets its xid inside it, in lock order.
        # The stream row usually exists: lock and read it (and the prefetch) in one round trip.
        if prefetch is None:
            rows = await driver_fetch(conn, _LOCK_AND_READ_SQL, {"stream_id": stream_id})
        else:
            params = {**prefetch.params, "stream_id": stream_id}
            rows = await driver_fetch(conn, _read_with(prefetch.statement, locked=True), params)
        if rows:
            version, part, last_hash, xid = rows[0][:4]
            if not version:
                return StreamHead(0, None, None, tx_id=xid)
            if not last_hash:
                return StreamHead(version, part, await _last_hash(conn, stream_id, version), xid)
            # The statement's snapshot saw this stream's last event, hence everything its writers
            # wrote with it: the prefetched rows are current (otherwise they are read again).
            prefetched = None if prefetch is None else [_unprefixed(r) for r in rows if r["p__found"]]
            return StreamHead(version, part, last_hash, xid, prefetched=prefetched)
        await conn.execute(_STREAM_LOCK, {"stream_id": stream_id})
        while True:
            row = (await conn.execute(_LOCKED, {"stream_id": stream_id})).first()
            if row is not None:
                if not row.version:
                    return StreamHead(0, None, None, tx_id=row.xid)
                return StreamHead(
                    row.version,
                    row.partition,
                    row.last_hash or await _last_hash(conn, stream_id, row.version),
                    row.xid,
                )
            params = {"stream_id": stream_id, "partition": partition, "now": utc_now()}
            created = (await conn.execute(_CREATE, params)).first()
            if created is not None:
                return StreamHead(0, None, None, tx_id=created.xid)

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
        # An append of one event to an existing stream, with ANY, whose inline projections all offer
        # write fragments (every `add_messages` of one message) is decided without the lock and written
        # by one autocommit statement: 2 round trips instead of 4, and the stream is locked for one
        # statement only. It writes only if the stream has not moved since the decision; otherwise it
        # takes the locked path like every other append (and keeps to it for a while: `_is_contended`).
        # With the caller's `hint` the read is skipped too: 1 round trip. A stale hint is no sign of
        # contention (another process wrote since), so it is followed by an ordinary optimistic try.
        if optimistic and expected is ANY and not self._is_contended(stream_id):
            outcome: AppendResult | _Skip = _Skip.MOVED
            if hint is not None and hint.version > 0:
                outcome = await self._append_optimistic(guard, stream_id, decide, partition, prefetch, hint)
            if outcome is _Skip.MOVED:
                outcome = await self._append_optimistic(guard, stream_id, decide, partition, prefetch)
            if outcome is _Skip.MOVED:
                if len(self._contended) >= 4096:
                    self._contended.clear()  # a bound, not an LRU: losing the hints only costs a retry
                self._contended[stream_id] = time.monotonic()
            elif outcome is not _Skip.INELIGIBLE:
                return outcome
        return await super()._append(
            guard, stream_id, decide, expected, partition, prefetch, optimistic, hint
        )

    def _is_contended(self, stream_id: str) -> bool:
        """A stream that moved under an optimistic append in the last CONTENDED_SECONDS takes the lock
        first: on a hot stream optimism only wastes a read and a decision per append."""
        seen = self._contended.get(stream_id)
        if seen is None:
            return False
        if time.monotonic() - seen < CONTENDED_SECONDS:
            return True
        del self._contended[stream_id]
        return False

    @functools.cached_property
    def _contended(self) -> dict[str, float]:
        return {}

    async def _append_optimistic(
        self,
        guard: Guard,
        stream_id: str,
        decide: Decider,
        partition: str | None,
        prefetch: Prefetch | None,
        hint: StreamHint | None = None,
    ) -> AppendResult | _Skip:
        async with self._driver() as conn:
            prefetched: Sequence[Any] | None
            if hint is not None:
                version, stored_partition, last_hash = hint.version, hint.partition, hint.last_hash
                prefetched = None if prefetch is None else hint.prefetched
            else:
                if prefetch is None:
                    rows = await driver_fetch(conn, _READ_HEAD_SQL, {"stream_id": stream_id})
                else:
                    params = {**prefetch.params, "stream_id": stream_id}
                    rows = await driver_fetch(conn, _read_with(prefetch.statement, locked=False), params)
                if not rows or not rows[0][0] or not rows[0][2]:
                    return _Skip.INELIGIBLE  # a new stream is created under the lock
                version, stored_partition, last_hash = rows[0][:3]
                # One snapshot: the head, its last hash and the prefetched rows agree with each other.
                prefetched = None if prefetch is None else [_unprefixed(r) for r in rows if r["p__found"]]
            part = resolve_partition(stream_id, partition, stored_partition)
            context = DecideContext(StreamInfo(stream_id, part, version), conn, prefetched)
            try:
                new = list(await guard.user(decide(context)))
            except Exception:
                if hint is None:
                    raise
                # Refused on the remembered head, which another process may have moved (a stale
                # expected version, a tool call opened elsewhere): judged again on a fresh read.
                return _Skip.MOVED
            if not new:
                return AppendResult(stream_id, (), version)
            if len(new) != 1:
                return _Skip.INELIGIBLE
            event = new[0]
            draft = RecordedEvent(
                event_id=event.event_id,
                stream_id=stream_id,
                stream_version=version + 1,
                global_position=_MARK,
                partition=part,
                type=event.type,
                schema_version=event.schema_version,
                data=event.data,
                metadata=event.metadata,
                recorded_at=event.recorded_at or utc_now(),
                prev_hash=last_hash,
                hash="",
            )
            fragments, rest = self._fragments([upcast(self.upcasters, draft)])
            text = canonical_json(envelope_of(draft))
            if rest or text.count(_MARK_TEXT) != 1:
                return _Skip.INELIGIBLE
            before, after = text.split(_MARK_TEXT)
            params = {
                "es_stream_id": stream_id,
                "es_expected": version,
                "es_event_id": event.event_id,
                "es_partition": part,
                "es_type": event.type,
                "es_schema_version": event.schema_version,
                "es_data": json.dumps(event.data, ensure_ascii=False),
                "es_metadata": json.dumps(event.metadata, ensure_ascii=False),
                "es_recorded_at": draft.recorded_at,
                "es_prev_hash": last_hash,
                "es_before": before + '"global_position":',
                "es_after": after,
                "es_channel": CHANNEL,
            }
            for fragment in fragments:
                params.update(fragment.params)
            try:
                written = await driver_fetch(conn, _spliced(_OPTIMISTIC, fragments), params)
            except sa_exc.IntegrityError as exc:
                classify_integrity_error(exc, stream_id, version, new)
        if not written:
            return _Skip.MOVED
        position, digest = written[0][:2]
        recorded = dataclasses.replace(draft, global_position=position, hash=digest)
        return AppendResult(stream_id, (upcast(self.upcasters, recorded),), version + 1)

    def _positions(self, head: StreamHead, count: int) -> Sequence[int]:
        assert head.tx_id is not None
        base = head.tx_id * TX_SLOTS
        return range(base, base + count)

    def _fragments(
        self, published: Sequence[RecordedEvent]
    ) -> tuple[list[WriteFragment], list[InlineProjection]]:
        fragments: list[WriteFragment] = []
        rest: list[InlineProjection] = []
        for projection in self.inline_projections:
            offer = getattr(projection, "write_fragment", None)
            fragment = offer("postgresql", published) if offer is not None else None
            if fragment is None:
                rest.append(projection)
            else:
                fragments.append(fragment)
        return fragments, rest

    async def _write(
        self,
        conn: AsyncConnection,
        head: StreamHead,
        recorded: Sequence[RecordedEvent],
        fragments: Sequence[WriteFragment] = (),
    ) -> None:
        last = recorded[-1]
        params: dict[str, Any] = {
            "es_stream_id": last.stream_id,
            "es_partition": last.partition,
            "es_recorded_at": last.recorded_at,
            "es_tx_id": head.tx_id,
            "es_version": last.stream_version,
            "es_channel": CHANNEL,
            "es_last_position": str(last.global_position),
            "es_positions": [e.global_position for e in recorded],
            "es_event_ids": [e.event_id for e in recorded],
            "es_versions": [e.stream_version for e in recorded],
            "es_types": [e.type for e in recorded],
            "es_schema_versions": [e.schema_version for e in recorded],
            "es_datas": [json.dumps(e.data, ensure_ascii=False) for e in recorded],
            "es_metadatas": [json.dumps(e.metadata, ensure_ascii=False) for e in recorded],
            "es_recorded_ats": [e.recorded_at for e in recorded],
            "es_prev_hashes": [e.prev_hash for e in recorded],
            "es_hashes": [e.hash for e in recorded],
        }
        for fragment in fragments:
            params.update(fragment.params)
        await driver_fetch(conn, _spliced(_WRITE, fragments), params)

    def _translate(self, exc: BaseException) -> EventStoreError | None:
        if isinstance(exc, _DRIVER_UNAVAILABLE) or (
            isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _UNAVAILABLE_STATES
        ):
            return StoreUnavailable(f"database unavailable: {exc}")
        if isinstance(exc, sa_exc.DBAPIError):
            state = str(getattr(exc.orig, "sqlstate", None) or "")
            cause = getattr(exc.orig, "__cause__", None)
            if (
                isinstance(exc, sa_exc.InterfaceError)
                or state.startswith("08")
                or state in _UNAVAILABLE_STATES
                or isinstance(cause, _DRIVER_UNAVAILABLE)
            ):
                return StoreUnavailable(f"database unavailable: {exc.orig}")
        return translate_common(exc)

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        with self._guard():
            async with self._driver() as conn:
                rows = await driver_fetch(conn, _READ_ALL_SQL, {"after": after, "limit": limit})
        return self._out(rows)

    async def head_position(self) -> int:
        query = sa.select(sa.func.coalesce(sa.func.max(events.c.global_position), 0)).where(
            events.c.tx_id < _WATERMARK
        )
        with self._guard():
            async with self._reading() as conn:
                return int((await conn.execute(query)).scalar_one())

    async def subscribe(self, *, after: int = 0) -> AsyncIterator[RecordedEvent]:
        signal = CommitSignal()

        def wake(*_: Any) -> None:
            signal.notify()

        async def read(checkpoint: int, limit: int) -> list[RecordedEvent]:
            return await self.read_all(after=checkpoint, limit=limit)

        # A dedicated connection, outside the pool (a long LISTEN must not starve requests); every
        # read still goes through read_all, so a notification only says "look again" and a lost one
        # only delays.
        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with Guard(self._translate):
            listener: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
            await listener.add_listener(CHANNEL, wake)
        try:
            async for recorded in follow(read, signal.waiter, after=after):
                yield recorded
        finally:
            with contextlib.suppress(Exception):
                await listener.close(timeout=5)
