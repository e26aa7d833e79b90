"""Throwaway databases: one PostgreSQL database and one SQLite file per benchmark run."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from chatledger import migrate

from . import raw

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class BenchEnv:
    """Where one run writes: `pg_url` (SQLAlchemy form), `pg_dsn` (asyncpg form), `sqlite_url`."""

    pg_url: str
    pg_dsn: str
    sqlite_url: str
    database: str


def base_url() -> str:
    return os.environ.get("CHATLEDGER_TEST_DATABASE_URL", DEFAULT_URL)


def dsn_of(url: str) -> str:
    """The libpq form of a SQLAlchemy URL, for asyncpg and psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def bench_env() -> AsyncIterator[BenchEnv]:
    """A fresh, migrated `bench_<random>` database and a temp SQLite file, both removed at the end."""
    base = make_url(base_url())
    name = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn_of(base.render_as_string(hide_password=False)))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = base.set(database=name).render_as_string(hide_password=False)
        with tempfile.TemporaryDirectory(prefix="chatledger-bench-") as tmp:
            sqlite_url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            await migrate.upgrade(url)
            await migrate.upgrade(sqlite_url)
            conn = await asyncpg.connect(dsn_of(url))
            try:
                await raw.create_tables(conn)
            finally:
                await conn.close()
            try:
                yield BenchEnv(url, dsn_of(url), sqlite_url, name)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
