"""Fixtures of the event store tests: a migrated PostgreSQL database of their own, emptied per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chatledger.eventstore.factory import create_engine_for


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_log_url(pg_url: str, create_schema: Callable[[str], Coroutine[Any, Any, None]]) -> Iterator[str]:
    name = f"{make_url(pg_url).database}_es"
    asyncio.run(_admin(pg_url, f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    asyncio.run(create_schema(url))
    yield url
    asyncio.run(_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def clean_pg_url(pg_log_url: str) -> AsyncIterator[str]:
    engine = create_engine_for(pg_log_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("SET LOCAL lock_timeout = '10s'"))  # fail, not hang, on a leak
            await conn.execute(sa.text("TRUNCATE events, streams"))
    finally:
        await engine.dispose()
    yield pg_log_url
