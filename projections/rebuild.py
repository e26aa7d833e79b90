"""Zero-downtime rebuild of the conversation read models (docs/rebuild.md).

1. Replay: shadow tables (`conversations_rebuild`, ...) are filled from `read_all` in batches, one
   transaction per batch, while writers keep appending and projecting inline into the live tables.
   Streams that start within a batch are folded in memory and inserted in bulk (projections/bulk.py);
   the projector continues the others.
2. Catch up: replay again until the shadow is at the head of the log (the same way).
3. Swap, in ONE transaction that first blocks the inline projector:
   - PostgreSQL: `LOCK TABLE conversations, messages, tool_calls IN ACCESS EXCLUSIVE MODE`. Every
     append projects inline, so once the lock is held every transaction that touched the live tables
     has ended, and every append still running has not touched them and cannot commit before us.
     The committed events are therefore exactly what the live tables reflect. They are read
     WITHOUT the xmin watermark of `read_all`: a blocked append holds an xid below later commits,
     so the watermark would hide events the live tables already contain. Then the live tables are
     dropped and the shadow renamed in (indexes and constraints too). Blocked appends resume on the
     new tables (PostgreSQL re-resolves table names after a lock wait) and project themselves.
   - SQLite: the store's write transaction (`BEGIN IMMEDIATE`, queued with in-process appends)
     serialises us with every writer; the same catch-up and renames run inside it.
A dry run takes a lighter lock (PostgreSQL: SHARE on `conversations`, which blocks inline projection
but not readers), catches up the same way and compares the shadow with the live tables row by row.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatledger.eventstore import EventStore, EventStoreError, RecordedEvent
from chatledger.eventstore.recording import upcast
from chatledger.eventstore.schema import events
from chatledger.eventstore.sql import SqlEventStore, row_to_event

from . import bulk
from .projector import ConversationProjector
from .schema import LIVE, ReadTables, read_tables

SHADOW = "_rebuild"
Phase = Literal["replay", "catch-up", "swap", "compare"]
_LOCK_NOT_AVAILABLE = "55P03"
CATCH_UP_ROUNDS = 10


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """A progress tick: `events_total` is the log's size at the start (grown if writers outpace it)."""

    phase: Phase
    events_done: int
    events_total: int
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        return self.events_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.events_per_s
        return max(self.events_total - self.events_done, 0) / rate if rate > 0 else None


@dataclass(frozen=True, slots=True)
class Difference:
    """A row where the live read model and the rebuilt one disagree. `kind`: `only_live` (the rebuild
    has no such row), `only_rebuilt` (the live table lacks it) or `changed` (`columns` maps each
    differing column to its (live, rebuilt) values)."""

    table: str
    key: tuple[Any, ...]
    kind: Literal["only_live", "only_rebuilt", "changed"]
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    events: int
    duration_s: float
    events_per_s: float
    swapped: bool
    position: int
    """The last global position folded into the tables."""
    differences: list[Difference] = field(default_factory=list)
    """Dry run only: the first `max_differences` differing rows."""
    differences_total: int = 0


class _Meter:
    def __init__(self, total: int, progress: Callable[[RebuildProgress], None] | None) -> None:
        self.total, self.done, self.phase = total, 0, "replay"
        self._progress = progress
        self._start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def tick(self, phase: Phase, events: int = 0) -> None:
        self.phase, self.done = phase, self.done + events
        self.total = max(self.total, self.done)
        if self._progress is not None:
            self._progress(RebuildProgress(phase, self.done, self.total, self.elapsed))


async def rebuild(
    engine: AsyncEngine,
    store: EventStore,
    *,
    batch_size: int = 2000,
    dry_run: bool = False,
    progress: Callable[[RebuildProgress], None] | None = None,
    max_differences: int = 100,
    lock_timeout_s: float = 5.0,
    lock_attempts: int = 5,
) -> RebuildReport:
    """Replay the whole log into shadow tables and swap them in atomically (or, `dry_run`, compare
    them with the live tables and drop them). `engine` is the store's engine; writers may keep
    writing throughout, and on PostgreSQL they only wait while the swap holds its lock (at most
    `lock_timeout_s` per attempt; a timed-out attempt catches up again and retries)."""
    if not isinstance(store, SqlEventStore) or store.engine.url != engine.url:
        raise TypeError("rebuild needs the SQL event store built on `engine`")
    shadow = read_tables(SHADOW, sa.MetaData())
    projector = ConversationProjector(shadow)
    meter = _Meter(await _count_events(store), progress)
    swapped = False
    await _create_shadow(store, shadow)
    try:
        position = await _replay(store, projector, 0, batch_size, meter, "replay")
        await _create_shadow_indexes(store, shadow)
        position = await _catch_up(store, projector, position, batch_size, meter)
        if dry_run:
            position, diffs, total = await _compare_locked(
                store, projector, position, batch_size, meter, max_differences
            )
        else:
            position = await _swap_with_retries(
                store, projector, position, batch_size, meter, lock_timeout_s, lock_attempts
            )
            swapped, diffs, total = True, [], 0
    finally:
        if not swapped:
            await _drop_tables(store, shadow.all())
    duration = meter.elapsed
    rate = meter.done / duration if duration > 0 else 0.0
    return RebuildReport(meter.done, duration, rate, swapped, position, diffs, total)


# -- phases ------------------------------------------------------------------------------------------


def _writing(store: SqlEventStore) -> AbstractAsyncContextManager[AsyncConnection]:
    # The store's write transaction: on SQLite it queues with in-process appends and starts with
    # BEGIN IMMEDIATE (a deferred transaction that later writes can fail at once with SQLITE_BUSY).
    return store.transaction()


async def _count_events(store: SqlEventStore) -> int:
    async with store.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one())


def _by_stream(batch: Sequence[RecordedEvent]) -> list[RecordedEvent]:
    """Streams are independent in the read models: a stable sort by stream lets the projector handle
    each stream's events of the batch as a few set-based statements, in version order."""
    return sorted(batch, key=lambda e: (e.stream_id, e.stream_version))


async def _replay(
    store: SqlEventStore,
    projector: ConversationProjector,
    after: int,
    batch_size: int,
    meter: _Meter,
    phase: Phase,
) -> int:
    """Fold `read_all` (gap-safe) into the shadow up to the head as it is now, one transaction per
    batch. Stopping at that head keeps the phase finite however fast writers append."""
    head = await store.head_position()
    if after >= head:
        return after
    batch = await store.read_all(after=after, limit=batch_size)
    while batch:
        after = batch[-1].global_position
        # Read the next batch while this one is written (at most two batches in memory).
        upcoming = (
            asyncio.ensure_future(store.read_all(after=after, limit=batch_size)) if after < head else None
        )
        try:
            async with _writing(store) as tx:
                await _apply_bulk(tx, projector, batch)
        except BaseException:
            if upcoming is not None:
                upcoming.cancel()
                await asyncio.gather(upcoming, return_exceptions=True)
            raise
        meter.tick(phase, len(batch))
        batch = await upcoming if upcoming is not None else []
    return after


async def _apply_bulk(
    tx: AsyncConnection, projector: ConversationProjector, batch: Sequence[RecordedEvent]
) -> None:
    """Streams that start in this batch are new to the shadow: fold them in memory and insert their
    rows with one executemany per table (projections/bulk.py). The others continue rows the shadow
    already holds and go through the projector. Streams are independent, so the order is free."""
    fresh, rest = bulk.split_batch(batch)
    await bulk.insert_rows(tx, projector.t, bulk.fold_streams(fresh.values()))
    if rest:
        await projector.apply(tx, _by_stream(rest))


async def _catch_up(
    store: SqlEventStore, projector: ConversationProjector, after: int, batch_size: int, meter: _Meter
) -> int:
    """Catch up until a round finds less than a batch of new events (at most `CATCH_UP_ROUNDS`), so
    what is left for the locked swap is small."""
    for _ in range(CATCH_UP_ROUNDS):
        before = meter.done
        after = await _replay(store, projector, after, batch_size, meter, "catch-up")
        if meter.done - before < batch_size:
            break
    return after


async def _replay_committed(
    tx: AsyncConnection,
    store: SqlEventStore,
    projector: ConversationProjector,
    after: int,
    batch_size: int,
    meter: _Meter,
) -> int:
    """Inside the lock: fold every committed event after `after`, read on the locked connection and
    without the watermark (see the module docstring)."""
    while True:
        query = sa.select(events).where(events.c.global_position > after).order_by(events.c.global_position)
        rows = (await tx.execute(query.limit(batch_size))).all()
        if not rows:
            return after
        batch = [upcast(store.upcasters, row_to_event(row)) for row in rows]
        await projector.apply(tx, _by_stream(batch))
        after = batch[-1].global_position
        meter.tick("swap", len(batch))


async def _swap_with_retries(
    store: SqlEventStore,
    projector: ConversationProjector,
    position: int,
    batch_size: int,
    meter: _Meter,
    lock_timeout_s: float,
    attempts: int,
) -> int:
    for attempt in range(1, attempts + 1):
        try:
            return await _swap(store, projector, position, batch_size, meter, lock_timeout_s)
        except (sa_exc.DBAPIError, EventStoreError) as exc:
            if not _lock_timed_out(exc) or attempt == attempts:
                raise
        # A long transaction held the tables: the writers queued behind us have gone on; catch up again.
        position = await _catch_up(store, projector, position, batch_size, meter)
    raise AssertionError("unreachable")


def _lock_timed_out(exc: BaseException | None) -> bool:
    """lock_not_available, possibly wrapped by the store's error translation."""
    while exc is not None:
        if getattr(getattr(exc, "orig", None), "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            return True
        exc = exc.__cause__
    return False


async def _swap(
    store: SqlEventStore,
    projector: ConversationProjector,
    position: int,
    batch_size: int,
    meter: _Meter,
    lock_timeout_s: float,
) -> int:
    shadow = projector.t
    meter.tick("swap")
    async with _writing(store) as tx:
        if tx.dialect.name == "postgresql":
            await tx.execute(sa.text(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'"))
            names = ", ".join(t.name for t in LIVE.all())
            await tx.execute(sa.text(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"))
        position = await _replay_committed(tx, store, projector, position, batch_size, meter)
        for table in LIVE.all():
            await tx.execute(sa.text(f"DROP TABLE {table.name}"))
        for table in shadow.all():
            await tx.execute(sa.text(f"ALTER TABLE {table.name} RENAME TO {_live_name(table.name)}"))
        if tx.dialect.name == "postgresql":
            await _rename_pg_objects(tx, [_live_name(t.name) for t in shadow.all()])
        else:
            for index in _indexes(read_tables("", sa.MetaData())):
                await tx.run_sync(index.create)
    return position


async def _compare_locked(
    store: SqlEventStore,
    projector: ConversationProjector,
    position: int,
    batch_size: int,
    meter: _Meter,
    limit: int,
) -> tuple[int, list[Difference], int]:
    async with _writing(store) as tx:
        if tx.dialect.name == "postgresql":
            # Every inline projection writes `conversations`, so SHARE on it alone holds back every
            # projecting commit while readers go on. (Locking more tables could deadlock with an
            # append that holds `messages` and waits for `conversations`.)
            await tx.execute(sa.text(f"LOCK TABLE {LIVE.conversations.name} IN SHARE MODE"))
        position = await _replay_committed(tx, store, projector, position, batch_size, meter)
        meter.tick("compare")
        diffs: list[Difference] = []
        total = 0
        for live, rebuilt in zip(LIVE.all(), projector.t.all(), strict=True):
            async for diff in compare_tables(tx, live, rebuilt):
                total += 1
                if len(diffs) < limit:
                    diffs.append(diff)
        await tx.rollback()
    return position, diffs, total


# -- tables ------------------------------------------------------------------------------------------


def _live_name(name: str) -> str:
    return name.replace(SHADOW, "", 1)


def _indexes(tables: ReadTables) -> list[sa.Index]:
    return [index for table in tables.all() for index in sorted(table.indexes, key=lambda i: str(i.name))]


async def _drop_tables(store: SqlEventStore, tables: Sequence[sa.Table]) -> None:
    async with _writing(store) as tx:
        for table in tables:
            await tx.execute(sa.text(f"DROP TABLE IF EXISTS {table.name}"))


async def _create_shadow(store: SqlEventStore, shadow: ReadTables) -> None:
    """Drop leftovers of an interrupted rebuild, then create the shadow tables without their secondary
    indexes (built once after the bulk replay, which is cheaper than maintaining them row by row)."""
    await _drop_tables(store, shadow.all())
    async with _writing(store) as tx:
        for table in shadow.all():
            if tx.dialect.name == "sqlite":
                # SQLite constraint names are local to their table and cannot be renamed: use the live ones.
                for constraint in table.constraints:
                    if isinstance(constraint.name, str):
                        constraint.name = _live_name(constraint.name)
            await tx.execute(sa.schema.CreateTable(table))


async def _create_shadow_indexes(store: SqlEventStore, shadow: ReadTables) -> None:
    """PostgreSQL: build the indexes now, under shadow names renamed at the swap. SQLite cannot rename
    an index, so there they are created under their live names inside the swap."""
    async with _writing(store) as tx:
        if tx.dialect.name == "postgresql":
            for index in _indexes(shadow):
                await tx.run_sync(index.create)


async def _rename_pg_objects(tx: AsyncConnection, tables: Sequence[str]) -> None:
    """Give the swapped-in tables' indexes and constraints their live names (renaming an index that
    backs a constraint renames the constraint too)."""
    indexes = sa.text(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = CAST(:t AS regclass)"
    )
    constraints = sa.text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)")
    for table in tables:
        for (name,) in (await tx.execute(indexes, {"t": table})).all():
            if SHADOW in name:
                await tx.execute(sa.text(f'ALTER INDEX "{name}" RENAME TO "{_live_name(name)}"'))
        for (name,) in (await tx.execute(constraints, {"t": table})).all():
            if SHADOW in name:
                await tx.execute(
                    sa.text(f'ALTER TABLE {table} RENAME CONSTRAINT "{name}" TO "{_live_name(name)}"')
                )


# -- comparison --------------------------------------------------------------------------------------


async def compare_tables(
    conn: AsyncConnection, live: sa.Table, rebuilt: sa.Table
) -> AsyncIterator[Difference]:
    """Differences between two tables of the same shape, merged in primary-key order while streaming
    both (bounded memory). Every column counts; JSON is compared as text, so key order counts too."""
    a, b = _stream(conn, live), _stream(conn, rebuilt)
    left, right = await anext(a, None), await anext(b, None)
    while left is not None or right is not None:
        if right is None or (left is not None and left[0] < right[0]):
            assert left is not None
            yield Difference(live.name, left[0], "only_live")
            left = await anext(a, None)
        elif left is None or right[0] < left[0]:
            yield Difference(live.name, right[0], "only_rebuilt")
            right = await anext(b, None)
        else:
            changed = {name: (x, y) for name, x, y in zip(left[1], left[2], right[2], strict=True) if x != y}
            if changed:
                yield Difference(live.name, left[0], "changed", changed)
            left, right = await anext(a, None), await anext(b, None)


async def _stream(
    conn: AsyncConnection, table: sa.Table
) -> AsyncIterator[tuple[tuple[Any, ...], list[str], list[Any]]]:
    keys = list(table.primary_key.columns)
    # Byte order on both dialects, so the merge can compare keys as Python does (UTF-8 byte order is
    # code point order).
    order = [k.collate("C") if conn.dialect.name == "postgresql" and _is_text(k) else k for k in keys]
    names = [c.name for c in table.columns]
    result = await conn.stream(sa.select(table).order_by(*order).execution_options(yield_per=1000))
    async for row in result:
        values = [_comparable(column, value) for column, value in zip(table.columns, row, strict=True)]
        yield tuple(getattr(row, k.name) for k in keys), names, values


def _is_text(column: sa.ColumnElement[Any]) -> bool:
    return isinstance(column.type, sa.String)


def _comparable(column: sa.Column[Any], value: Any) -> Any:
    if isinstance(column.type, sa.JSON):
        return json.dumps(value, ensure_ascii=False)
    return value
