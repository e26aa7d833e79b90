"""Properties of decide/evolve/replay over random command sequences, valid and invalid alike."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.domain import (
    AddMessages,
    ClearMessages,
    Command,
    ConversationDeleted,
    ConversationIdUnavailable,
    ConversationNotFound,
    ConversationStarted,
    ConversationState,
    ConversationUpdated,
    DeleteConversation,
    DomainError,
    DomainEvent,
    MessageAdded,
    MessageRemoved,
    NewMessage,
    RemoveMessage,
    StartConversation,
    UpdateConversation,
    decide,
    event_from_payload,
    evolve,
    replay,
)
from chatledger.domain.events import ConversationDeleted as DeletedEvent

from .support import OWNER, Ids, Run, at, call, runs, texts, token_counts

PROPERTY = settings(max_examples=100, deadline=None)

# "#k" stands for the k-th visible message (RemoveMessage) or the k-th open call (tool_call_id), resolved
# when the command runs, so that most removals and answers hit something real; the rest miss on purpose.
PICKS = [f"#{k}" for k in range(4)]
MESSAGE_IDS = [f"m{i}" for i in range(5)] + ["gen-1", "gen-2"]
CALL_IDS = [f"c{i}" for i in range(8)]
FRESH = ["*a", "*b", "*c", "*d"]
users = st.sampled_from([OWNER] * 5 + ["mallory"])
keys = st.text(max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
metadata = st.dictionaries(keys, json_values, max_size=3)
ids = st.sampled_from([None] * 24 + MESSAGE_IDS)
# "*x" call ids become fresh ones when the command runs; the fixed ones collide on purpose.
calls = st.lists(st.sampled_from(FRESH + CALL_IDS[:3]), min_size=1, max_size=3, unique=True).map(
    lambda cs: tuple(call(c) for c in cs)
)

plain = st.builds(NewMessage, role=st.sampled_from(["system", "user", "assistant"]), content=texts, id=ids)
with_extras = st.builds(
    NewMessage,
    role=st.just("user"),
    content=texts,
    metadata=metadata,
    raw=json_values,
    token_count=token_counts,
)
with_calls = st.builds(
    NewMessage, role=st.just("assistant"), content=st.none() | texts, tool_calls=calls, id=ids
)
answer = st.builds(
    NewMessage,
    role=st.just("tool"),
    content=texts,
    tool_call_id=st.sampled_from(PICKS + CALL_IDS[:2]),
    id=ids,
)
anything = st.builds(
    NewMessage,
    role=st.sampled_from(["system", "user", "assistant", "tool"]),
    content=st.none() | texts,
    name=st.none() | texts,
    tool_calls=st.none() | calls | st.just(()),
    tool_call_id=st.none() | st.sampled_from(PICKS + CALL_IDS[:4]),
    token_count=token_counts | st.just(-1),
    metadata=metadata,
    raw=json_values,
    id=ids,
)
# Mostly well-formed messages (so histories grow), plus anything NewMessage can hold at all.
messages = st.one_of(plain, plain, with_extras, with_calls, with_calls, answer, answer, answer, anything)
batches = st.lists(messages, min_size=1, max_size=4).map(tuple)
patches = st.dictionaries(keys, st.none() | json_values, max_size=3)
reasons = st.none() | texts

adds = st.builds(AddMessages, user_id=users, messages=batches)
any_adds = st.builds(AddMessages, user_id=users, messages=st.lists(messages, max_size=4).map(tuple))
updates = st.builds(
    UpdateConversation, user_id=users, title=st.none() | texts, metadata_patch=st.none() | patches
)
removes = st.builds(
    RemoveMessage, user_id=users, message_id=st.sampled_from(PICKS + MESSAGE_IDS), reason=reasons
)
clears = st.builds(ClearMessages, user_id=users, reason=reasons)
starts = st.builds(
    StartConversation, conversation_id=st.just("conv-1"), user_id=users, title=st.none() | texts
)
deletes = st.builds(DeleteConversation, user_id=users, reason=reasons)
# Weighted by repetition: a clear undoes everything else, so it comes rarely (and a delete once at most).
commands: st.SearchStrategy[Command] = st.one_of(
    *([adds] * 8 + [any_adds, updates, updates, removes, removes, removes, clears, starts])
)


@st.composite
def scripts(draw: st.DrawFn) -> list[Command]:
    """Usually a start first, then up to 30 commands of any kind, from any user, with perhaps a delete."""
    script: list[Command] = []
    if draw(st.integers(min_value=0, max_value=9)) > 0:
        script.append(StartConversation("conv-1", OWNER, title=draw(st.none() | texts)))
    length = draw(st.integers(min_value=0, max_value=30))
    script += draw(st.lists(commands, min_size=length, max_size=length))
    if draw(st.booleans()):
        script.insert(draw(st.integers(min_value=0, max_value=len(script))), draw(deletes))
    return script


def check_invariants(
    state: ConversationState, log: list[tuple[DomainEvent, datetime]], seqs: list[int]
) -> None:
    assert state.version == len(log)
    assert state.message_count == len(state.messages)
    assert seqs == sorted(set(seqs)) and (not seqs or seqs[-1] == state.last_seq)
    assert all(m.seq in seqs for m in state.messages.values())
    assert state.updated_at == log[-1][1]
    added = [when for event, when in log if isinstance(event, MessageAdded)]
    assert state.last_message_at == (added[-1] if added else None)
    for call_id, ref in state.tool_calls.items():
        opener = state.messages[ref.assistant_message_id]  # every call belongs to a visible assistant
        assert opener.role == "assistant" and call_id in {c.id for c in opener.tool_calls or ()}
        if ref.answer_message_id is not None:
            answer = state.messages[ref.answer_message_id]
            assert answer.role == "tool" and answer.tool_call_id == call_id
    for message in state.messages.values():
        for c in message.tool_calls or ():
            assert state.tool_calls[c.id].assistant_message_id == message.message_id
        if message.role == "tool":
            assert message.tool_call_id is not None
            assert state.tool_calls[message.tool_call_id].answer_message_id == message.message_id


def resolve(state: ConversationState | None, command: Command, fresh: Ids) -> Command:
    """Replace the "#k" picks by the k-th visible message or open call at this point (a tool message
    with nothing left to answer is dropped from its batch)."""
    if state is None:
        return command
    if isinstance(command, RemoveMessage) and command.message_id in PICKS:
        visible = sorted(state.messages.values(), key=lambda m: m.seq)
        if visible:
            return replace(command, message_id=visible[int(command.message_id[1:]) % len(visible)].message_id)
    if isinstance(command, AddMessages):
        open_calls = sorted(c for c, ref in state.tool_calls.items() if ref.answer_message_id is None)
        resolved = []
        for m in command.messages:
            if m.tool_calls:
                new_calls = tuple(
                    c.model_copy(update={"id": fresh()}) if c.id in FRESH else c for c in m.tool_calls
                )
                m = m.model_copy(update={"tool_calls": new_calls})
            open_calls += [c.id for c in m.tool_calls or ()]
            if m.tool_call_id in PICKS and m.role == "tool":
                if not open_calls:
                    continue  # nothing to answer: leave this one out, so the rest of the batch can land
                call_id = open_calls.pop(int(m.tool_call_id[1:]) % len(open_calls))
                m = m.model_copy(update={"tool_call_id": call_id})
            resolved.append(m)
        return replace(command, messages=tuple(resolved))
    return command


def run_script(script: list[Command]) -> tuple[ConversationState | None, list[tuple[DomainEvent, datetime]]]:
    state: ConversationState | None = None
    log: list[tuple[DomainEvent, datetime]] = []
    seqs: list[int] = []
    new_ids, fresh_calls = Ids(), Ids("call")
    for command in script:
        command = resolve(state, command, fresh_calls)
        snapshot = None if state is None else (replace(state), dict(state.messages), dict(state.tool_calls))
        try:
            events = decide(state, command, new_ids)
        except DomainError:
            continue
        finally:  # decide is pure: accepted or not, the state it was given is untouched
            assert snapshot == (
                None if state is None else (replace(state), dict(state.messages), dict(state.tool_calls))
            )
        if state is not None and state.deleted:
            raise AssertionError(f"{command} accepted on a deleted conversation")
        for event in events:
            when = at(len(log))
            state = evolve(state, event, when)
            log.append((event, when))
            if isinstance(event, MessageAdded):
                seqs.append(state.messages[event.message_id].seq)
        if state is not None and log:
            check_invariants(state, log, seqs)
    return state, log


@PROPERTY
@given(scripts(), st.integers(min_value=0, max_value=200))
def test_replay_equals_evolve_one_by_one(script: list[Command], split: int) -> None:
    state, log = run_script(script)  # checks the invariants after every accepted command
    assert replay(log) == state
    split = min(split, len(log))
    assert replay(log[split:], replay(log[:split])) == state
    # and what the log stores rebuilds the same events
    for event, _when in log:
        stored = json.loads(json.dumps(event.payload()))
        assert event_from_payload(event.TYPE, stored) == event


@PROPERTY
@given(runs())
def test_generated_histories_replay_and_keep_the_invariants(run: Run) -> None:
    """The histories the context tests use (rich in tool groups and removals) pass the same checks."""
    assert run.state is not None
    assert replay(run.log) == run.state
    check_invariants(run.s, run.log, list(range(1, run.s.last_seq + 1)))


@settings(max_examples=40, deadline=None)
@given(scripts())
def test_deleted_conversations_accept_nothing(script: list[Command]) -> None:
    state, _ = run_script([*script, DeleteConversation(OWNER)])
    if state is None or state.owner != OWNER:
        return
    assert state.deleted
    for command in [
        *script[1:],
        AddMessages(OWNER, (NewMessage(role="user", content="x"),)),
        ClearMessages(OWNER),
    ]:
        try:
            decide(state, command, Ids())
        except (ConversationDeleted, ConversationIdUnavailable):
            continue
        except ConversationNotFound:
            assert command.user_id != OWNER  # another user is told only "not found"
            continue
        raise AssertionError(f"{command} accepted after delete")


any_events = st.one_of(
    st.builds(
        ConversationStarted, conversation_id=texts, user_id=texts, title=st.none() | texts, metadata=metadata
    ),
    st.builds(
        MessageAdded,
        message_id=texts,
        role=st.sampled_from(["system", "user", "assistant", "tool"]),
        content=st.none() | texts,
        name=st.none() | texts,
        tool_calls=st.none() | calls,
        tool_call_id=st.none() | texts,
        token_count=token_counts,
        metadata=metadata,
        raw=json_values,
    ),
    st.builds(ConversationUpdated, title=st.none() | texts, metadata=st.none() | metadata),
    st.builds(MessageRemoved, message_id=texts, reason=reasons),
    st.builds(DeletedEvent, reason=reasons),
)


@PROPERTY
@given(any_events)
def test_generated_events_round_trip(event: DomainEvent) -> None:
    payload: dict[str, Any] = json.loads(json.dumps(event.payload()))
    assert event_from_payload(event.TYPE, payload) == event
    assert type(event_from_payload(event.TYPE, payload)) is type(event)


def test_unknown_event_type_is_refused() -> None:
    try:
        event_from_payload("MessageEdited", {})
    except ValueError as error:
        assert "MessageEdited" in str(error)
    else:
        raise AssertionError("unknown type accepted")
