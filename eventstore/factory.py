"""Build engines and stores from database URLs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .base import EventStore, InlineProjection
from .memory import MemoryEventStore
from .postgres import PostgresEventStore
from .sqlite import SqliteEventStore, configure_sqlite_engine
from .upcasting import UpcasterRegistry

MEMORY_URL = "memory://"


def _loads(text: str) -> Any:
    # Most JSON cells read back are an empty metadata object or a JSON null: skip the decoder for them.
    if text == "{}":
        return {}
    if text == "null":
        return None
    return json.loads(text)


def create_engine_for(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
    echo: bool = False,
) -> AsyncEngine:
    """An `AsyncEngine` set up for the store: for SQLite (aiosqlite) WAL, busy_timeout, foreign keys and
    explicit BEGIN (a `:memory:` database shares one connection through a StaticPool); for PostgreSQL
    (asyncpg) a bounded pool and a connect timeout, so an outage surfaces as `StoreUnavailable`."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            engine = create_async_engine(
                url,
                echo=echo,
                json_deserializer=_loads,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
        else:
            engine = create_async_engine(
                url,
                echo=echo,
                json_deserializer=_loads,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
            )
        configure_sqlite_engine(engine)
        return engine
    if backend == "postgresql":
        return create_async_engine(
            url,
            echo=echo,
            json_deserializer=_loads,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_recycle=1800,
            connect_args={"timeout": 10, "server_settings": {"application_name": "chatledger", "jit": "off"}},
        )
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string()!r}: use sqlite+aiosqlite or postgresql+asyncpg"
    )


def open_store(
    url_or_engine: str | AsyncEngine,
    *,
    upcasters: UpcasterRegistry | None = None,
    inline_projections: Sequence[InlineProjection] = (),
    **engine_options: Any,
) -> EventStore:
    """The store for a URL ("memory://", "sqlite+aiosqlite:///…", "postgresql+asyncpg://…") or an
    existing engine. A store built from a URL owns its engine (`close()` disposes it); `engine_options`
    go to `create_engine_for`."""
    if isinstance(url_or_engine, str) and url_or_engine == MEMORY_URL:
        return MemoryEventStore(upcasters=upcasters, inline_projections=inline_projections)
    owns = isinstance(url_or_engine, str)
    engine = (
        create_engine_for(url_or_engine, **engine_options)
        if isinstance(url_or_engine, str)
        else url_or_engine
    )
    kinds: dict[str, type[PostgresEventStore] | type[SqliteEventStore]] = {
        "postgresql": PostgresEventStore,
        "sqlite": SqliteEventStore,
    }
    kind = kinds.get(engine.dialect.name)
    if kind is None:
        raise ValueError(f"unsupported database dialect {engine.dialect.name!r}")
    return kind(engine, upcasters=upcasters, inline_projections=inline_projections, owns_engine=owns)
