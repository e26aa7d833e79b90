"""The contract on SQLite (a file per test), plus SQLite's own setup and error mapping."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatledger.eventstore import EventStore, NewEvent, StoreUnavailable
from chatledger.eventstore import sqlite as sqlite_module
from chatledger.eventstore.factory import create_engine_for, open_store
from chatledger.eventstore.sqlite import SqliteEventStore

from .contract import StoreContract, StoreFactory, batch


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def engine(self, sqlite_url: str, create_schema: Any) -> AsyncIterator[AsyncEngine]:
        engine = create_engine_for(sqlite_url)
        await create_schema(engine)
        yield engine
        await engine.dispose()

    @pytest.fixture
    def make_store(self, engine: AsyncEngine) -> StoreFactory:
        async def make(**options: Any) -> EventStore:
            return SqliteEventStore(engine, **options)

        return make

    async def _execute(self, store: EventStore, sql: str, **params: Any) -> None:
        assert isinstance(store, SqliteEventStore)
        async with store.engine.begin() as conn:
            await conn.execute(sa.text(sql), params)

    async def tamper(self, store: EventStore, stream_id: str, version: int, **values: Any) -> None:
        values = {k: json.dumps(v) if k in ("data", "metadata") else v for k, v in values.items()}
        assignments = ", ".join(f'"{column}" = :{column}' for column in values)
        await self._execute(
            store,
            f"UPDATE events SET {assignments} WHERE stream_id = :sid AND stream_version = :ver",
            sid=stream_id,
            ver=version,
            **values,
        )

    async def delete(self, store: EventStore, stream_id: str, version: int) -> None:
        sql = "DELETE FROM events WHERE stream_id = :sid AND stream_version = :ver"
        await self._execute(store, sql, sid=stream_id, ver=version)

    async def events_in_tx(self, tx: Any, stream_id: str) -> int | None:
        assert isinstance(tx, AsyncConnection)
        query = sa.text("SELECT count(*) FROM events WHERE stream_id = :sid")
        return int((await tx.execute(query, {"sid": stream_id})).scalar_one())


async def test_engine_uses_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    engine = create_engine_for(sqlite_url)
    try:
        async with engine.connect() as conn:
            pragmas = [
                (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                for p in ("journal_mode", "busy_timeout", "foreign_keys")
            ]
        assert pragmas == ["wal", sqlite_module.BUSY_TIMEOUT_MS, 1]
    finally:
        await engine.dispose()


async def test_in_memory_database_shares_one_connection(create_schema: Any) -> None:
    engine = create_engine_for("sqlite+aiosqlite:///:memory:")
    store = open_store(engine)
    try:
        await create_schema(engine)
        results = await asyncio.gather(*(store.append("s", batch(1, i)) for i in range(10)), store.read_all())
        assert len(await store.read_stream("s")) == 10
        assert results[-1] is not None
        assert (await store.verify()).ok
    finally:
        await store.close()
        await engine.dispose()


async def test_two_stores_on_one_file_serialise_their_writers(sqlite_url: str, create_schema: Any) -> None:
    await create_schema(sqlite_url)
    first, second = open_store(sqlite_url), open_store(sqlite_url)
    try:
        await asyncio.gather(
            *(s.append("s", [NewEvent("E", {"i": i})]) for i in range(10) for s in (first, second))
        )
        assert [e.stream_version for e in await first.read_stream("s")] == list(range(1, 21))
        assert (await second.verify()).ok
    finally:
        await first.close()
        await second.close()


def join_failed_connection_threads(before: set[threading.Thread]) -> None:
    """aiosqlite stops the thread of a connection that failed to open by handing it one more call,
    whose result it posts to the event loop. Waiting for those threads here keeps them from posting
    after pytest has closed this test's loop (an unhandled thread exception in some later test)."""
    for thread in set(threading.enumerate()) - before:
        if "_connection_worker_thread" in thread.name:
            thread.join(timeout=30)


async def test_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    try:
        with pytest.raises(StoreUnavailable):
            await store.read_all()
        with pytest.raises(StoreUnavailable):
            await store.append("s", batch(1))
    finally:
        await store.close()
        join_failed_connection_threads(before)


async def test_locked_database_is_unavailable(
    sqlite_url: str, create_schema: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_schema(sqlite_url)
    before = set(threading.enumerate())
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 50)
    store = open_store(sqlite_url)
    other_process = sqlite3.connect(tmp_path / "chatledger.db", isolation_level=None)
    try:
        other_process.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable):
            await store.append("s", batch(1))
        other_process.execute("ROLLBACK")
        assert (await store.append("s", batch(1))).version == 1
    finally:
        other_process.close()
        await store.close()
        join_failed_connection_threads(before)
