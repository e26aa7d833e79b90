"""Live subscriptions share one log subscription per process: many listeners, a tiny pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatledger.eventstore import RecordedEvent
from chatledger.service import ChatLedger
from chatledger.settings import Settings


@pytest.fixture
async def small_pool_ledger(db_url: str) -> AsyncIterator[ChatLedger]:
    settings = Settings(database_url=db_url, pool_size=2, max_overflow=0, pool_timeout=10)
    async with ChatLedger.open(settings=settings) as opened:
        yield opened


async def test_many_listeners_on_a_small_pool_all_get_every_event(
    small_pool_ledger: ChatLedger, alice: str
) -> None:
    ledger = small_pool_ledger
    conv = await ledger.start_conversation(user_id=alice)
    listeners = 12
    ready = asyncio.Semaphore(0)

    async def listen() -> list[RecordedEvent]:
        got: list[RecordedEvent] = []
        stream = ledger.subscribe_conversation(conv.id, user_id=alice, after_version=0)
        async for e in stream:
            got.append(e)
            if e.stream_version == 1:
                ready.release()  # history delivered: the listener is registered
            if e.stream_version == 4:
                break
        await stream.aclose()
        return got

    tasks = [asyncio.create_task(listen()) for _ in range(listeners)]
    for _ in range(listeners):
        await asyncio.wait_for(ready.acquire(), 30)
    for text in ("a", "b", "c"):
        await ledger.add_messages(conv.id, user_id=alice, messages=[{"role": "user", "content": text}])
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    for got in results:
        assert [e.stream_version for e in got] == [1, 2, 3, 4]
        assert [e.data.get("content") for e in got[1:]] == ["a", "b", "c"]
