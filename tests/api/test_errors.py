"""The error mapping's classification of failures that escape the store."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from chatledger.api.errors import is_unavailable
from chatledger.eventstore import EventStoreError, StoreUnavailable


def _wrapped(orig: BaseException, cls: type[sa_exc.DBAPIError] = sa_exc.DBAPIError) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "exc",
    [
        StoreUnavailable("down"),
        ConnectionRefusedError(),
        TimeoutError(),
        sa_exc.TimeoutError("pool"),
        _wrapped(asyncpg.InterfaceError("connection is closed"), sa_exc.InterfaceError),
        _wrapped(Exception("database is locked"), sa_exc.OperationalError),
    ],
)
def test_unavailable(exc: BaseException) -> None:
    assert is_unavailable(exc)


@pytest.mark.parametrize(
    "exc", [ValueError("x"), EventStoreError("constraint"), _wrapped(Exception("syntax error"))]
)
def test_not_unavailable(exc: BaseException) -> None:
    assert not is_unavailable(exc)


def test_cause_chain_is_followed() -> None:
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_unavailable(outer)
