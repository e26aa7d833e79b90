"""Fixtures for rebuild, runner and audit tests: each test gets its own empty database (rebuilds replay
the whole log and the audit tests tamper with it, so the shared session database will not do)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from chatledger.service import ChatLedger


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def fresh_pg_url(pg_url: str) -> AsyncIterator[str]:
    """An empty database of its own on the test server, dropped WITH (FORCE) afterwards."""
    name = f"chatledger_t_{secrets.token_hex(6)}"
    await _admin(pg_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


@pytest.fixture
async def ledger(db_url: str) -> AsyncIterator[ChatLedger]:
    async with ChatLedger.open(db_url) as opened:
        yield opened


@pytest.fixture
def user() -> Iterator[str]:
    yield f"user-{uuid.uuid4().hex[:8]}"
