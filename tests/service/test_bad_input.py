"""Every domain limit and invariant is a typed error, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest

from chatledger.domain import (
    ConversationDeleted,
    DomainError,
    InvalidMessage,
    LimitExceeded,
    MessageNotFound,
    ToolCallsStillAnswered,
)
from chatledger.service import ChatLedger

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}

BAD_BATCHES: list[tuple[str, list[Any], type[DomainError]]] = [
    ("empty batch", [], InvalidMessage),
    ("unknown role", [{"role": "wizard", "content": "x"}], InvalidMessage),
    ("content wrong type", [{"role": "user", "content": 42}], InvalidMessage),
    ("null user content", [{"role": "user", "content": None}], InvalidMessage),
    ("tool_calls on user", [{"role": "user", "content": "x", "tool_calls": [CALL]}], InvalidMessage),
    ("tool without call id", [{"role": "tool", "content": "x"}], InvalidMessage),
    ("tool answering nothing", [{"role": "tool", "content": "x", "tool_call_id": "nope"}], InvalidMessage),
    (
        "tool_call_id on assistant",
        [{"role": "assistant", "content": "x", "tool_call_id": "c"}],
        InvalidMessage,
    ),
    ("NUL in content", [{"role": "user", "content": "a\u0000b"}], InvalidMessage),
    ("NUL in metadata", [{"role": "user", "content": "a", "metadata": {"k": "\u0000"}}], InvalidMessage),
    (
        "too many metadata keys",
        [{"role": "user", "content": "a", "metadata": {str(i): i for i in range(17)}}],
        LimitExceeded,
    ),
    ("metadata key too long", [{"role": "user", "content": "a", "metadata": {"k" * 65: 1}}], LimitExceeded),
    (
        "metadata value too long",
        [{"role": "user", "content": "a", "metadata": {"k": "v" * 513}}],
        LimitExceeded,
    ),
    ("content too large", [{"role": "user", "content": "é" * (512 * 1024 + 1)}], LimitExceeded),
    ("too many messages", [{"role": "user", "content": "a"}] * 101, LimitExceeded),
    ("unknown field", [{"role": "user", "content": "a", "colour": "red"}], InvalidMessage),
    (
        "reused tool call id",
        [
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "1", "tool_call_id": "call_1"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
        ],
        InvalidMessage,
    ),
    (
        "answered twice",
        [
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "1", "tool_call_id": "call_1"},
            {"role": "tool", "content": "2", "tool_call_id": "call_1"},
        ],
        InvalidMessage,
    ),
    (
        "valid then invalid in one batch",
        [
            {"role": "user", "content": "fine"},
            {"role": "user", "content": "bad\u0000"},
        ],
        InvalidMessage,
    ),
]


@pytest.mark.parametrize(("case", "messages", "error"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
async def test_bad_batches_are_refused_and_write_nothing(
    ledger: ChatLedger, alice: str, case: str, messages: list[Any], error: type[DomainError]
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    await ledger.add_messages(conv.id, user_id=alice, messages=[{"role": "user", "content": "before"}])
    events = await ledger.store.read_stream(conv.id)
    with pytest.raises(error):
        await ledger.add_messages(conv.id, user_id=alice, messages=messages)
    assert await ledger.store.read_stream(conv.id) == events
    page = await ledger.get_messages(conv.id, user_id=alice)
    assert [m.content for m in page.data] == ["before"]


async def test_bad_conversation_fields_write_nothing(ledger: ChatLedger, alice: str) -> None:
    with pytest.raises(LimitExceeded):
        await ledger.start_conversation(user_id=alice, metadata={str(i): "v" for i in range(17)})
    with pytest.raises(InvalidMessage):
        await ledger.start_conversation(user_id=alice, title="bad\u0000title")
    assert (await ledger.list_conversations(user_id=alice)).data == []
    conv = await ledger.start_conversation(user_id=alice, metadata={str(i): "v" for i in range(16)})
    with pytest.raises(LimitExceeded):
        await ledger.update_conversation(conv.id, user_id=alice, metadata={"one-too-many": "v"})
    after = await ledger.get_conversation(conv.id, user_id=alice)
    assert after.version == 1 and len(after.metadata) == 16


async def test_removal_rules(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    added = await ledger.add_messages(
        conv.id,
        user_id=alice,
        messages=[
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        ],
    )
    assistant, answer = (m.id for m in added.data)
    with pytest.raises(ToolCallsStillAnswered):
        await ledger.remove_message(conv.id, assistant, user_id=alice)
    await ledger.remove_message(conv.id, answer, user_id=alice)
    with pytest.raises(MessageNotFound):
        await ledger.remove_message(conv.id, answer, user_id=alice)
    await ledger.remove_message(conv.id, assistant, user_id=alice)
    view = await ledger.get_conversation(conv.id, user_id=alice)
    assert (view.message_count, view.version) == (0, 5)


async def test_deleted_conversation_takes_no_events(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    await ledger.delete_conversation(conv.id, user_id=alice)
    with pytest.raises(ConversationDeleted):
        await ledger.add_messages(conv.id, user_id=alice, messages=[{"role": "user", "content": "x"}])
    assert len(await ledger.store.read_stream(conv.id)) == 2
    from chatledger.domain import ConversationIdUnavailable

    with pytest.raises(ConversationIdUnavailable):
        await ledger.start_conversation(user_id=alice, conversation_id=conv.id)


async def test_cursors_beyond_64_bits_read_like_the_largest(ledger: ChatLedger, alice: str) -> None:
    # A seq or version past what the columns hold selects as if it were the largest one (no driver
    # overflow); a negative one as if it were 0.
    conv = await ledger.start_conversation(user_id=alice)
    await ledger.add_messages(conv.id, user_id=alice, messages=[{"role": "user", "content": "x"}])
    huge = 2**70
    assert [m.seq for m in (await ledger.get_messages(conv.id, user_id=alice, before=huge)).data] == [1]
    assert (await ledger.get_messages(conv.id, user_id=alice, after=huge)).data == []
    assert [m.seq for m in (await ledger.get_messages(conv.id, user_id=alice, after=-5)).data] == [1]
    assert (await ledger.get_events(conv.id, user_id=alice, after_version=huge)).data == []
    assert len((await ledger.get_context(conv.id, user_id=alice, max_messages=huge)).data) == 1
