"""Another user's conversation is ConversationNotFound for every facade call, and stays unchanged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chatledger.domain import ConversationNotFound
from chatledger.service import ChatLedger


async def test_every_call_on_a_foreign_conversation_is_not_found(
    ledger: ChatLedger, alice: str, bob: str
) -> None:
    conv = await ledger.start_conversation(user_id=alice, title="secret")
    added = await ledger.add_messages(
        conv.id, user_id=alice, messages=[{"role": "user", "content": "my password is hunter2"}]
    )
    message_id = added.data[0].id
    before = await ledger.get_conversation(conv.id, user_id=alice)
    events_before = await ledger.store.read_stream(conv.id)

    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: ledger.get_conversation(conv.id, user_id=bob),
        lambda: ledger.get_conversation(conv.id, user_id=bob, at_version=1),
        lambda: ledger.add_messages(conv.id, user_id=bob, messages=[{"role": "user", "content": "x"}]),
        lambda: ledger.get_messages(conv.id, user_id=bob),
        lambda: ledger.get_messages(conv.id, user_id=bob, at_version=2),
        lambda: ledger.get_context(conv.id, user_id=bob, max_messages=5),
        lambda: ledger.update_conversation(conv.id, user_id=bob, title="mine now"),
        lambda: ledger.remove_message(conv.id, message_id, user_id=bob),
        lambda: ledger.clear_messages(conv.id, user_id=bob),
        lambda: ledger.delete_conversation(conv.id, user_id=bob),
        lambda: ledger.get_events(conv.id, user_id=bob),
        lambda: ledger.verify(conv.id, user_id=bob),
    ]
    for attempt in attempts:
        with pytest.raises(ConversationNotFound):
            await attempt()

    assert (await ledger.list_conversations(user_id=bob)).data == []
    assert await ledger.get_conversation(conv.id, user_id=alice) == before
    assert await ledger.store.read_stream(conv.id) == events_before


async def test_foreign_and_missing_conversations_raise_the_same_error(
    ledger: ChatLedger, alice: str, bob: str
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    with pytest.raises(ConversationNotFound) as foreign:
        await ledger.get_conversation(conv.id, user_id=bob)
    with pytest.raises(ConversationNotFound) as missing:
        await ledger.get_conversation("00000000-0000-4000-8000-000000000000", user_id=bob)
    assert type(foreign.value) is type(missing.value)


async def test_taking_someone_elses_id_is_refused(ledger: ChatLedger, alice: str, bob: str) -> None:
    from chatledger.domain import ConversationIdUnavailable

    conv = await ledger.start_conversation(user_id=alice)
    with pytest.raises(ConversationIdUnavailable):
        await ledger.start_conversation(user_id=bob, conversation_id=conv.id)
    again, created = await ledger.start_or_get(user_id=alice, conversation_id=conv.id)
    assert (again.id, created) == (conv.id, False)


@pytest.mark.parametrize("user_id", ["", "a\x00b", "\ud800", "u" * 256])
async def test_an_unstorable_user_id_is_invalid_input(ledger: ChatLedger, alice: str, user_id: str) -> None:
    from chatledger import InvalidMessage

    conv = await ledger.start_conversation(user_id=alice)
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: ledger.start_conversation(user_id=user_id),
        lambda: ledger.list_conversations(user_id=user_id),
        lambda: ledger.get_conversation(conv.id, user_id=user_id),
        lambda: ledger.get_messages(conv.id, user_id=user_id),
        lambda: ledger.get_context(conv.id, user_id=user_id),
        lambda: ledger.add_messages(conv.id, user_id=user_id, messages=[{"role": "user", "content": "x"}]),
        lambda: ledger.get_events(conv.id, user_id=user_id),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidMessage) as info:
            await attempt()
        assert info.value.field == "user_id"
    assert await ledger.store.head_position() == (await ledger.store.read_stream(conv.id))[-1].global_position
