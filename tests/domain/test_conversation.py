"""The Conversation aggregate: `decide` for every command, `evolve` for every event (DESIGN 2, 4, 9)."""

from __future__ import annotations

from typing import Any

import pytest

from chatledger.domain import (
    DEFAULT_LIMITS,
    AddMessages,
    ClearMessages,
    Command,
    ConversationDeleted,
    ConversationIdUnavailable,
    ConversationNotFound,
    ConversationStarted,
    ConversationUpdated,
    DeleteConversation,
    DomainError,
    InvalidMessage,
    LimitExceeded,
    Limits,
    MessageAdded,
    MessageNotFound,
    MessageRemoved,
    NewMessage,
    RemoveMessage,
    StartConversation,
    ToolCallsStillAnswered,
    UpdateConversation,
    decide,
    derive_title,
    evolve,
    merge_patch,
    replay,
)
from chatledger.domain import ConversationDeleted as Deleted
from chatledger.domain.events import ConversationDeleted as DeletedEvent

from .support import OWNER, Ids, Run, assistant, at, call, calling, system, tool, user

# --- start ----------------------------------------------------------------------------------------------


def test_start_emits_conversation_started() -> None:
    events = decide(None, StartConversation("c1", OWNER, "Plans", {"k": "v"}), Ids())
    assert events == [
        ConversationStarted(conversation_id="c1", user_id=OWNER, title="Plans", metadata={"k": "v"})
    ]
    state = evolve(None, events[0], at(0))
    assert (state.conversation_id, state.owner, state.title, state.title_explicit) == (
        "c1",
        OWNER,
        "Plans",
        True,
    )
    assert state.metadata == {"k": "v"}
    assert (state.version, state.message_count, state.last_seq) == (1, 0, 0)
    assert state.created_at == state.updated_at == at(0)
    assert state.last_message_at is None


def test_start_again_by_the_owner_is_get_or_create() -> None:
    run = Run.start()
    assert run.do(StartConversation("conv-1", OWNER, title="other")) == []
    assert run.s.version == 1


def test_start_on_another_users_id_is_unavailable() -> None:
    run = Run.start()
    with pytest.raises(ConversationIdUnavailable) as info:
        run.do(StartConversation("conv-1", "mallory"))
    assert info.value.conversation_id == "conv-1"
    assert "mallory" not in str(info.value)


def test_start_on_a_deleted_id_is_unavailable_even_for_the_owner() -> None:
    run = Run.start()
    run.do(DeleteConversation(OWNER))
    for who in (OWNER, "mallory"):
        with pytest.raises(ConversationIdUnavailable):
            run.do(StartConversation("conv-1", who))


@pytest.mark.parametrize(
    ("command", "error", "field"),
    [
        (StartConversation("c1", OWNER, title="t" * 513), LimitExceeded, "title"),
        (StartConversation("c1", OWNER, title="a\x00"), InvalidMessage, "title"),
        (StartConversation("c1", OWNER, metadata={f"k{i}": 1 for i in range(17)}), LimitExceeded, "metadata"),
        (StartConversation("c1", OWNER, metadata={"k": "\x00"}), InvalidMessage, "metadata.k"),
        (StartConversation("c\x00", OWNER), InvalidMessage, "conversation_id"),
    ],
)
def test_start_checks_title_and_metadata(
    command: StartConversation, error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as info:
        decide(None, command, Ids())
    assert isinstance(info.value, InvalidMessage) and info.value.field == field


# --- ownership and tombstones ---------------------------------------------------------------------------

EVERY_COMMAND: list[Command] = [
    AddMessages(OWNER, (user(),)),
    UpdateConversation(OWNER, title="t"),
    RemoveMessage(OWNER, "m1"),
    ClearMessages(OWNER),
    DeleteConversation(OWNER),
]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: type(c).__name__)
def test_commands_on_a_missing_conversation(command: Command) -> None:
    with pytest.raises(ConversationNotFound):
        decide(None, command, Ids())


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: type(c).__name__)
def test_another_users_conversation_is_not_found(command: Command) -> None:
    run = Run.start()
    run.add(user(id="m1"))
    foreign = type(command)(**{**_fields(command), "user_id": "mallory"})
    with pytest.raises(ConversationNotFound) as info:
        run.do(foreign)
    assert not isinstance(info.value, ConversationDeleted)
    assert "mallory" not in str(info.value)


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: type(c).__name__)
def test_every_command_after_delete_is_refused(command: Command) -> None:
    run = Run.start()
    run.add(user(id="m1"))
    events = run.do(DeleteConversation(OWNER, reason="gdpr"))
    assert events == [DeletedEvent(reason="gdpr")]
    assert run.s.deleted
    with pytest.raises(ConversationDeleted) as info:
        run.do(command)
    assert isinstance(info.value, ConversationNotFound)  # the API maps both to 404
    assert info.value.conversation_id == "conv-1"


def test_conversation_deleted_is_a_not_found() -> None:
    assert issubclass(Deleted, ConversationNotFound)
    assert issubclass(ConversationNotFound, DomainError)


def _fields(command: Any) -> dict[str, Any]:
    return {name: getattr(command, name) for name in command.__slots__}


# --- add messages ---------------------------------------------------------------------------------------


def test_add_emits_one_event_per_message_with_ids() -> None:
    run = Run.start()
    events = run.add(user("one"), assistant("two", id="mine"), user("three", metadata={"k": "v"}))
    assert [type(e) for e in events] == [MessageAdded] * 3
    assert [e.message_id for e in events if isinstance(e, MessageAdded)] == ["gen-1", "mine", "gen-2"]
    assert run.s.version == 4
    assert [(m.seq, m.content) for m in run.history()] == [(1, "one"), (2, "two"), (3, "three")]
    assert run.s.messages["gen-2"].metadata == {"k": "v"}


def test_added_events_carry_every_field() -> None:
    run = Run.start()
    message = calling("c1", content=None, name="bot", token_count=7, metadata={"a": "b"}, raw={"t": 1})
    (event,) = run.add(message)
    assert isinstance(event, MessageAdded)
    assert event.role == "assistant" and event.content is None and event.name == "bot"
    assert event.tool_calls == (call("c1"),) and event.token_count == 7
    assert event.metadata == {"a": "b"} and event.raw == {"t": 1}


def test_batch_size_is_one_to_max() -> None:
    run = Run.start(limits=Limits(max_messages_per_call=3))
    with pytest.raises(InvalidMessage) as info:
        run.add()
    assert info.value.field == "messages"
    with pytest.raises(LimitExceeded) as info:
        run.add(*(user(str(i)) for i in range(4)))
    assert info.value.field == "messages"
    assert len(run.add(*(user(str(i)) for i in range(3)))) == 3


def test_default_batch_limit_is_100() -> None:
    run = Run.start()
    assert len(run.add(*(user(str(i)) for i in range(100)))) == 100
    with pytest.raises(LimitExceeded):
        run.add(*(user(str(i)) for i in range(101)))


def test_message_ids_are_unique_in_the_batch() -> None:
    run = Run.start()
    with pytest.raises(InvalidMessage) as info:
        run.add(user(id="m1"), user(id="m1"))
    assert info.value.field == "messages[1].id"
    assert run.s.version == 1


def test_message_ids_are_unique_among_visible_messages() -> None:
    run = Run.start()
    run.add(user(id="m1"))
    with pytest.raises(InvalidMessage) as info:
        run.add(user(id="m2"), user(id="m1"))
    assert info.value.field == "messages[1].id"


def test_decide_checks_messages_however_they_were_built() -> None:
    run = Run.start(limits=Limits(max_content_bytes=4))
    for bad, field in [
        (NewMessage(role="user"), "messages[1].content"),
        (NewMessage(role="user", content="12345"), "messages[1].content"),
        (NewMessage(role="user", content="\x00"), "messages[1].content"),
        (NewMessage(role="tool", content="x"), "messages[1].tool_call_id"),
    ]:
        with pytest.raises(InvalidMessage) as info:
            run.add(user("ok"), bad)
        assert info.value.field == field
    assert run.s.message_count == 0


def test_tool_message_answers_an_earlier_call_in_the_same_batch() -> None:
    run = Run.start()
    run.add(user(), calling("c1", "c2"), tool("c2"), tool("c1"), assistant("done"))
    assert run.s.message_count == 5
    assert all(ref.answer_message_id is not None for ref in run.s.tool_calls.values())


def test_tool_message_answers_a_call_of_an_earlier_batch() -> None:
    run = Run.start()
    run.add(calling("c1"))
    run.add(user("interleaved"))
    run.add(tool("c1"))
    assert run.s.tool_calls["c1"].answer_message_id is not None


def test_tool_message_before_its_assistant_is_rejected() -> None:
    run = Run.start()
    with pytest.raises(InvalidMessage) as info:
        run.add(tool("c1"), calling("c1"))
    assert info.value.field == "messages[0].tool_call_id"


def test_tool_message_for_an_unknown_call_is_rejected() -> None:
    run = Run.start()
    run.add(calling("c1"))
    with pytest.raises(InvalidMessage) as info:
        run.add(tool("nope"))
    assert info.value.field == "messages[0].tool_call_id"


def test_a_call_is_answered_only_once() -> None:
    run = Run.start()
    with pytest.raises(InvalidMessage) as info:
        run.add(calling("c1"), tool("c1"), tool("c1"))
    assert info.value.field == "messages[2].tool_call_id"
    run.add(calling("c1"), tool("c1"))
    with pytest.raises(InvalidMessage):
        run.add(tool("c1"))


def test_assistant_call_ids_are_unique_in_the_conversation() -> None:
    run = Run.start()
    run.add(calling("c1"), tool("c1"))
    with pytest.raises(InvalidMessage) as info:
        run.add(user(), calling("c2", "c1"))
    assert info.value.field == "messages[1].tool_calls"
    with pytest.raises(InvalidMessage):
        run.add(calling("c3"), calling("c3"))  # also across messages of one batch
    with pytest.raises(InvalidMessage):
        run.add(calling("c4", "c4"))  # and inside one message


def test_a_rejected_batch_writes_nothing() -> None:
    run = Run.start()
    before = run.s
    with pytest.raises(InvalidMessage):
        run.add(user("fine"), calling("c1"), tool("c1"), tool("c9"))
    assert run.s == before


# --- update ---------------------------------------------------------------------------------------------


def test_update_title_replaces() -> None:
    run = Run.start(title="old")
    assert run.do(UpdateConversation(OWNER, title="new")) == [ConversationUpdated(title="new")]
    assert (run.s.title, run.s.version) == ("new", 2)


def test_update_metadata_merges_as_json_merge_patch() -> None:
    run = Run.start()
    run.do(UpdateConversation(OWNER, metadata_patch={"a": 1, "b": {"x": 1, "y": 2}, "c": "keep"}))
    events = run.do(UpdateConversation(OWNER, metadata_patch={"a": None, "b": {"x": None, "z": 3}, "d": [1]}))
    assert events == [ConversationUpdated(metadata={"b": {"y": 2, "z": 3}, "c": "keep", "d": [1]})]
    assert run.s.metadata == {"b": {"y": 2, "z": 3}, "c": "keep", "d": [1]}
    assert run.s.title is None


def test_update_title_and_metadata_together() -> None:
    run = Run.start()
    (event,) = run.do(UpdateConversation(OWNER, title="t", metadata_patch={"k": "v"}))
    assert event == ConversationUpdated(title="t", metadata={"k": "v"})


def test_empty_update_emits_nothing() -> None:
    run = Run.start()
    assert run.do(UpdateConversation(OWNER)) == []
    assert run.s.version == 1


def test_merged_metadata_is_checked_against_the_limits() -> None:
    run = Run.start()
    run.do(UpdateConversation(OWNER, metadata_patch={f"k{i}": i for i in range(16)}))
    with pytest.raises(LimitExceeded) as info:
        run.do(UpdateConversation(OWNER, metadata_patch={"one_more": 1}))
    assert info.value.field == "metadata"
    # removing one key while adding another stays within 16
    run.do(UpdateConversation(OWNER, metadata_patch={"k0": None, "one_more": 1}))
    assert len(run.s.metadata) == 16
    with pytest.raises(LimitExceeded):
        run.do(UpdateConversation(OWNER, metadata_patch={"k1": {"deep": "x" * 600}}))


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (UpdateConversation(OWNER, title="t" * 513), "title"),
        (UpdateConversation(OWNER, title="\x00"), "title"),
        (UpdateConversation(OWNER, metadata_patch={"k": "\x00"}), "metadata.k"),
        (UpdateConversation(OWNER, metadata_patch={"k" * 65: "v"}), "metadata." + "k" * 65),
    ],
)
def test_update_checks_title_and_metadata(command: UpdateConversation, field: str) -> None:
    run = Run.start()
    with pytest.raises(InvalidMessage) as info:
        run.do(command)
    assert info.value.field == field


# RFC 7396 appendix A, every case whose patch is an object (a patch at the top level is always one here).
RFC_7396 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7396)
def test_merge_patch_follows_rfc_7396(
    target: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]
) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == result
    assert repr(target) == before  # the target is not modified


# --- remove and clear -----------------------------------------------------------------------------------


def test_remove_takes_a_message_out_of_the_history() -> None:
    run = Run.start()
    run.add(user("a", id="m1"), user("b", id="m2"))
    assert run.do(RemoveMessage(OWNER, "m1", reason="oops")) == [
        MessageRemoved(message_id="m1", reason="oops")
    ]
    assert list(run.s.messages) == ["m2"]
    assert (run.s.message_count, run.s.last_seq, run.s.version) == (1, 2, 4)
    assert run.s.messages["m2"].seq == 2  # never renumbered


@pytest.mark.parametrize("message_id", ["never-there", "m1"])
def test_remove_unknown_or_removed_message(message_id: str) -> None:
    run = Run.start()
    run.add(user(id="m1"))
    run.do(RemoveMessage(OWNER, "m1"))
    with pytest.raises(MessageNotFound) as info:
        run.do(RemoveMessage(OWNER, message_id))
    assert info.value.message_id == message_id


def test_remove_assistant_while_answers_are_present() -> None:
    run = Run.start()
    run.add(calling("c1", "c2", "c3", id="a1"), tool("c1", id="t1"), tool("c3", id="t3"))
    with pytest.raises(ToolCallsStillAnswered) as info:
        run.do(RemoveMessage(OWNER, "a1"))
    assert info.value.call_ids == ["c1", "c3"]
    run.do(RemoveMessage(OWNER, "t1"))
    with pytest.raises(ToolCallsStillAnswered) as info:
        run.do(RemoveMessage(OWNER, "a1"))
    assert info.value.call_ids == ["c3"]
    run.do(RemoveMessage(OWNER, "t3"))
    run.do(RemoveMessage(OWNER, "a1"))
    assert run.s.messages == {} and run.s.tool_calls == {}


def test_remove_assistant_with_unanswered_calls() -> None:
    run = Run.start()
    run.add(calling("c1", id="a1"))
    run.do(RemoveMessage(OWNER, "a1"))
    assert run.s.tool_calls == {}
    with pytest.raises(InvalidMessage):
        run.add(tool("c1"))  # the call went with its message


def test_removing_an_answer_reopens_its_call() -> None:
    run = Run.start()
    run.add(calling("c1", id="a1"), tool("c1", "wrong", id="t1"))
    run.do(RemoveMessage(OWNER, "t1"))
    assert run.s.tool_calls["c1"].answer_message_id is None
    run.add(tool("c1", "right", id="t2"))
    assert run.s.tool_calls["c1"].answer_message_id == "t2"
    with pytest.raises(InvalidMessage):
        run.add(tool("c1"))


def test_clear_removes_every_visible_message_newest_first() -> None:
    run = Run.start()
    run.add(
        system(id="s"), user(id="u"), calling("c1", "c2", id="a"), tool("c2", id="t2"), tool("c1", id="t1")
    )
    run.do(RemoveMessage(OWNER, "u"))
    events = run.do(ClearMessages(OWNER, reason="reset"))
    assert events == [MessageRemoved(message_id=m, reason="reset") for m in ["t1", "t2", "a", "s"]]
    assert (run.s.messages, run.s.tool_calls, run.s.message_count) == ({}, {}, 0)
    assert run.s.version == 1 + 5 + 1 + 4
    # each removal is one a RemoveMessage command would have accepted at that point
    state = replay(run.log[:-4])
    for event in events:
        assert isinstance(event, MessageRemoved)
        assert decide(state, RemoveMessage(OWNER, event.message_id, "reset"), Ids()) == [event]
        state = evolve(state, event)


def test_clear_empty_history_emits_nothing() -> None:
    run = Run.start()
    assert run.do(ClearMessages(OWNER)) == []


def test_seq_keeps_counting_after_remove_and_clear() -> None:
    run = Run.start()
    run.add(user("a"), user("b"))
    run.do(ClearMessages(OWNER))
    run.add(user("c"))
    (message,) = run.history()
    assert (message.seq, run.s.last_seq, run.s.message_count) == (3, 3, 1)


@pytest.mark.parametrize(
    "command",
    [
        RemoveMessage(OWNER, "m1", reason="\x00"),
        ClearMessages(OWNER, reason="\x00"),
        DeleteConversation(OWNER, "\x00"),
    ],
    ids=lambda c: type(c).__name__,
)
def test_reasons_may_not_hold_nul(command: Command) -> None:
    run = Run.start()
    run.add(user(id="m1"))
    with pytest.raises(InvalidMessage) as info:
        run.do(command)
    assert info.value.field == "reason"


# --- title ----------------------------------------------------------------------------------------------


def test_title_is_derived_from_the_first_user_message() -> None:
    run = Run.start()
    run.add(system("You are a helpful assistant"), assistant("How can I help?"))
    assert run.s.title is None
    run.add(user("  What is\n\tthe   weather  "), user("second question"))
    assert run.s.title == "What is the weather"
    assert not run.s.title_explicit


def test_long_first_message_is_cut_on_a_word_boundary() -> None:
    text = "Please summarise the following quarterly report for the board meeting tomorrow morning"
    run = Run.start()
    run.add(user(text))
    title = run.s.title
    assert title is not None and len(title) <= 60
    assert text.startswith(title) and text[len(title)] == " "
    assert title == "Please summarise the following quarterly report for the"


def test_derive_title_edges() -> None:
    assert derive_title(None) is None
    assert derive_title(" \n\t ") is None
    assert derive_title("x" * 100) == "x" * 60  # no word boundary: hard cut
    exact = ("word " * 12).strip()  # 59 characters
    assert derive_title(exact) == exact
    assert derive_title("a" * 60 + " tail") == "a" * 60
    assert derive_title("one two three", limit=7) == "one two"


def test_explicit_title_at_start_wins() -> None:
    run = Run.start(title="Mine")
    run.add(user("something else entirely"))
    assert run.s.title == "Mine" and run.s.title_explicit


def test_explicit_title_by_update_is_never_overwritten() -> None:
    run = Run.start()
    run.do(UpdateConversation(OWNER, title="Chosen"))
    run.add(user("first question"))
    assert run.s.title == "Chosen"


def test_derived_title_is_replaced_by_an_explicit_one_and_stays() -> None:
    run = Run.start()
    run.add(user("first question"))
    run.do(UpdateConversation(OWNER, title="Chosen"))
    run.do(ClearMessages(OWNER))
    run.add(user("another first question"))
    assert run.s.title == "Chosen"


def test_derived_title_stays_after_the_message_goes() -> None:
    run = Run.start()
    run.add(user("first question", id="m1"))
    run.do(RemoveMessage(OWNER, "m1"))
    run.add(user("second question"))
    assert run.s.title == "first question"


# --- versions and times ---------------------------------------------------------------------------------


def test_versions_counts_and_times() -> None:
    run = Run.start()  # event 0 at at(0)
    assert (run.s.version, run.s.created_at, run.s.updated_at, run.s.last_message_at) == (
        1,
        at(0),
        at(0),
        None,
    )
    run.add(user("a", id="m1"), user("b", id="m2"))  # events 1, 2
    assert (run.s.version, run.s.message_count, run.s.updated_at, run.s.last_message_at) == (
        3,
        2,
        at(2),
        at(2),
    )
    assert run.s.messages["m1"].created_at == at(1)
    run.do(UpdateConversation(OWNER, title="t"))  # event 3
    assert (run.s.version, run.s.updated_at, run.s.last_message_at) == (4, at(3), at(2))
    run.do(RemoveMessage(OWNER, "m1"))  # event 4
    assert (run.s.version, run.s.message_count, run.s.updated_at, run.s.last_message_at) == (
        5,
        1,
        at(4),
        at(2),
    )
    run.do(ClearMessages(OWNER))  # event 5
    assert (run.s.version, run.s.message_count, run.s.updated_at, run.s.last_message_at) == (
        6,
        0,
        at(5),
        at(2),
    )
    run.do(DeleteConversation(OWNER))  # event 6
    assert (run.s.version, run.s.updated_at, run.s.created_at) == (7, at(6), at(0))


def test_evolve_does_not_modify_its_input() -> None:
    run = Run.start()
    run.add(calling("c1", id="a1"))
    before = run.s
    snapshot = (dict(before.messages), dict(before.tool_calls), before.version)
    evolve(before, MessageAdded(message_id="t1", role="tool", content="x", tool_call_id="c1"), at(9))
    evolve(before, MessageRemoved(message_id="a1"), at(9))
    assert (dict(before.messages), dict(before.tool_calls), before.version) == snapshot


def test_evolve_needs_a_start() -> None:
    with pytest.raises(ValueError):
        evolve(None, MessageAdded(message_id="m", role="user", content="x"))


def test_replay_equals_the_states_seen_along_the_way() -> None:
    run = Run.start()
    run.add(user("q"), calling("c1"), tool("c1"), assistant("a"))
    run.do(UpdateConversation(OWNER, metadata_patch={"k": "v"}))
    assert replay(run.log) == run.s
    assert replay([]) is None
    assert replay(run.log[3:], replay(run.log[:3])) == run.s


def test_decide_uses_the_given_limits() -> None:
    state = Run.start().s
    with pytest.raises(LimitExceeded):
        decide(state, AddMessages(OWNER, (user("x" * 11),)), Ids(), Limits(max_content_bytes=10))
    assert decide(state, AddMessages(OWNER, (user("x" * 11),)), Ids(), DEFAULT_LIMITS)
