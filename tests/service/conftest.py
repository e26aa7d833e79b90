from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatledger.service import ChatLedger


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[ChatLedger]:
    async with ChatLedger.open(ledger_url) as opened:
        yield opened


@pytest.fixture
def alice() -> str:
    # A fresh user per test keeps tests independent on the shared PostgreSQL database.
    return f"alice-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bob() -> str:
    return f"bob-{uuid.uuid4().hex[:8]}"
