"""Statements run on asyncpg directly, under SQLAlchemy's pool but outside its per-execute work.

SQLAlchemy's `execute` costs tens of microseconds per call in Python (compiled-cache lookup,
parameter and result processing, a greenlet hop), and checking out an `AsyncConnection` costs more
(a `Connection` object, isolation-level switches). On the hot paths, statements are compiled once
(`driver_statement`) and run on the asyncpg connection itself (`driver_fetch`), either inside an
`AsyncConnection`'s transaction or on a `DriverConnection`: a bare pooled connection in autocommit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import asyncpg as sa_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import PoolProxiedConnection

T = TypeVar("T")

_DIALECT = sa_asyncpg.dialect()  # type: ignore[no-untyped-call]


@dataclasses.dataclass(frozen=True, slots=True)
class DriverConnection:
    """A pooled connection used through asyncpg alone, in autocommit (asyncpg starts no transaction):
    for reads and single-statement writes of `driver_statement`s. A third of the checkout cost of an
    `AsyncConnection`. Get one from `PostgresEventStore.reader()`."""

    dialect: Dialect
    fairy: PoolProxiedConnection


@dataclasses.dataclass(frozen=True, slots=True)
class DriverStatement:
    """A statement compiled once to asyncpg's SQL (`$n` placeholders) with its parameter order."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]


def driver_statement(stmt: sa.Executable) -> DriverStatement:
    """Compile a Core or text statement for `driver_fetch`; call it once and keep the result. Only
    for statements whose parameters need no SQLAlchemy bind processing (untyped text binds, plain
    strings and numbers): the values go to asyncpg as given."""
    compiled = stmt.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    return DriverStatement(compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))


async def driver_fetch(
    conn: AsyncConnection | DriverConnection, stmt: DriverStatement, params: Mapping[str, Any]
) -> list[asyncpg.Record]:
    """Run `stmt` on the asyncpg connection under `conn`: inside an `AsyncConnection`'s transaction
    (started here by SQLAlchemy's adapter, like its own first execute would; SQLAlchemy still commits
    or rolls back), or on its own on a `DriverConnection`. Driver errors come out as the same
    `sqlalchemy.exc.DBAPIError` subclasses (same `orig`, same `__cause__`) an `execute` would raise,
    and a lost connection is invalidated the same way."""
    args = _args(stmt, params)
    result: list[asyncpg.Record] = await _on_driver(conn, stmt, lambda c: c.fetch(stmt.sql, *args))
    return result


async def driver_executemany(
    conn: AsyncConnection | DriverConnection, stmt: DriverStatement, param_sets: Sequence[Mapping[str, Any]]
) -> None:
    """`driver_fetch` for many parameter sets of one statement, pipelined by asyncpg in one network
    round trip (no results)."""
    rows = [_args(stmt, params) for params in param_sets]
    await _on_driver(conn, stmt, lambda c: c.executemany(stmt.sql, rows))


def _args(stmt: DriverStatement, params: Mapping[str, Any]) -> list[Any]:
    return [params[n] if n in params else stmt.defaults[n] for n in stmt.names]


async def _on_driver(
    conn: AsyncConnection | DriverConnection,
    stmt: DriverStatement,
    call: Callable[[asyncpg.Connection], Awaitable[T]],
) -> T:
    if isinstance(conn, DriverConnection):
        adapted: Any = conn.fairy.dbapi_connection
        try:
            return await call(adapted._connection)
        except Exception as error:
            mapped, cause = await _as_sqlalchemy_error(conn, adapted, stmt.sql, error)
            raise mapped from cause
    sync = conn.sync_connection
    if sync is not None and not sync.invalidated and not sync.closed:
        fairy = sync.connection
    else:
        fairy = await conn.get_raw_connection()
    adapted = fairy.dbapi_connection
    try:
        if not adapted._started:
            await adapted._start_transaction()
        return await call(adapted._connection)
    except Exception as error:
        mapped, cause = await _as_sqlalchemy_error(conn, adapted, stmt.sql, error)
        raise mapped from cause


async def _as_sqlalchemy_error(
    conn: AsyncConnection | DriverConnection, adapted: Any, sql: str, error: Exception
) -> tuple[BaseException, BaseException | None]:
    """What SQLAlchemy's execute would raise for `error`, and its `__cause__`."""
    try:
        adapted._handle_exception(error)  # raises the adapter's DBAPI error (or `error` itself)
    except Exception as translated:
        dbapi = conn.dialect.loaded_dbapi
        if not isinstance(translated, dbapi.Error):
            return translated, translated.__cause__
        lost = conn.dialect.is_disconnect(translated, adapted, None)
        wrapped = sa_exc.DBAPIError.instance(
            sql, None, translated, dbapi.Error, connection_invalidated=lost, dialect=conn.dialect
        )
        if lost:
            with contextlib.suppress(Exception):
                fairy = conn.fairy if isinstance(conn, DriverConnection) else await conn.get_raw_connection()
                # As SQLAlchemy's own execute does on a disconnect: every connection pooled before
                # this one is recycled at its next checkout (they most likely died with it), rather
                # than each failing one more request after the database is back.
                fairy._pool._invalidate(fairy, translated, _checkin=False)
                if isinstance(conn, DriverConnection):
                    conn.fairy.invalidate(translated)
                else:
                    await conn.invalidate(translated)
        return wrapped, translated
    return error, error.__cause__
