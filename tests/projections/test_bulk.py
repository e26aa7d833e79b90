"""The bulk row builder of a rebuild (projections/bulk.py) writes exactly the rows the inline projector
wrote, and agrees with the domain's `replay`, on histories with every tricky turn."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from chatledger.domain import event_from_payload, replay
from chatledger.eventstore import RecordedEvent
from chatledger.projections import LIVE, bulk
from chatledger.projections.rebuild import compare_tables, rebuild
from chatledger.projections.schema import read_tables
from chatledger.service import ChatLedger

from .support import dump


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}


async def _ids(ledger: ChatLedger, cid: str, user: str) -> list[str]:
    return [m.id for m in (await ledger.get_messages(cid, user_id=user, limit=100)).data]


async def _tricky_histories(ledger: ChatLedger, user: str) -> list[str]:
    """Conversations covering removals, clears, answers removed and given again, explicit and derived
    titles, metadata updates and deletion."""
    out = []
    # Derived title, tool answers removed and re-answered, an assistant with its calls removed.
    a = await ledger.start_conversation(user_id=user, metadata={"z": 1, "a": [1, {"k": None}]})
    await ledger.add_messages(
        a.id,
        user_id=user,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "   "},  # derives no title: the next user message does
            {"role": "user", "content": "what is the answer?", "metadata": {"b": 2, "a": 1}},
            {"role": "assistant", "content": None, "tool_calls": [_call("c1"), _call("c2")]},
            {"role": "tool", "content": "41", "tool_call_id": "c1"},
        ],
    )
    first_answer = (await _ids(ledger, a.id, user))[-1]
    await ledger.remove_message(a.id, first_answer, user_id=user)  # reopens c1
    await ledger.add_messages(
        a.id,
        user_id=user,
        messages=[
            {"role": "tool", "content": "42", "tool_call_id": "c1", "raw": {"x": [1, 2]}},
            {"role": "tool", "content": "7", "tool_call_id": "c2", "token_count": 3},
            {"role": "assistant", "content": None, "tool_calls": [_call("c3")]},
        ],
    )
    await ledger.remove_message(a.id, (await _ids(ledger, a.id, user))[-1], user_id=user)  # drops c3
    await ledger.add_messages(
        a.id, user_id=user, messages=[{"role": "assistant", "content": "42", "name": "bot"}]
    )
    out.append(a.id)

    # Explicit title, updates of title and metadata, a clear, then more messages.
    b = await ledger.start_conversation(user_id=user, title="Chosen")
    await ledger.add_messages(b.id, user_id=user, messages=[{"role": "user", "content": "hello there"}])
    await ledger.update_conversation(b.id, user_id=user, metadata={"tag": "x"})
    await ledger.update_conversation(b.id, user_id=user, title="Renamed")
    await ledger.clear_messages(b.id, user_id=user)
    await ledger.add_messages(
        b.id,
        user_id=user,
        messages=[
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": None, "tool_calls": [_call("d1")]},
        ],
    )
    out.append(b.id)

    # A derived title that an explicit update later replaces; everything cleared at the end.
    c = await ledger.start_conversation(user_id=user)
    await ledger.add_messages(c.id, user_id=user, messages=[{"role": "user", "content": "first words"}])
    await ledger.update_conversation(c.id, user_id=user, title="Later")
    await ledger.add_messages(
        c.id,
        user_id=user,
        messages=[
            {"role": "assistant", "content": None, "tool_calls": [_call("e1")]},
            {"role": "tool", "content": "ok", "tool_call_id": "e1"},
        ],
    )
    await ledger.clear_messages(c.id, user_id=user)
    out.append(c.id)

    # Deleted: no rows at all.
    d = await ledger.start_conversation(user_id=user, title="gone")
    await ledger.add_messages(
        d.id,
        user_id=user,
        messages=[
            {"role": "user", "content": "bye"},
            {"role": "assistant", "content": None, "tool_calls": [_call("f1")]},
        ],
    )
    await ledger.delete_conversation(d.id, user_id=user)
    out.append(d.id)

    # Started and nothing else.
    e = await ledger.start_conversation(user_id=user)
    out.append(e.id)
    return out


async def _streams(ledger: ChatLedger) -> dict[str, list[RecordedEvent]]:
    fresh, rest = bulk.split_batch(await ledger.store.read_all(after=0, limit=10_000))
    assert rest == []  # the whole log is one batch: every stream starts in it
    return fresh


async def test_bulk_rows_equal_the_inline_projector(ledger: ChatLedger, user: str) -> None:
    await _tricky_histories(ledger, user)
    streams = await _streams(ledger)
    target = read_tables("_bulktest", sa.MetaData())
    async with ledger.engine.connect() as conn:  # rolled back at the end
        for table in target.all():
            await conn.run_sync(table.create)
        await bulk.insert_rows(conn, target, bulk.fold_streams(streams.values()))
        diffs = [
            d for a, b in zip(LIVE.all(), target.all(), strict=True) async for d in compare_tables(conn, a, b)
        ]
    assert diffs == []


async def test_bulk_rows_agree_with_the_domain_fold(ledger: ChatLedger, user: str) -> None:
    await _tricky_histories(ledger, user)
    for events in (await _streams(ledger)).values():
        rows = bulk.fold_stream(events)
        state = replay((event_from_payload(e.type, dict(e.data)), e.recorded_at) for e in events)
        assert state is not None
        if state.deleted:
            assert len(rows) == 0
            continue
        (conv,) = rows.conversations
        assert (conv["title"], conv["title_explicit"], conv["metadata"]) == (
            state.title,
            state.title_explicit,
            state.metadata,
        )
        assert (conv["message_count"], conv["last_seq"], conv["version"], conv["tool_call_count"]) == (
            state.message_count,
            state.last_seq,
            state.version,
            len(state.tool_calls),
        )
        assert (conv["created_at"], conv["updated_at"], conv["last_message_at"]) == (
            state.created_at,
            state.updated_at,
            state.last_message_at,
        )
        folded = sorted(state.messages.values(), key=lambda m: m.seq)
        assert [(r["message_id"], r["seq"], r["created_at"]) for r in rows.messages] == [
            (m.message_id, m.seq, m.created_at) for m in folded
        ]
        assert {
            (r["call_id"], r["assistant_message_id"], r["answer_message_id"]) for r in rows.tool_calls
        } == {
            (ref.call_id, ref.assistant_message_id, ref.answer_message_id)
            for ref in state.tool_calls.values()
        }


async def test_rebuild_with_streams_spanning_batches(ledger: ChatLedger, user: str) -> None:
    """batch_size=3: most streams start in one batch and continue in later ones (projector), some
    start and end inside one (bulk)."""
    await _tricky_histories(ledger, user)
    inline = await dump(ledger.engine)
    for size in (3, 4, 1000):
        checked = await rebuild(ledger.engine, ledger.store, dry_run=True, batch_size=size)
        assert (checked.differences, checked.differences_total) == ([], 0)
        assert (await rebuild(ledger.engine, ledger.store, batch_size=size)).swapped
        assert await dump(ledger.engine) == inline


def test_split_batch_keeps_streams_that_started_earlier_in_order() -> None:
    def ev(pos: int, stream: str, version: int, type_: str) -> RecordedEvent:
        return RecordedEvent(
            global_position=pos,
            event_id=uuid.UUID(int=pos),
            stream_id=stream,
            stream_version=version,
            partition="u",
            type=type_,
            schema_version=1,
            data={},
            metadata={},
            recorded_at=datetime(2024, 1, 1, tzinfo=UTC),
            prev_hash="",
            hash="",
        )

    batch = [
        ev(1, "old", 5, "MessageAdded"),
        ev(2, "new", 1, "ConversationStarted"),
        ev(3, "old", 6, "MessageRemoved"),
    ]
    fresh, rest = bulk.split_batch(batch)
    assert list(fresh) == ["new"] and [e.global_position for e in fresh["new"]] == [2]
    assert [e.global_position for e in rest] == [1, 3]
