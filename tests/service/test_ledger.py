"""The library facade of DESIGN section 7, end to end on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chatledger.domain import ConversationNotFound
from chatledger.eventstore import WrongExpectedVersion
from chatledger.idempotency import IdempotencyConflict
from chatledger.service import ChatLedger


async def test_the_design_example_round_trip(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice, title=None, metadata={})
    added = await ledger.add_messages(
        conv.id,
        user_id=alice,
        messages=[{"role": "user", "content": "hi"}],
        expected_version=None,
        idempotency_key=None,
    )
    assert (added.version, [m.seq for m in added.data]) == (2, [1])
    assert added.data[0].message_id == added.data[0].id  # the MessageAdded name works too
    page = await ledger.get_messages(conv.id, user_id=alice, limit=50, order="asc")
    assert [(m.role, m.content) for m in page.data] == [("user", "hi")]
    window = await ledger.get_context(conv.id, user_id=alice, max_messages=50)
    assert window.data == [{"role": "user", "content": "hi"}]
    recent = await ledger.list_conversations(user_id=alice, limit=20)
    assert [c.id for c in recent.data] == [conv.id]
    assert recent.data[0].title == "hi"
    await ledger.delete_conversation(conv.id, user_id=alice)
    with pytest.raises(ConversationNotFound):
        await ledger.get_conversation(conv.id, user_id=alice)
    assert (await ledger.list_conversations(user_id=alice)).data == []


async def test_pages_follow_design_section_9(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    await ledger.add_messages(
        conv.id, user_id=alice, messages=[{"role": "user", "content": str(i)} for i in range(1, 11)]
    )

    async def seqs(**kw: object) -> tuple[list[int], bool]:
        page = await ledger.get_messages(conv.id, user_id=alice, **kw)  # type: ignore[arg-type]
        return [m.seq for m in page.data], page.has_more

    assert await seqs(limit=3) == ([1, 2, 3], True)
    assert await seqs(limit=3, order="desc") == ([10, 9, 8], True)
    assert await seqs(limit=3, after=8) == ([9, 10], False)
    assert await seqs(limit=3, after=2) == ([3, 4, 5], True)
    assert await seqs(limit=3, before=5) == ([2, 3, 4], True)
    assert await seqs(limit=3, before=5, order="desc") == ([4, 3, 2], True)
    assert await seqs(limit=3, before=3) == ([1, 2], False)
    assert await seqs(limit=10) == (list(range(1, 11)), False)


async def test_removal_never_renumbers_and_seq_keeps_counting_after_clear(
    ledger: ChatLedger, alice: str
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    added = await ledger.add_messages(
        conv.id, user_id=alice, messages=[{"role": "user", "content": c} for c in "abc"]
    )
    await ledger.remove_message(conv.id, added.data[1].id, user_id=alice)
    page = await ledger.get_messages(conv.id, user_id=alice)
    assert [(m.seq, m.content) for m in page.data] == [(1, "a"), (3, "c")]
    await ledger.clear_messages(conv.id, user_id=alice)
    view = await ledger.get_conversation(conv.id, user_id=alice)
    assert (view.message_count, view.version) == (0, 7)
    more = await ledger.add_messages(conv.id, user_id=alice, messages=[{"role": "user", "content": "d"}])
    assert more.data[0].seq == 4


async def test_expected_version_is_optimistic_concurrency(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    await ledger.add_messages(
        conv.id, user_id=alice, messages=[{"role": "user", "content": "a"}], expected_version=1
    )
    with pytest.raises(WrongExpectedVersion):
        await ledger.add_messages(
            conv.id, user_id=alice, messages=[{"role": "user", "content": "b"}], expected_version=1
        )
    with pytest.raises(WrongExpectedVersion):
        await ledger.update_conversation(conv.id, user_id=alice, title="t", expected_version=7)
    assert (await ledger.get_conversation(conv.id, user_id=alice)).version == 2


async def test_concurrent_appends_to_one_conversation_get_contiguous_seqs(
    ledger: ChatLedger, alice: str
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    await asyncio.gather(
        *(
            ledger.add_messages(conv.id, user_id=alice, messages=[{"role": "user", "content": str(i)}])
            for i in range(20)
        )
    )
    page = await ledger.get_messages(conv.id, user_id=alice, limit=100)
    assert [m.seq for m in page.data] == list(range(1, 21))
    assert sorted(m.content or "" for m in page.data) == sorted(str(i) for i in range(20))


async def test_idempotency_key_replays_the_original_result(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    msgs = [{"role": "user", "content": "once"}]
    first = await ledger.add_messages(conv.id, user_id=alice, messages=msgs, idempotency_key="k1")
    again = await ledger.add_messages(conv.id, user_id=alice, messages=msgs, idempotency_key="k1")
    assert again == first
    assert len(await ledger.store.read_stream(conv.id)) == 2
    with pytest.raises(IdempotencyConflict):
        await ledger.add_messages(
            conv.id, user_id=alice, messages=[{"role": "user", "content": "other"}], idempotency_key="k1"
        )


async def test_concurrent_keyed_duplicates_get_the_original_result(
    ledger: ChatLedger, db_url: str, alice: str
) -> None:
    # Duplicates racing in this process and in another (a second ledger on the same database): with
    # an expected version the losers meet the version the winner moved to; a keyed start finds the
    # conversation its twin just created. All of them answer as the winner did.
    other = ChatLedger.open(db_url)
    async with other:
        for round_ in range(5):
            conv = await ledger.start_conversation(user_id=alice)
            msgs = [{"role": "user", "content": f"once {round_}"}]
            key = f"k-{round_}"
            results = await asyncio.gather(
                *(
                    (ledger, other)[i % 2].add_messages(
                        conv.id, user_id=alice, messages=msgs, expected_version=1, idempotency_key=key
                    )
                    for i in range(6)
                )
            )
            assert all(r == results[0] for r in results) and results[0].version == 2
            assert len(await ledger.store.read_stream(conv.id)) == 2

            started = await asyncio.gather(
                *(
                    (ledger, other)[i % 2].start_or_get(user_id=alice, idempotency_key=f"s-{round_}")
                    for i in range(6)
                )
            )
            assert {(view.id, created) for view, created in started} == {(started[0][0].id, True)}


async def test_title_is_derived_from_the_first_user_message_unless_given(
    ledger: ChatLedger, alice: str
) -> None:
    text = "Please help me plan a three week trip through Japan in the spring with kids"
    conv = await ledger.start_conversation(user_id=alice)
    await ledger.add_messages(
        conv.id,
        user_id=alice,
        messages=[
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": text},
            {"role": "user", "content": "second"},
        ],
    )
    title = (await ledger.get_conversation(conv.id, user_id=alice)).title
    assert title is not None and text.startswith(title) and len(title) <= 60 and text[len(title)] == " "
    named = await ledger.start_conversation(user_id=alice, title="Mine")
    await ledger.add_messages(named.id, user_id=alice, messages=[{"role": "user", "content": text}])
    assert (await ledger.get_conversation(named.id, user_id=alice)).title == "Mine"


async def test_metadata_patch_merges_per_rfc_7396(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice, metadata={"a": "1", "b": "2"})
    view = await ledger.update_conversation(conv.id, user_id=alice, metadata={"a": None, "c": "3"})
    assert view.metadata == {"b": "2", "c": "3"}
    assert view.version == 2


async def test_replay_at_version_shows_the_conversation_as_it_stood(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice, title="t0")
    await ledger.add_messages(conv.id, user_id=alice, messages=[{"role": "user", "content": "a"}])
    await ledger.update_conversation(conv.id, user_id=alice, title="t1")
    at2 = await ledger.get_conversation(conv.id, user_id=alice, at_version=2)
    assert (at2.title, at2.message_count, at2.version) == ("t0", 1, 2)
    now = await ledger.get_conversation(conv.id, user_id=alice)
    assert await ledger.get_conversation(conv.id, user_id=alice, at_version=3) == now


async def test_context_window_keeps_system_and_whole_tool_groups(ledger: ChatLedger, alice: str) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    await ledger.add_messages(
        conv.id,
        user_id=alice,
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "r1", "tool_call_id": "c1"},
            {"role": "assistant", "content": "done"},
        ],
    )
    window = await ledger.get_context(conv.id, user_id=alice, max_messages=3)
    assert [m["role"] for m in window.data] == ["system", "assistant", "tool", "assistant"]
    window = await ledger.get_context(conv.id, user_id=alice, max_messages=2)
    assert [m["role"] for m in window.data] == ["system", "assistant"]
    assert window.pinned == 1


async def test_list_is_keyset_paginated_by_recent_activity(ledger: ChatLedger, alice: str) -> None:
    ids = [(await ledger.start_conversation(user_id=alice, title=str(i))).id for i in range(5)]
    await ledger.add_messages(ids[0], user_id=alice, messages=[{"role": "user", "content": "bump"}])
    seen: list[str] = []
    cursor = None
    while True:
        page = await ledger.list_conversations(user_id=alice, limit=2, after=cursor)
        seen += [c.id for c in page.data]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == [ids[0], ids[4], ids[3], ids[2], ids[1]]


def test_the_library_exports_its_error_types() -> None:
    import chatledger
    from chatledger import domain, eventstore

    assert sorted(chatledger.__all__) == sorted(chatledger._HOMES)
    for name in chatledger.__all__:
        assert getattr(chatledger, name) is not None
    assert chatledger.ConversationNotFound is domain.ConversationNotFound
    assert chatledger.WrongExpectedVersion is eventstore.WrongExpectedVersion
    assert issubclass(chatledger.ConversationDeleted, chatledger.DomainError)
    assert issubclass(chatledger.IdempotencyConflict, chatledger.DomainError)
    assert issubclass(chatledger.StoreUnavailable, chatledger.EventStoreError)


async def _open_and_read(url: str, migrate: bool) -> None:
    async with ChatLedger.open(url, migrate=migrate) as ledger:
        await ledger.list_conversations(user_id="alice")


@pytest.mark.parametrize("migrate", [True, False])
async def test_an_unopenable_sqlite_file_is_store_unavailable(migrate: bool) -> None:
    import threading

    from chatledger import StoreUnavailable

    from ..eventstore.test_sqlite import join_failed_connection_threads

    before = set(threading.enumerate())
    try:
        with pytest.raises(StoreUnavailable):
            await _open_and_read("sqlite+aiosqlite:////nonexistent-chatledger-dir/x.db", migrate)
    finally:
        join_failed_connection_threads(before)


@pytest.mark.postgres
@pytest.mark.parametrize("migrate", [True, False])
@pytest.mark.parametrize("where", ["missing database", "closed port"])
async def test_an_unreachable_postgres_is_store_unavailable(pg_url: str, where: str, migrate: bool) -> None:
    from sqlalchemy.engine import make_url

    from chatledger import StoreUnavailable

    server = make_url(pg_url)
    wrong = (
        server.set(database=f"absent_{uuid.uuid4().hex}")
        if where == "missing database"
        else server.set(port=1)
    )
    with pytest.raises(StoreUnavailable):
        await _open_and_read(wrong.render_as_string(hide_password=False), migrate)
