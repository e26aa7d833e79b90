"""The projection runner: checkpoint committed with the projection's writes, restart-safe, live."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from chatledger.eventstore import RecordedEvent
from chatledger.projections.runner import ProjectionRunner, projection_lag
from chatledger.service import ChatLedger

meta = sa.MetaData()
counts = sa.Table(
    "test_event_counts",
    meta,
    sa.Column("stream_id", sa.String(64), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)


class Counting:
    """Counts events per stream: any event applied twice (or lost) shows in the counts."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.seen = 0
        self.fail_at = fail_at
        self.reached = asyncio.Event()
        self.target = 0

    async def apply(self, tx: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
        insert = pg_insert if tx.dialect.name == "postgresql" else sqlite_insert
        for e in events:
            if self.fail_at is not None and self.seen + 1 == self.fail_at:
                raise RuntimeError("projection bug")
            stmt = insert(counts).values(stream_id=e.stream_id, n=1)
            await tx.execute(
                stmt.on_conflict_do_update(index_elements=["stream_id"], set_={"n": counts.c.n + 1})
            )
            self.seen += 1
        if self.target and self.seen >= self.target:
            self.reached.set()


async def _setup(ledger: ChatLedger) -> None:
    async with ledger.engine.begin() as conn:
        await conn.run_sync(meta.create_all)


async def _counts(ledger: ChatLedger) -> dict[str, int]:
    async with ledger.engine.connect() as conn:
        return {r.stream_id: r.n for r in await conn.execute(sa.select(counts))}


async def _versions(ledger: ChatLedger) -> dict[str, int]:
    events = await ledger.store.read_all(limit=100_000)
    out: dict[str, int] = {}
    for e in events:
        out[e.stream_id] = e.stream_version
    return out


async def _write(ledger: ChatLedger, user: str, conversations: int) -> None:
    for i in range(conversations):
        conv = await ledger.start_conversation(user_id=user)
        await ledger.add_messages(conv.id, user_id=user, messages=[{"role": "user", "content": f"m{i}"}] * 1)


async def test_checkpoint_commits_with_the_writes_and_a_restart_resumes(
    ledger: ChatLedger, user: str
) -> None:
    await _setup(ledger)
    await _write(ledger, user, 3)
    runner = ProjectionRunner(ledger.engine, ledger.store, {"counts": Counting()}, batch_size=4)
    assert await runner.lag() == {"counts": 6}

    assert await runner.run_once() == 6
    assert await _counts(ledger) == await _versions(ledger)
    assert await runner.checkpoint("counts") == await ledger.store.head_position()
    assert await runner.lag() == {"counts": 0}

    await _write(ledger, user, 2)
    restarted = ProjectionRunner(ledger.engine, ledger.store, {"counts": Counting()}, batch_size=4)
    assert await projection_lag(ledger.store) == {"counts": 4}
    assert await restarted.run_once() == 4
    assert await restarted.run_once() == 0
    assert await _counts(ledger) == await _versions(ledger)


async def test_a_failing_batch_rolls_back_its_writes_and_its_checkpoint(
    ledger: ChatLedger, user: str
) -> None:
    await _setup(ledger)
    await _write(ledger, user, 2)
    broken = ProjectionRunner(ledger.engine, ledger.store, {"counts": Counting(fail_at=3)}, batch_size=10)
    try:
        await broken.run_once()
    except RuntimeError:
        pass
    else:
        raise AssertionError("the projection's error should propagate")
    assert await _counts(ledger) == {}
    assert await broken.checkpoint("counts") == 0

    fixed = ProjectionRunner(ledger.engine, ledger.store, {"counts": Counting()}, batch_size=10)
    assert await fixed.run_once() == 4
    assert await _counts(ledger) == await _versions(ledger)


async def test_concurrent_runners_never_apply_a_batch_twice(ledger: ChatLedger, user: str) -> None:
    await _setup(ledger)
    await _write(ledger, user, 5)
    runners = [
        ProjectionRunner(ledger.engine, ledger.store, {"counts": Counting()}, batch_size=3) for _ in range(3)
    ]
    applied = await asyncio.gather(*(r.run_once() for r in runners))
    assert sum(applied) == 10
    assert await _counts(ledger) == await _versions(ledger)


async def test_run_forever_follows_new_events_until_stopped(ledger: ChatLedger, user: str) -> None:
    await _setup(ledger)
    await _write(ledger, user, 1)
    projection = Counting()
    projection.target = 6
    runner = ProjectionRunner(ledger.engine, ledger.store, {"counts": projection})
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_forever(stop))
    await _write(ledger, user, 2)
    await asyncio.wait_for(projection.reached.wait(), timeout=30)  # a safety net, not synchronisation
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    assert await _counts(ledger) == await _versions(ledger)
    assert await runner.lag() == {"counts": 0}


async def test_reset_starts_a_projection_over(ledger: ChatLedger, user: str) -> None:
    await _setup(ledger)
    await _write(ledger, user, 1)
    runner = ProjectionRunner(ledger.engine, ledger.store, {"counts": Counting()})
    await runner.run_once()
    await runner.reset("counts")
    assert await runner.checkpoint("counts") == 0
    async with ledger.engine.begin() as conn:
        await conn.execute(counts.delete())
    assert await runner.run_once() == 2
    assert await _counts(ledger) == await _versions(ledger)
