"""A rebuild yields exactly the inline read models, reports what a dry run finds, keeps index names,
and swaps atomically while writers keep appending."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings

from chatledger import migrate
from chatledger.eventstore import StoreUnavailable
from chatledger.projections import LIVE
from chatledger.projections.rebuild import RebuildProgress, rebuild
from chatledger.service import ChatLedger

from .support import Step, assert_matches_fold, dump, run_step, steps

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


async def _history(ledger: ChatLedger, user: str, conversations: int = 3) -> list[str]:
    ids = []
    for i in range(conversations):
        conv = await ledger.start_conversation(user_id=user, metadata={"n": str(i)})
        await ledger.add_messages(
            conv.id,
            user_id=user,
            messages=[
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "content": "42", "tool_call_id": "call_1"},
                {"role": "assistant", "content": "it is 42"},
            ],
        )
        ids.append(conv.id)
    return ids


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps())
async def test_rebuild_equals_inline_for_any_history(
    ledger: ChatLedger, user: str, script: list[Step]
) -> None:
    conv = await ledger.start_conversation(user_id=user)
    for step in script:
        await run_step(ledger, user, conv.id, step)
    inline = await dump(ledger.engine)

    checked = await rebuild(ledger.engine, ledger.store, dry_run=True, batch_size=7)
    assert (checked.swapped, checked.differences, checked.differences_total) == (False, [], 0)
    report = await rebuild(ledger.engine, ledger.store, batch_size=5)

    assert report.swapped and report.events == checked.events
    assert await dump(ledger.engine) == inline
    await assert_matches_fold(ledger, user, conv.id)


async def test_dry_run_names_every_differing_row_and_the_rebuild_repairs_them(
    ledger: ChatLedger, user: str
) -> None:
    a, b, _ = await _history(ledger, user)
    c, m, t = LIVE.all()
    async with ledger.engine.begin() as conn:
        await conn.execute(c.update().where(c.c.id == a).values(title="tampered"))
        await conn.execute(m.delete().where(m.c.conversation_id == b, m.c.seq == 4))
        await conn.execute(
            t.insert().values(conversation_id=a, call_id="ghost", user_id=user, assistant_message_id="x")
        )
    report = await rebuild(ledger.engine, ledger.store, dry_run=True)

    found = {(d.table, d.key, d.kind): d.columns for d in report.differences}
    assert found == {
        ("conversations", (a,), "changed"): {"title": ("tampered", "question 0")},
        ("messages", (b, 4), "only_rebuilt"): {},
        ("tool_calls", (a, "ghost"), "only_live"): {},
    }
    assert report.differences_total == 3 and not report.swapped
    await rebuild(ledger.engine, ledger.store)
    assert (await rebuild(ledger.engine, ledger.store, dry_run=True)).differences_total == 0
    for cid in (a, b):
        await assert_matches_fold(ledger, user, cid)


async def test_migration_0002_then_rebuild_fills_tool_call_count(
    ledger: ChatLedger, user: str, db_url: str
) -> None:
    ids = await _history(ledger, user)
    await ledger.add_messages(
        ids[0],
        user_id=user,
        messages=[{"role": "assistant", "content": None, "tool_calls": [CALL | {"id": "c2"}]}],
    )
    # Back to 0001 and up again: the column comes back as the migration adds it, 0 for all history.
    await migrate.downgrade(ledger.engine, "0001")
    await migrate.upgrade(ledger.engine)
    report = await rebuild(ledger.engine, ledger.store, dry_run=True)
    assert {(d.key, tuple(d.columns.items())) for d in report.differences} == {
        ((ids[0],), (("tool_call_count", (0, 2)),)),
        ((ids[1],), (("tool_call_count", (0, 1)),)),
        ((ids[2],), (("tool_call_count", (0, 1)),)),
    }
    await rebuild(ledger.engine, ledger.store)
    for cid in ids:
        await assert_matches_fold(ledger, user, cid)
    # Removing the assistant message that opened a call takes its call out of the count.
    page = await ledger.get_messages(ids[0], user_id=user, limit=10)
    await ledger.remove_message(ids[0], page.data[-1].id, user_id=user)
    await assert_matches_fold(ledger, user, ids[0])


async def _schema_names(ledger: ChatLedger) -> dict[str, Any]:
    def names(sync: sa.Connection) -> dict[str, Any]:
        inspector = sa.inspect(sync)
        return {
            t.name: (
                sorted(i["name"] or "" for i in inspector.get_indexes(t.name)),
                sorted(u["name"] or "" for u in inspector.get_unique_constraints(t.name)),
                inspector.get_pk_constraint(t.name)["name"],
                [(col["name"], str(col["type"]), col["nullable"]) for col in inspector.get_columns(t.name)],
            )
            for t in LIVE.all()
        }

    async with ledger.engine.connect() as conn:
        return await conn.run_sync(names)


async def test_swap_keeps_table_index_and_constraint_names(ledger: ChatLedger, user: str) -> None:
    await _history(ledger, user, 1)
    before = await _schema_names(ledger)
    await rebuild(ledger.engine, ledger.store)
    assert await _schema_names(ledger) == before
    async with ledger.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    assert not {name for name in tables if "rebuild" in name}


async def test_leftover_shadow_tables_are_replaced(ledger: ChatLedger, user: str) -> None:
    [cid] = await _history(ledger, user, 1)
    async with ledger.engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE conversations_rebuild (junk INTEGER)"))
    report = await rebuild(ledger.engine, ledger.store)
    assert report.swapped
    await assert_matches_fold(ledger, user, cid)


async def test_progress_reports_events_rate_and_eta(ledger: ChatLedger, user: str) -> None:
    await _history(ledger, user, 4)
    ticks: list[RebuildProgress] = []
    report = await rebuild(ledger.engine, ledger.store, batch_size=3, progress=ticks.append)

    assert report.events == 20 and report.events_per_s > 0 and report.duration_s > 0
    assert [t.events_done for t in ticks] == sorted(t.events_done for t in ticks)
    assert ticks[-1].events_done == ticks[-1].events_total == 20
    assert {t.phase for t in ticks} >= {"replay", "swap"}
    assert ticks[0].eta_s is not None and ticks[-1].eta_s == 0


async def test_rebuild_while_eight_writers_append(ledger: ChatLedger) -> None:
    users = [f"writer{i}-{uuid.uuid4().hex[:6]}" for i in range(8)]
    for u in users:
        await _history(ledger, u, 3)
    done = asyncio.Event()
    completed = 0
    at_swap: list[int] = []

    async def writer(user: str) -> list[str]:
        nonlocal completed
        mine: list[str] = []
        i = 0
        while not done.is_set() or i < 12:
            if i % 6 == 0:
                mine.append((await ledger.start_conversation(user_id=user)).id)
            script: Step = [
                ("add", [{"role": "user", "content": f"m{i}"}]),
                ("add", [{"role": "assistant", "content": None, "tool_calls": [CALL | {"id": f"k{i}"}]}]),
                ("answer", i),
                ("remove", i),
                ("update", {"title": None, "metadata": {"i": str(i)}}),
            ][i % 5]
            await run_step(ledger, user, mine[-1], script)
            completed += 1
            i += 1
        return mine

    def watch(tick: RebuildProgress) -> None:
        if tick.phase == "swap" and not at_swap:
            at_swap.append(completed)

    start = await ledger.store.head_position()
    tasks = [asyncio.create_task(writer(u)) for u in users]
    report = await rebuild(ledger.engine, ledger.store, batch_size=20, progress=watch)
    done.set()
    written = await asyncio.gather(*tasks)  # a writer that failed fails the test here

    assert report.swapped and report.position > start
    assert at_swap and completed > at_swap[0]  # writers were appending before and after the swap began
    assert (await rebuild(ledger.engine, ledger.store, dry_run=True)).differences_total == 0
    for user, conversations in zip(users, written, strict=True):
        page = await ledger.list_conversations(user_id=user, limit=100)
        assert {v.id for v in page.data} >= set(conversations)
        for cid in conversations:
            await assert_matches_fold(ledger, user, cid)


@pytest.mark.postgres
async def test_a_swap_that_cannot_get_its_lock_retries_and_leaves_readers_alone(
    fresh_pg_url: str, user: str
) -> None:
    async with ChatLedger.open(fresh_pg_url) as ledger:
        [cid] = await _history(ledger, user, 1)
        blocker = await ledger.engine.connect()
        await blocker.execute(sa.select(LIVE.conversations.c.id))  # holds ACCESS SHARE until rollback
        swaps: list[RebuildProgress] = []
        released: list[asyncio.Task[None]] = []

        def release_on_second_attempt(tick: RebuildProgress) -> None:
            if tick.phase == "swap":
                swaps.append(tick)
                if len(swaps) == 2:
                    released.append(asyncio.get_running_loop().create_task(blocker.rollback()))

        try:
            with pytest.raises(StoreUnavailable):
                await rebuild(ledger.engine, ledger.store, lock_timeout_s=0.2, lock_attempts=1)
            assert await ledger.get_conversation(cid, user_id=user)  # live tables untouched
            report = await rebuild(
                ledger.engine, ledger.store, lock_timeout_s=1.0, progress=release_on_second_attempt
            )
        finally:
            await blocker.close()
        assert report.swapped and len(swaps) == 2 and released[0].done()
        await assert_matches_fold(ledger, user, cid)
