"""Builders and hypothesis strategies shared by the domain tests: histories are made through
`decide` + `evolve`, so every generated history is one the aggregate could really hold."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from chatledger.domain import (
    AddMessages,
    Command,
    ConversationState,
    DomainError,
    DomainEvent,
    FunctionCall,
    Message,
    NewMessage,
    RemoveMessage,
    StartConversation,
    ToolCall,
    decide,
    evolve,
)
from chatledger.domain.limits import DEFAULT_LIMITS, Limits

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
OWNER = "alice"


def at(second: int) -> datetime:
    return T0 + timedelta(seconds=second)


class Ids:
    """A deterministic id factory: gen-1, gen-2, ..."""

    def __init__(self, prefix: str = "gen") -> None:
        self._next = itertools.count(1)
        self._prefix = prefix

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._next)}"


def call(call_id: str, name: str = "lookup", arguments: str = "{}") -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))


def system(content: str = "be brief", **kw: Any) -> NewMessage:
    return NewMessage(role="system", content=content, **kw)


def user(content: str = "hello", **kw: Any) -> NewMessage:
    return NewMessage(role="user", content=content, **kw)


def assistant(content: str | None = "hi there", **kw: Any) -> NewMessage:
    return NewMessage(role="assistant", content=content, **kw)


def calling(*call_ids: str, content: str | None = None, **kw: Any) -> NewMessage:
    """An assistant message opening one tool call per id."""
    return NewMessage(role="assistant", content=content, tool_calls=tuple(call(c) for c in call_ids), **kw)


def tool(call_id: str, content: str = "42", **kw: Any) -> NewMessage:
    return NewMessage(role="tool", content=content, tool_call_id=call_id, **kw)


@dataclass
class Run:
    """A conversation driven through decide + evolve, one second of clock per event."""

    state: ConversationState | None = None
    limits: Limits = DEFAULT_LIMITS
    ids: Ids = field(default_factory=Ids)
    log: list[tuple[DomainEvent, datetime]] = field(default_factory=list)

    @classmethod
    def start(cls, owner: str = OWNER, title: str | None = None, **kw: Any) -> Run:
        run = cls(**kw)
        run.do(StartConversation(conversation_id="conv-1", user_id=owner, title=title))
        return run

    @property
    def s(self) -> ConversationState:
        assert self.state is not None
        return self.state

    def do(self, command: Command) -> list[DomainEvent]:
        events = decide(self.state, command, self.ids, self.limits)
        for event in events:
            when = at(len(self.log))
            self.state = evolve(self.state, event, when)
            self.log.append((event, when))
        return events

    def add(self, *messages: NewMessage, user_id: str = OWNER) -> list[DomainEvent]:
        return self.do(AddMessages(user_id=user_id, messages=messages))

    def history(self) -> list[Message]:
        return sorted(self.s.messages.values(), key=lambda m: m.seq)

    def ids_of(self, *contents: str) -> list[str]:
        by_content = {m.content: m.message_id for m in self.s.messages.values()}
        return [by_content[c] for c in contents]


# --- strategies -----------------------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
token_counts = st.none() | st.integers(min_value=0, max_value=60)

# One step of a history: (kind, a number used to pick among open calls or visible messages, token count, text)
_steps = st.tuples(
    st.sampled_from(["user", "user", "assistant", "calls", "answer", "answer", "system", "remove"]),
    st.integers(min_value=0, max_value=1_000),
    token_counts,
    texts,
)


def _step(run: Run, step: tuple[str, int, int | None, str], serial: int) -> None:
    kind, pick, tokens, text = step
    if kind == "calls":
        ids = [f"call-{serial}-{k}" for k in range(pick % 3 + 1)]
        run.add(calling(*ids, content=text or None, token_count=tokens))
    elif kind == "answer":
        open_calls = sorted(c for c, ref in run.s.tool_calls.items() if ref.answer_message_id is None)
        if open_calls:
            run.add(tool(open_calls[pick % len(open_calls)], text, token_count=tokens))
    elif kind == "remove":
        visible = run.history()
        if visible:
            # an assistant whose answers are still there is refused: fine, the history stays as it is
            with contextlib.suppress(DomainError):
                run.do(RemoveMessage(user_id=OWNER, message_id=visible[pick % len(visible)].message_id))
    else:
        run.add(NewMessage(role=kind, content=text, token_count=tokens))


@st.composite
def runs(draw: st.DrawFn, max_steps: int = 30) -> Run:
    """A conversation with a valid history: leading system messages, tool groups of 1..3 calls
    (answered in any order, possibly interleaved or never), later system messages and removals."""
    run = Run.start()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        run.add(system(draw(texts), token_count=draw(token_counts)))
    length = draw(st.integers(min_value=0, max_value=max_steps))  # spread lengths evenly, not mostly short
    for serial, step in enumerate(draw(st.lists(_steps, min_size=length, max_size=length))):
        _step(run, step, serial)
    return run


@st.composite
def histories(draw: st.DrawFn) -> list[Message]:
    return draw(runs()).history()
