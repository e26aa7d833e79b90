"""A ledger remembers the head it left on each conversation (chatledger/heads.py) and decides its next
one-message append on that memory. Another process writing in between must never make it decide on
an old state: two ledgers on one database stand in for two processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.domain import (
    ConversationNotFound,
    ConversationState,
    InvalidMessage,
    event_from_payload,
    replay,
)
from chatledger.eventstore import AppendResult, RecordedEvent
from chatledger.eventstore.postgres import PostgresEventStore
from chatledger.heads import RecentHeads
from chatledger.replaying import view_of_state
from chatledger.service import ChatLedger

from ..projections.support import run_step, steps


@pytest.fixture
async def other(db_url: str, ledger: ChatLedger) -> AsyncIterator[ChatLedger]:
    """A second ledger on the same database, as another API worker would be."""
    async with ChatLedger.open(db_url) as opened:
        yield opened


def say(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_an_append_after_another_process_wrote_continues_from_what_that_process_wrote(
    ledger: ChatLedger, other: ChatLedger, alice: str
) -> None:
    conv = await ledger.start_conversation(user_id=alice, title="t")
    first = await ledger.add_messages(conv.id, user_id=alice, messages=say("one"))
    assert ledger._heads.get(conv.id) is not None
    theirs = await other.add_messages(conv.id, user_id=alice, messages=say("two"))
    await other.update_conversation(conv.id, user_id=alice, metadata={"k": "v"})
    mine = await ledger.add_messages(conv.id, user_id=alice, messages=say("three"))
    assert [m.seq for m in (*first.data, *theirs.data, *mine.data)] == [1, 2, 3]
    assert mine.version == 5
    now = await ledger.get_conversation(conv.id, user_id=alice)
    assert (now.version, now.message_count, now.metadata) == (5, 3, {"k": "v"})
    assert (await ledger.verify(conv.id, user_id=alice)).ok


async def test_a_conversation_deleted_by_another_process_takes_no_more_messages(
    ledger: ChatLedger, other: ChatLedger, alice: str
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    await ledger.add_messages(conv.id, user_id=alice, messages=say("one"))
    await other.delete_conversation(conv.id, user_id=alice)
    with pytest.raises(ConversationNotFound):
        await ledger.add_messages(conv.id, user_id=alice, messages=say("two"))
    assert [e.type for e in await ledger.store.read_stream(conv.id)][-1] == "ConversationDeleted"


async def test_a_tool_call_opened_by_another_process_is_seen(
    ledger: ChatLedger, other: ChatLedger, alice: str
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    await ledger.add_messages(conv.id, user_id=alice, messages=say("weather?"))
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    await other.add_messages(
        conv.id, user_id=alice, messages=[{"role": "assistant", "content": None, "tool_calls": [call]}]
    )
    # The answer is valid only because the call exists: decided on the old memory it would be refused.
    answer = await ledger.add_messages(
        conv.id, user_id=alice, messages=[{"role": "tool", "content": "sunny", "tool_call_id": "c1"}]
    )
    assert answer.data[0].seq == 3
    with pytest.raises(InvalidMessage, match="not an open tool call"):
        await ledger.add_messages(
            conv.id, user_id=alice, messages=[{"role": "tool", "content": "again", "tool_call_id": "c1"}]
        )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps(max_steps=14), writers=st.lists(st.booleans(), min_size=14, max_size=14))
async def test_two_processes_interleaving_leave_read_models_equal_to_the_fold(
    ledger: ChatLedger, other: ChatLedger, alice: str, script: list[Any], writers: list[bool]
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    for step, mine in zip(script, writers, strict=False):
        await run_step(ledger if mine else other, alice, conv.id, step)

    events = await ledger.store.read_stream(conv.id)
    state = replay((event_from_payload(e.type, dict(e.data)), e.recorded_at) for e in events)
    assert state is not None
    assert [e.stream_version for e in events] == list(range(1, len(events) + 1))
    if not state.deleted:
        assert view_of_state(state) == await ledger.get_conversation(conv.id, user_id=alice)
        page = await other.get_messages(conv.id, user_id=alice, limit=100)
        folded = sorted(state.messages.values(), key=lambda m: m.seq)
        assert [(m.id, m.seq, m.content) for m in page.data] == [
            (m.message_id, m.seq, m.content) for m in folded
        ]
    added = [e for e in events if e.type == "MessageAdded"]
    assert len({e.data["message_id"] for e in added}) == len(added)
    assert (await ledger.store.verify(conv.id)).ok


def _result(cid: str, version: int) -> AppendResult:
    event = RecordedEvent(
        event_id=uuid.uuid4(),
        stream_id=cid,
        stream_version=version,
        global_position=version,
        partition="alice",
        type="MessageAdded",
        schema_version=1,
        data={},
        metadata={},
        recorded_at=datetime.now(UTC),
        prev_hash="0" * 64,
        hash=f"{version:064d}",
    )
    return AppendResult(cid, (event,), version)


def test_the_memory_is_bounded_and_keeps_only_live_states_it_can_vouch_for() -> None:
    heads = RecentHeads(2)
    live = {cid: ConversationState(cid, owner="alice", version=3) for cid in "abc"}
    for cid in "abc":
        heads.remember(cid, _result(cid, 3), live[cid])
    assert (len(heads), heads.get("a")) == (2, None)  # the least recently used went first
    hint = heads.get("b")
    assert hint is not None and (hint.version, hint.partition, hint.last_hash) == (3, "alice", f"{3:064d}")
    assert hint.prefetched is not None and hint.prefetched[0]["version"] == 3
    heads.remember("b", _result("b", 4), live["b"])  # a state that is not the result's version
    heads.remember("c", _result("c", 4), replace(live["c"], version=4, deleted=True))
    assert (heads.get("b"), heads.get("c"), len(heads)) == (None, None, 0)
    off = RecentHeads(0)
    off.remember("a", _result("a", 3), live["a"])
    assert len(off) == 0


async def test_writers_in_one_process_take_turns_instead_of_colliding(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    added = await asyncio.gather(
        *(ledger.add_messages(conv.id, user_id=alice, messages=say(f"m{i}")) for i in range(24))
    )
    assert sorted(a.data[0].seq for a in added) == list(range(1, 25))
    assert sorted(a.version for a in added) == list(range(2, 26))
    # No optimistic append found the stream moved under it (that marks the stream contended), and
    # the turn locks are gone with their last user.
    if isinstance(ledger.store, PostgresEventStore):
        assert conv.id not in ledger.store._contended
    assert len(ledger._turns) == 0
    assert (await ledger.verify(conv.id, user_id=alice)).ok


async def test_a_stale_memory_never_refuses_a_current_expected_version(
    ledger: ChatLedger, other: ChatLedger
) -> None:
    # This ledger remembers version 2; the other moved the conversation to 3. The caller, who read
    # version 3, is right: the refusal that the old memory suggests must not reach it.
    conv = await ledger.start_conversation(user_id="alice")
    one = [{"role": "user", "content": "x"}]
    await ledger.add_messages(conv.id, user_id="alice", messages=one)
    await other.add_messages(conv.id, user_id="alice", messages=one)
    added = await ledger.add_messages(conv.id, user_id="alice", messages=one, expected_version=3)
    assert added.version == 4
    # and a tool call that the other process opened can be answered here
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    await other.add_messages(
        conv.id, user_id="alice", messages=[{"role": "assistant", "content": None, "tool_calls": [call]}]
    )
    answer = [{"role": "tool", "tool_call_id": "c1", "content": "done"}]
    assert (await ledger.add_messages(conv.id, user_id="alice", messages=answer)).version == 6
