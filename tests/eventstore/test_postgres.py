"""The contract on PostgreSQL, plus its own error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatledger.eventstore import (
    DuplicateEvent,
    EventStore,
    EventStoreError,
    RecordedEvent,
    StoreUnavailable,
    WriteFragment,
)
from chatledger.eventstore.driver import DriverConnection, driver_fetch, driver_statement
from chatledger.eventstore.factory import create_engine_for, open_store
from chatledger.eventstore.postgres import TX_SLOTS, PostgresEventStore

from .contract import StoreContract, StoreFactory, batch, ev

pytestmark = pytest.mark.postgres


class TestPostgresStore(StoreContract):
    @pytest.fixture
    async def engine(self, clean_pg_url: str) -> AsyncIterator[AsyncEngine]:
        engine = create_engine_for(clean_pg_url, pool_size=40)
        yield engine
        await engine.dispose()

    @pytest.fixture
    def make_store(self, engine: AsyncEngine) -> StoreFactory:
        async def make(**options: Any) -> EventStore:
            return PostgresEventStore(engine, **options)

        return make

    async def _execute(self, store: EventStore, sql: str, **params: Any) -> None:
        assert isinstance(store, PostgresEventStore)
        async with store.engine.begin() as conn:
            await conn.execute(sa.text(sql), params)

    async def tamper(self, store: EventStore, stream_id: str, version: int, **values: Any) -> None:
        def setter(column: str) -> str:
            return f"CAST(:{column} AS json)" if column in ("data", "metadata") else f":{column}"

        values = {k: json.dumps(v) if k in ("data", "metadata") else v for k, v in values.items()}
        assignments = ", ".join(f'"{column}" = {setter(column)}' for column in values)
        sql = f"UPDATE events SET {assignments} WHERE stream_id = :sid AND stream_version = :ver"
        await self._execute(store, sql, sid=stream_id, ver=version, **values)

    async def delete(self, store: EventStore, stream_id: str, version: int) -> None:
        sql = "DELETE FROM events WHERE stream_id = :sid AND stream_version = :ver"
        await self._execute(store, sql, sid=stream_id, ver=version)

    async def events_in_tx(self, tx: Any, stream_id: str) -> int | None:
        assert isinstance(tx, AsyncConnection)
        query = sa.text("SELECT count(*) FROM events WHERE stream_id = :sid")
        return int((await tx.execute(query, {"sid": stream_id})).scalar_one())

    async def test_positions_follow_transaction_ids(self, store: EventStore) -> None:
        first = await store.append("s", batch(3))
        second = await store.append("s", batch(1))
        base = first.positions[0]
        assert base % TX_SLOTS == 0
        assert first.positions == (base, base + 1, base + 2)
        assert second.positions[0] // TX_SLOTS > base // TX_SLOTS


class MarkerProjection:
    """Marks each append with a row of its own (in a table of the read side), written by the store's
    insert statement (or, for events it does not fuse, by `apply`)."""

    MARK = """
        marker AS (
            INSERT INTO projection_checkpoints (name, position, updated_at)
            VALUES (CAST(:marker_id AS text), CAST(:marker_version AS bigint), now())
        )"""

    def __init__(self, version: int = 0, name: str | None = None) -> None:
        self.version = version
        self.name = name
        self.applied: list[str] = []

    def write_fragment(self, dialect: str, events: Sequence[RecordedEvent]) -> WriteFragment | None:
        if events[0].type == "Unfused":
            return None
        name = self.name or f"mark-{events[0].event_id}"
        return WriteFragment(self.MARK, {"marker_id": name, "marker_version": self.version})

    async def apply(self, tx: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
        self.applied.append(events[0].type)


async def _marks(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM projection_checkpoints WHERE name LIKE 'mark-%'")
        return int((await conn.execute(query)).scalar_one())


async def test_write_fragments_run_in_the_insert_statement_and_fail_with_it(clean_pg_url: str) -> None:
    engine = create_engine_for(clean_pg_url)
    try:
        marked = await _marks(engine)
        marker = MarkerProjection()
        store = PostgresEventStore(engine, inline_projections=[marker])
        await store.append("s", batch(2))
        await store.append("s", [ev("Unfused")])
        assert marker.applied == ["Unfused"]  # the fused append never called apply
        assert await _marks(engine) == marked + 1

        # A failing fragment (a NULL position, which its table refuses) fails the whole append with
        # its own error, not a version conflict.
        failing = MarkerProjection(version=None)  # type: ignore[arg-type]
        broken = PostgresEventStore(engine, inline_projections=[failing])
        with pytest.raises(EventStoreError, match="null value"):
            await broken.append("s", batch(1))
        assert [e.stream_version for e in await store.read_stream("s")] == [1, 2, 3]
        assert await _marks(engine) == marked + 1

        # A fragment's own conflict is its error, even when its text names an event_id; on both
        # the locked (a batch) and the optimistic (one event) path.
        clash = PostgresEventStore(engine, inline_projections=[MarkerProjection(name="mark-event_id")])
        await clash.append("s", batch(1))
        for events in (batch(2), batch(1)):
            with pytest.raises(EventStoreError, match="duplicate key") as caught:
                await clash.append("s", events)
            assert not isinstance(caught.value, DuplicateEvent)
        assert [e.stream_version for e in await store.read_stream("s")] == [1, 2, 3, 4]
        assert await _marks(engine) == marked + 2
        assert (await store.verify("s")).ok
    finally:
        await engine.dispose()


async def test_closed_port_is_unavailable() -> None:
    store = open_store("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        with pytest.raises(StoreUnavailable):
            await store.read_all()
        with pytest.raises(StoreUnavailable):
            await store.append("s", batch(1))
        with pytest.raises(StoreUnavailable):
            await anext(aiter(store.subscribe()))
        assert isinstance(store, PostgresEventStore)
        with pytest.raises(StoreUnavailable):
            async with store.reader():
                pass
    finally:
        await store.close()


async def test_pool_timeout_is_unavailable(clean_pg_url: str) -> None:
    store = open_store(clean_pg_url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    assert isinstance(store, PostgresEventStore)
    try:
        async with store.engine.connect() as held:
            await held.execute(sa.text("SELECT 1"))
            with pytest.raises(StoreUnavailable):
                await store.head_position()
        assert await store.head_position() == 0
    finally:
        await store.close()


async def test_killed_connection_is_unavailable_then_recovers(clean_pg_url: str) -> None:
    store = open_store(clean_pg_url, pool_size=1, max_overflow=0)
    assert isinstance(store, PostgresEventStore)
    admin = create_engine_for(clean_pg_url)
    try:
        async with store.engine.connect() as conn:
            pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        async with admin.connect() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(StoreUnavailable):
            await store.append("s", [ev()])
        assert (await store.append("s", [ev()])).version == 1
    finally:
        await store.close()
        await admin.dispose()


async def test_killed_connection_on_the_driver_paths_is_unavailable_then_recovers(
    clean_pg_url: str,
) -> None:
    # Reads, `read_all` and optimistic appends run on a bare pooled connection (DriverConnection):
    # a connection killed under each must surface as StoreUnavailable, be thrown away, and the
    # next call must work on a new one.
    store = open_store(clean_pg_url, pool_size=1, max_overflow=0)
    assert isinstance(store, PostgresEventStore)
    admin = create_engine_for(clean_pg_url)
    one = driver_statement(sa.select(sa.literal_column("1").label("one")))

    async def read() -> object:
        async with store.reader() as conn:
            assert isinstance(conn, DriverConnection)
            return (await driver_fetch(conn, one, {}))[0]["one"]

    async def kill() -> None:
        async with store.reader() as conn:
            pid = (await driver_fetch(conn, driver_statement(sa.select(sa.func.pg_backend_pid())), {}))[0][0]
        async with admin.connect() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    try:
        await store.append("s", [ev()])  # the stream exists: a single append is optimistic

        async def append() -> object:
            return await store.append("s", [ev()])

        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "reader": read,
            "read_all": store.read_all,
            "append": append,
        }
        for name, call in calls.items():
            await kill()
            with pytest.raises(StoreUnavailable):
                await call()
            assert await call(), name
        assert [e.stream_version for e in await store.read_stream("s")] == [1, 2]
    finally:
        await store.close()
        await admin.dispose()


async def test_one_lost_connection_recycles_the_pool(clean_pg_url: str) -> None:
    # After an outage every pooled connection is dead. The first call that meets one fails; the pool
    # then recycles all connections older than it, so the next call works instead of failing once
    # per dead connection.
    store = open_store(clean_pg_url, pool_size=4, max_overflow=0)
    assert isinstance(store, PostgresEventStore)
    admin = create_engine_for(clean_pg_url)
    pid_of = driver_statement(sa.select(sa.func.pg_backend_pid()))
    try:
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(store.reader()) for _ in range(4)]
            pids = [(await driver_fetch(c, pid_of, {}))[0][0] for c in held]
        assert len(set(pids)) == 4
        async with admin.connect() as conn:
            for pid in pids:
                await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(StoreUnavailable):
            await store.read_all()
        for _ in range(4):
            assert await store.read_all() == []
    finally:
        await store.close()
        await admin.dispose()


async def test_subscription_releases_its_connection(clean_pg_url: str) -> None:
    store = open_store(clean_pg_url, pool_size=1, max_overflow=1)
    assert isinstance(store, PostgresEventStore)
    try:
        for _ in range(3):
            events = aiter(store.subscribe())
            task = asyncio.ensure_future(anext(events))
            await store.append("s", batch(1))
            assert (await asyncio.wait_for(task, 10)).stream_id == "s"
            await events.aclose()  # type: ignore[attr-defined]
        assert await store.head_position() > 0
    finally:
        await store.close()
