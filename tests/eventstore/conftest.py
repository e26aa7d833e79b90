"""Fixtures of the event store tests: a migrated PostgreSQL database, emptied before each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from chatledger.eventstore.factory import create_engine_for


@pytest.fixture(scope="session")
def pg_log_url(pg_url: str, create_schema: Callable[[Any], Awaitable[None]]) -> str:
    asyncio.run(create_schema(pg_url))
    return pg_url


@pytest.fixture
async def clean_pg_url(pg_log_url: str) -> AsyncIterator[str]:
    engine = create_engine_for(pg_log_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("TRUNCATE events, streams"))
    finally:
        await engine.dispose()
    yield pg_log_url
