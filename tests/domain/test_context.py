"""The agent-ready context window (DESIGN section 4 and section 9, "Context window" and "Finer points")."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.domain import (
    Message,
    NewMessage,
    RemoveMessage,
    context_window,
    estimate_tokens,
    to_chat_format,
    window_from_suffix,
)
from chatledger.domain.context import MESSAGE_OVERHEAD_TOKENS, split_pinned

from .support import OWNER, Run, assistant, calling, histories, system, tool, user

PROPERTY = settings(max_examples=150, deadline=None)
max_messages_st = st.none() | st.integers(min_value=0, max_value=12)
max_tokens_st = st.none() | st.integers(min_value=0, max_value=250)


def contents(window: Sequence[Message]) -> list[str | None]:
    return [m.content for m in window]


def build(*batches: Sequence[NewMessage]) -> list[Message]:
    run = Run.start()
    for batch in batches:
        run.add(*batch)
    history: list[Message] = run.history()
    return history


# --- examples -------------------------------------------------------------------------------------------


def test_no_limits_returns_the_whole_history() -> None:
    history = build([system("s"), user("u"), calling("c1", content="a"), tool("c1", "t"), assistant("b")])
    assert context_window(history) == history
    assert context_window([]) == []


def test_pinned_system_messages_are_kept_and_not_counted_in_max_messages() -> None:
    history = build([system("s1"), system("s2"), user("u1"), assistant("a1"), user("u2")])
    assert contents(context_window(history, max_messages=2)) == ["s1", "s2", "a1", "u2"]
    assert contents(context_window(history, max_messages=0)) == ["s1", "s2"]


def test_pinned_messages_count_against_max_tokens() -> None:
    history = build([system("s", token_count=50), user("u1", token_count=30), user("u2", token_count=30)])
    assert contents(context_window(history, max_tokens=110)) == ["s", "u1", "u2"]
    assert contents(context_window(history, max_tokens=109)) == ["s", "u2"]
    assert contents(context_window(history, max_tokens=80)) == ["s", "u2"]
    assert contents(context_window(history, max_tokens=79)) == ["s"]


def test_pinned_alone_over_max_tokens_returns_only_pinned() -> None:
    history = build([system("s1", token_count=60), system("s2", token_count=60), user("u", token_count=1)])
    assert contents(context_window(history, max_tokens=100)) == ["s1", "s2"]
    assert contents(context_window(history, max_tokens=0, max_messages=5)) == ["s1", "s2"]


def test_later_system_messages_are_ordinary() -> None:
    history = build([user("u1"), system("late"), user("u2"), user("u3")])
    assert contents(context_window(history, max_messages=2)) == ["u2", "u3"]
    assert contents(context_window(history, max_messages=3)) == ["late", "u2", "u3"]
    assert split_pinned(history) == ([], history)


def test_only_the_leading_run_is_pinned() -> None:
    history = build([system("s1"), user("u1"), system("s2"), user("u2")])
    assert contents(context_window(history, max_messages=1)) == ["s1", "u2"]


def test_window_never_starts_with_a_tool_message() -> None:
    history = build(
        [user("u"), calling("c1", "c2", content="a"), tool("c1", "t1"), tool("c2", "t2"), user("u2")]
    )
    # three messages would start on t1; the window shrinks to the group boundary instead
    assert contents(context_window(history, max_messages=3)) == ["u2"]
    assert contents(context_window(history, max_messages=4)) == ["a", "t1", "t2", "u2"]
    assert contents(context_window(history, max_messages=2)) == ["u2"]


def test_trailing_group_with_open_calls_is_left_out() -> None:
    history = build([user("u"), calling("c1", "c2", content="a"), tool("c1", "t1")])
    assert contents(context_window(history)) == ["u"]
    assert contents(context_window(build([user("u"), calling("c1", content="a")]))) == ["u"]


def test_trailing_open_group_is_set_aside_before_the_limits() -> None:
    history = build([system("s"), user("u1"), user("u2"), calling("c1", "c2", content="a"), tool("c1", "t1")])
    # were the open group counted, max_messages=2 would leave nothing
    assert contents(context_window(history, max_messages=2)) == ["s", "u1", "u2"]
    assert contents(context_window(history, max_messages=1)) == ["s", "u2"]


def test_pending_calls_over_several_assistant_messages_are_set_aside_together() -> None:
    # Responses API items arrive as one function_call per assistant message
    history = build([user("u1"), user("u2"), calling("c1", content="a1"), calling("c2", content="a2")])
    assert contents(context_window(history, max_messages=1)) == ["u2"]
    history = build(
        [user("u1"), user("u2"), calling("c1", content="a1"), calling("c2", content="a2"), tool("c1")]
    )
    assert contents(context_window(history, max_messages=1)) == ["u2"]
    history = build([user("u"), calling("c1", content="a1"), tool("c1", "t1"), calling("c2", content="a2")])
    assert contents(context_window(history, max_messages=2)) == ["a1", "t1"]


def test_group_left_incomplete_by_a_removal_is_dropped() -> None:
    run = Run.start()
    run.add(user("u1"), calling("c1", "c2", content="a", id="a"), tool("c1", "t1", id="t1"))
    run.add(tool("c2", "t2", id="t2"), user("u2"))
    run.do(RemoveMessage(OWNER, "t1"))  # c1 is open again, in the middle of the history
    assert contents(context_window(run.history())) == ["u1", "u2"]


def test_interleaved_answers_keep_the_group_whole() -> None:
    history = build(
        [user("u1"), calling("c1", "c2", content="a"), tool("c1", "t1"), user("u2"), tool("c2", "t2")]
    )
    assert contents(context_window(history)) == ["u1", "a", "t1", "u2", "t2"]
    # a window that starts at u2 cannot carry t2 without its call
    assert contents(context_window(history, max_messages=2)) == ["u2"]


def test_token_estimate_uses_token_count_when_given() -> None:
    (counted, guessed, calls) = build(
        [user("x" * 400, token_count=3), user("x" * 40, name="nm"), calling("c1", content=None)]
    )
    assert estimate_tokens(counted) == 3
    assert estimate_tokens(guessed) == 11 + MESSAGE_OVERHEAD_TOKENS  # ceil(42 / 4)
    assert estimate_tokens(calls) == 2 + MESSAGE_OVERHEAD_TOKENS  # "lookup" + "{}" = 8 characters
    history = build([user("big", token_count=1000), user("small", token_count=0)])
    assert contents(context_window(history, max_tokens=5)) == ["small"]


def test_chat_format_has_only_api_fields() -> None:
    (u, a, t) = build(
        [
            user("hi", name="al", metadata={"k": "v"}, raw={"x": 1}, token_count=2),
            calling("c1"),
            tool("c1", "ok"),
        ]
    )
    assert to_chat_format(u) == {"role": "user", "content": "hi", "name": "al"}
    assert to_chat_format(a) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
    }
    assert to_chat_format(t) == {"role": "tool", "content": "ok", "tool_call_id": "c1"}


def test_suffix_that_reaches_the_limits_answers_without_older_messages() -> None:
    history = build([system("s")], [user(str(i)) for i in range(50)])
    pinned, rest = split_pinned(history)
    window = window_from_suffix(pinned, rest[-5:], complete=False, max_messages=3)
    assert window == context_window(history, max_messages=3)
    assert window_from_suffix(pinned, rest[-2:], complete=False, max_messages=3) is None
    assert window_from_suffix(pinned, rest[-5:], complete=True) == pinned + rest[-5:]


def test_suffix_of_only_tool_messages_needs_more() -> None:
    history = build([user("u"), calling("c1", "c2"), tool("c1"), tool("c2")])
    pinned, rest = split_pinned(history)
    assert window_from_suffix(pinned, rest[-2:], complete=False, max_messages=1) is None


# --- properties -----------------------------------------------------------------------------------------


def assert_valid(
    history: list[Message], window: list[Message], max_messages: int | None, max_tokens: int | None
) -> None:
    pinned = split_pinned(history)[0]
    # (2) chronological, starts with exactly the pinned run, the rest drawn from the history in order
    assert window[: len(pinned)] == pinned
    seqs = [m.seq for m in window]
    assert seqs == sorted(set(seqs))
    by_id = {m.message_id: m for m in history}
    assert all(by_id[m.message_id] == m for m in window)
    body = window[len(pinned) :]
    assert not body or body[0].role != "tool"
    # (1) tool groups are whole
    calls = {c.id for m in window for c in m.tool_calls or ()}
    answers = {m.tool_call_id for m in window if m.role == "tool"}
    assert answers <= calls
    assert calls <= answers
    # (3) limits
    if max_messages is not None:
        assert len(body) <= max_messages
    if max_tokens is not None and body:
        assert sum(estimate_tokens(m) for m in window) <= max_tokens


@PROPERTY
@given(histories(), max_messages_st, max_tokens_st)
def test_window_is_valid_model_input_within_the_limits(
    history: list[Message], max_messages: int | None, max_tokens: int | None
) -> None:
    window = context_window(history, max_messages=max_messages, max_tokens=max_tokens)
    assert_valid(history, window, max_messages, max_tokens)


@PROPERTY
@given(histories(), max_messages_st, max_tokens_st)
def test_the_newest_message_that_fits_is_kept(
    history: list[Message], max_messages: int | None, max_tokens: int | None
) -> None:
    """The newest plain message (no tool calls, not a tool answer) is in the window when it fits on its
    own and nothing but pending tool calls follows it: those are set aside before the limits apply."""
    pinned, rest = split_pinned(history)
    plain = [i for i, m in enumerate(rest) if m.role != "tool" and not m.tool_calls]
    if not plain or any(m.role == "tool" for m in rest[plain[-1] + 1 :]) or max_messages == 0:
        return
    newest = rest[plain[-1]]
    cost = sum(estimate_tokens(m) for m in [*pinned, newest])
    if max_tokens is None or cost <= max_tokens:
        window = context_window(history, max_messages=max_messages, max_tokens=max_tokens)
        assert window and window[-1] == newest


@PROPERTY
@given(histories())
def test_without_limits_every_complete_group_is_kept(history: list[Message]) -> None:
    answered = {m.tool_call_id for m in history if m.role == "tool"}
    if all(c.id in answered for m in history for c in m.tool_calls or ()):
        assert context_window(history) == history


@PROPERTY
@given(histories(), max_messages_st, max_tokens_st)
def test_any_long_enough_suffix_gives_the_same_window(
    history: list[Message], max_messages: int | None, max_tokens: int | None
) -> None:
    pinned, rest = split_pinned(history)
    full = context_window(history, max_messages=max_messages, max_tokens=max_tokens)
    for length in range(len(rest) + 1):
        suffix = rest[len(rest) - length :]
        for complete in {False, length == len(rest)}:
            window = window_from_suffix(
                pinned, suffix, complete=complete, max_messages=max_messages, max_tokens=max_tokens
            )
            if complete:
                assert window == full
            elif window is not None:
                assert window == full, (length, complete)
