"""Apply Alembic migrations programmatically (the CLI, `ChatLedger.open` and the tests use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


async def _run(target: str | AsyncEngine, action: str, revision: str) -> None:
    engine = create_async_engine(target) if isinstance(target, str) else target
    cfg = alembic_config()

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        if isinstance(target, str):
            await engine.dispose()


async def upgrade(target: str | AsyncEngine, revision: str = "head") -> None:
    """Migrate the database at `target` (URL or engine) up to `revision`."""
    await _run(target, "upgrade", revision)


async def downgrade(target: str | AsyncEngine, revision: str = "base") -> None:
    """Migrate the database at `target` down to `revision` (every migration is reversible)."""
    await _run(target, "downgrade", revision)


async def current_revision(target: str | AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_async_engine(target) if isinstance(target, str) else target
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        if isinstance(target, str):
            await engine.dispose()
