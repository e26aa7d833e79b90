"""The error mapping's classification of failures (driver errors are translated by the store's edge,
tested in tests/eventstore)."""

from __future__ import annotations

import pytest

from chatledger.api.errors import is_unavailable
from chatledger.eventstore import EventStoreError, StoreUnavailable


@pytest.mark.parametrize(
    "exc",
    [
        StoreUnavailable("down"),
        ConnectionRefusedError(),
        TimeoutError(),
    ],
)
def test_unavailable(exc: BaseException) -> None:
    assert is_unavailable(exc)


@pytest.mark.parametrize("exc", [ValueError("x"), EventStoreError("constraint")])
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
