"""Migrations create everything on both dialects, match the table definitions, and are reversible."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from chatledger import migrate
from chatledger.eventstore.schema import metadata as log_metadata
from chatledger.projections.schema import metadata as read_metadata

TABLES = {
    "streams",
    "events",
    "conversations",
    "messages",
    "tool_calls",
    "idempotency_keys",
    "projection_checkpoints",
}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


async def _diff(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": False}),
                    [log_metadata, read_metadata],  # type: ignore[arg-type]  # a list is accepted at runtime
                )
            )
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    await migrate.upgrade(db_url)
    assert await _tables(db_url) >= TABLES
    assert await _diff(db_url) == []
    await migrate.downgrade(db_url, "base")
    assert await _tables(db_url) & TABLES == set()
    assert await migrate.current_revision(db_url) is None
    await migrate.upgrade(db_url)
    assert await _tables(db_url) >= TABLES
