"""Shared fixtures: a throwaway PostgreSQL database per session (and per test where needed), SQLite
files, schema creation, a ledger on an empty database."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import hypothesis  # noqa: F401  # see below
import pytest
import sniffio  # noqa: F401  # see below
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from chatledger import migrate
from chatledger.service import ChatLedger

# Importing hypothesis up front: when its pytest plugin first imports it at the end of a session,
# CPython 3.11.7's compiler can fail with "AST constructor recursion depth mismatch" (fixed in 3.11.8).
# sniffio (a dev dependency) up front: httpcore imports it inside every async request, and an import
# that really runs, interrupted by a finalizer that imports too, trips CPython 3.11's module-lock
# bookkeeping (a KeyError in importlib._bootstrap, seen once under 20 concurrent requests).

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

CreateSchema = Callable[[str | AsyncEngine], Awaitable[None]]


async def create_schema(url: str | AsyncEngine) -> None:
    """Create every table at `url` by running the Alembic migrations (pass the engine itself for an
    in-memory SQLite database, whose tables live on its one connection)."""
    await migrate.upgrade(url)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database `chatledger_test_<random>` on CHATLEDGER_TEST_DATABASE_URL, dropped afterwards."""
    server = os.environ.get("CHATLEDGER_TEST_DATABASE_URL", DEFAULT_PG_URL)
    name = f"chatledger_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {server} is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield make_url(server).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'chatledger.db'}"


@pytest.fixture(name="create_schema", scope="session")
def create_schema_fixture() -> CreateSchema:
    """`await create_schema(url_or_engine)` migrates the database to head."""
    return create_schema


@pytest.fixture
async def fresh_pg_url(pg_url: str) -> AsyncIterator[str]:
    """An empty database of its own on the test server, dropped WITH (FORCE) afterwards: for tests
    that replay or tamper with the whole log, where the shared session database will not do."""
    name = f"chatledger_t_{secrets.token_hex(6)}"
    await _admin(pg_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database per test, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


@pytest.fixture
async def ledger(db_url: str) -> AsyncIterator[ChatLedger]:
    """A ledger on an empty database of its own."""
    async with ChatLedger.open(db_url) as opened:
        yield opened


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"
