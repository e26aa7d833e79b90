"""read_all on PostgreSQL never skips an event whose transaction commits after a later position's."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from chatledger.eventstore import Decider, NewEvent, RecordedEvent, StreamContext
from chatledger.eventstore.factory import open_store
from chatledger.eventstore.postgres import PostgresEventStore

pytestmark = pytest.mark.postgres

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

WRITERS = 6
TRANSACTIONS = 5
DEADLINE = 60.0


@pytest.fixture
async def store(clean_pg_url: str) -> AsyncIterator[PostgresEventStore]:
    store = open_store(clean_pg_url, pool_size=WRITERS + 2)
    assert isinstance(store, PostgresEventStore)
    yield store
    await store.close()


def held_open(
    events: Sequence[NewEvent], gate: asyncio.Event, entered: asyncio.Event | None = None
) -> Decider:
    """A decider that returns `events` only once `gate` opens, keeping its transaction (and its
    already assigned transaction id) open until then."""

    async def decide(_: StreamContext) -> Sequence[NewEvent]:
        if entered is not None:
            entered.set()
        await gate.wait()
        return events

    return decide


async def test_an_open_transaction_holds_back_later_positions(store: PostgresEventStore) -> None:
    entered, gate = asyncio.Event(), asyncio.Event()
    early = asyncio.create_task(store.append_with("early", held_open([NewEvent("E", {})], gate, entered)))
    try:
        await asyncio.wait_for(entered.wait(), 10)
        late = await store.append("late", [NewEvent("L", {})])
        assert await store.read_all() == []
        assert await store.head_position() == 0
    finally:
        gate.set()
        first = await asyncio.wait_for(early, 10)
    seen = await store.read_all()
    assert [e.stream_id for e in seen] == ["early", "late"]
    assert first.positions[0] < late.positions[0]
    assert await store.head_position() == late.positions[0]


async def test_reader_sees_every_out_of_order_commit_once(store: PostgresEventStore) -> None:
    rng = random.Random(20261125)
    commits: list[tuple[int, ...]] = []

    async def writer(w: int) -> None:
        for t in range(TRANSACTIONS):
            gate = asyncio.Event()
            events = [NewEvent("W", {"w": w, "t": t, "k": k}) for k in range(rng.randint(1, 3))]
            append = asyncio.create_task(store.append_with(f"writer-{w}", held_open(events, gate)))
            try:
                await asyncio.sleep(rng.uniform(0, 0.05))  # hold the transaction open: commits interleave
            finally:
                gate.set()
            commits.append((await append).positions)

    writers = asyncio.gather(*(writer(w) for w in range(WRITERS)))
    seen: list[RecordedEvent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    try:
        while True:
            done = writers.done()
            batch = await store.read_all(after=seen[-1].global_position if seen else 0, limit=7)
            seen += batch
            if done and not batch:
                break
            assert loop.time() < deadline, "reader did not drain the log in time"
            await asyncio.sleep(0)
    finally:
        await writers

    positions = [e.global_position for e in seen]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    committed = sorted(p for c in commits for p in c)
    assert positions == committed
    first_positions = [c[0] for c in commits]
    assert first_positions != sorted(first_positions), "no commit happened out of position order"


async def test_a_transaction_in_another_database_does_not_stall_readers(
    store: PostgresEventStore, pg_url: str
) -> None:
    other = await asyncpg.connect(
        os.environ.get("CHATLEDGER_TEST_DATABASE_URL", DEFAULT_PG_URL).replace("+asyncpg", "")
    )
    try:
        async with other.transaction():
            await other.fetchval("SELECT pg_current_xact_id()")
            appended = await store.append("s", [NewEvent("E", {})])
            assert [e.event_id for e in await store.read_all()] == [appended.events[0].event_id]
    finally:
        await other.close()
