"""The Conversation aggregate as pure functions: `decide(state, command) -> events`, `evolve(state, event)`.

`decide` only needs the part of the state that its command touches (the conversation's summary plus the
messages and tool calls it names), so the application can load that slice from the read tables instead
of folding a long history on every append; `replay` folds a whole stream when the full state is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .commands import (
    AddMessages,
    ClearMessages,
    Command,
    RemoveMessage,
    StartConversation,
    UpdateConversation,
)
from .errors import (
    ConversationDeleted,
    ConversationIdUnavailable,
    ConversationNotFound,
    InvalidMessage,
    LimitExceeded,
    MessageNotFound,
    ToolCallsStillAnswered,
)
from .events import (
    ConversationDeleted as Deleted,
)
from .events import (
    ConversationStarted,
    ConversationUpdated,
    DomainEvent,
    MessageAdded,
    MessageRemoved,
    Role,
    ToolCall,
)
from .limits import DEFAULT_LIMITS, Limits
from .messages import NewMessage, check_message, check_metadata, check_storable
from .title import derive_title, merge_patch


@dataclass(frozen=True, slots=True)
class Message:
    """A message in the history: the `MessageAdded` fields plus its position and time."""

    message_id: str
    seq: int
    role: Role
    content: str | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None
    token_count: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    raw: Any = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ToolCallRef:
    """A tool call opened by a visible assistant message, and the visible tool message answering it."""

    call_id: str
    assistant_message_id: str
    answer_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationState:
    conversation_id: str
    owner: str
    version: int = 0
    title: str | None = None
    title_explicit: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    message_count: int = 0
    last_seq: int = 0
    deleted: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_message_at: datetime | None = None
    messages: Mapping[str, Message] = field(default_factory=dict)
    """Visible messages by id (all of them after `replay`, or the slice a command needs)."""
    tool_calls: Mapping[str, ToolCallRef] = field(default_factory=dict)
    """Tool calls of visible assistant messages by call id (all, or the slice a command needs)."""


IdFactory = Callable[[], str]


def decide(
    state: ConversationState | None, command: Command, ids: IdFactory, limits: Limits = DEFAULT_LIMITS
) -> list[DomainEvent]:
    """The events that `command` produces from `state`, or a `DomainError`. Never has side effects."""
    if isinstance(command, StartConversation):
        return _start(state, command, limits)
    state = _owned_live(state, command.user_id)
    if isinstance(command, AddMessages):
        return _add(state, command.messages, ids, limits)
    if isinstance(command, UpdateConversation):
        return _update(state, command, limits)
    check_storable(command.reason, "reason")
    if isinstance(command, RemoveMessage):
        return [_remove(state, command.message_id, command.reason)]
    if isinstance(command, ClearMessages):
        ordered = sorted(state.messages.values(), key=lambda m: m.seq, reverse=True)
        # Newest first, so every tool answer goes before the assistant message that opened its call.
        return [MessageRemoved(message_id=m.message_id, reason=command.reason) for m in ordered]
    return [Deleted(reason=command.reason)]


def _owned_live(state: ConversationState | None, user_id: str) -> ConversationState:
    if state is None or state.owner != user_id:
        raise ConversationNotFound(state.conversation_id if state else "")
    if state.deleted:
        raise ConversationDeleted(state.conversation_id)
    return state


def _start(state: ConversationState | None, cmd: StartConversation, limits: Limits) -> list[DomainEvent]:
    if state is not None:
        if state.owner == cmd.user_id and not state.deleted:
            return []  # get-or-create: the caller's own conversation is returned as it is
        raise ConversationIdUnavailable(cmd.conversation_id)
    check_storable(cmd.conversation_id, "conversation_id")
    _check_title(cmd.title, limits)
    check_metadata(cmd.metadata, limits)
    return [
        ConversationStarted(
            conversation_id=cmd.conversation_id,
            user_id=cmd.user_id,
            title=cmd.title,
            metadata=dict(cmd.metadata),
        )
    ]


def _check_title(title: str | None, limits: Limits) -> None:
    if title is None:
        return
    if len(title) > limits.max_title_chars:
        raise LimitExceeded(f"title is longer than {limits.max_title_chars} characters", field="title")
    check_storable(title, "title")


def _update(state: ConversationState, cmd: UpdateConversation, limits: Limits) -> list[DomainEvent]:
    _check_title(cmd.title, limits)
    merged = None
    if cmd.metadata_patch is not None:
        merged = merge_patch(state.metadata, cmd.metadata_patch)
        check_metadata(merged, limits)
    if cmd.title is None and merged is None:
        return []
    return [ConversationUpdated(title=cmd.title, metadata=merged)]


def _add(
    state: ConversationState, messages: tuple[NewMessage, ...], ids: IdFactory, limits: Limits
) -> list[DomainEvent]:
    if not messages:
        raise InvalidMessage("messages must hold at least one message", field="messages")
    if len(messages) > limits.max_messages_per_call:
        raise LimitExceeded(f"at most {limits.max_messages_per_call} messages per call", field="messages")
    used = set(state.tool_calls)
    open_calls = {c for c, ref in state.tool_calls.items() if ref.answer_message_id is None}
    seen_ids: set[str] = set()
    events: list[DomainEvent] = []
    for i, m in enumerate(messages):
        check_message(m, limits, i)  # the aggregate guards its rules, however the message was built
        message_id = m.id or ids()
        if message_id in seen_ids or message_id in state.messages:
            raise InvalidMessage(
                f"messages[{i}].id {message_id} is already in use", field=f"messages[{i}].id"
            )
        seen_ids.add(message_id)
        for call in m.tool_calls or ():
            if call.id in used:
                raise InvalidMessage(
                    f"messages[{i}]: tool call id {call.id!r} is already used in this conversation",
                    field=f"messages[{i}].tool_calls",
                )
            used.add(call.id)
            open_calls.add(call.id)
        if m.role == "tool":
            if m.tool_call_id not in open_calls:
                raise InvalidMessage(
                    f"messages[{i}]: tool message answers {m.tool_call_id!r}, which is not an open tool call "
                    "of an earlier assistant message",
                    field=f"messages[{i}].tool_call_id",
                )
            open_calls.discard(m.tool_call_id)
        events.append(_added(message_id, m))
    return events


def _added(message_id: str, m: NewMessage) -> MessageAdded:
    return MessageAdded(
        message_id=message_id,
        role=m.role,
        content=m.content,
        name=m.name,
        tool_calls=m.tool_calls,
        tool_call_id=m.tool_call_id,
        token_count=m.token_count,
        metadata=dict(m.metadata),
        raw=m.raw,
    )


def _remove(state: ConversationState, message_id: str, reason: str | None) -> MessageRemoved:
    message = state.messages.get(message_id)
    if message is None:
        raise MessageNotFound(message_id)
    answered = [
        c.id
        for c in message.tool_calls or ()
        if (ref := state.tool_calls.get(c.id)) is not None and ref.answer_message_id is not None
    ]
    if answered:
        raise ToolCallsStillAnswered(message_id, answered)
    return MessageRemoved(message_id=message_id, reason=reason)


# --- evolve -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """Mutable working copy, so that folding a long stream costs O(events), not O(events²)."""

    state: ConversationState | None
    messages: dict[str, Message]
    tool_calls: dict[str, ToolCallRef]

    @classmethod
    def of(cls, state: ConversationState | None) -> _Draft:
        if state is None:
            return cls(None, {}, {})
        return cls(state, dict(state.messages), dict(state.tool_calls))

    def freeze(self) -> ConversationState | None:
        if self.state is None:
            return None
        return replace(self.state, messages=self.messages, tool_calls=self.tool_calls)


def evolve(
    state: ConversationState | None, event: DomainEvent, at: datetime | None = None
) -> ConversationState:
    """The state after `event` (recorded at `at`). Pure: `state` is not modified."""
    draft = _Draft.of(state)
    _apply(draft, event, at)
    result = draft.freeze()
    assert result is not None
    return result


def replay(
    events: Iterable[tuple[DomainEvent, datetime | None]], state: ConversationState | None = None
) -> ConversationState | None:
    """Fold `(event, recorded_at)` pairs onto `state`; None when there are no events at all."""
    draft = _Draft.of(state)
    for event, at in events:
        _apply(draft, event, at)
    return draft.freeze()


def _apply(draft: _Draft, event: DomainEvent, at: datetime | None) -> None:
    if isinstance(event, ConversationStarted):
        draft.state = ConversationState(
            conversation_id=event.conversation_id,
            owner=event.user_id,
            title=event.title,
            title_explicit=event.title is not None,
            metadata=event.metadata,
            created_at=at,
        )
        draft.messages, draft.tool_calls = {}, {}
    if draft.state is None:
        raise ValueError(f"{type(event).__name__} before ConversationStarted")
    s = draft.state
    # One `replace` per event: a batch of a thousand messages is folded for every add_messages reply.
    changes: dict[str, Any] = {}
    if isinstance(event, MessageAdded):
        changes = _apply_added(draft, s, event, at)
    elif isinstance(event, ConversationUpdated):
        changes = {
            "title": event.title if event.title is not None else s.title,
            "title_explicit": s.title_explicit or event.title is not None,
            "metadata": event.metadata if event.metadata is not None else s.metadata,
        }
    elif isinstance(event, MessageRemoved):
        changes = _apply_removed(draft, s, event)
    elif isinstance(event, Deleted):
        changes = {"deleted": True}
    draft.state = replace(s, version=s.version + 1, updated_at=at, **changes)


def _apply_added(draft: _Draft, s: ConversationState, e: MessageAdded, at: datetime | None) -> dict[str, Any]:
    seq = s.last_seq + 1
    draft.messages[e.message_id] = Message(
        message_id=e.message_id,
        seq=seq,
        role=e.role,
        content=e.content,
        name=e.name,
        tool_calls=e.tool_calls,
        tool_call_id=e.tool_call_id,
        token_count=e.token_count,
        metadata=e.metadata,
        raw=e.raw,
        created_at=at,
    )
    for call in e.tool_calls or ():
        draft.tool_calls[call.id] = ToolCallRef(call.id, e.message_id)
    if e.tool_call_id is not None and (ref := draft.tool_calls.get(e.tool_call_id)) is not None:
        draft.tool_calls[e.tool_call_id] = replace(ref, answer_message_id=e.message_id)
    title = s.title
    if title is None and not s.title_explicit and e.role == "user":
        title = derive_title(e.content)
    return {"last_seq": seq, "message_count": s.message_count + 1, "last_message_at": at, "title": title}


def _apply_removed(draft: _Draft, s: ConversationState, e: MessageRemoved) -> dict[str, Any]:
    message = draft.messages.pop(e.message_id, None)
    if message is None:
        return {}
    for call in message.tool_calls or ():
        draft.tool_calls.pop(call.id, None)
    tcid = message.tool_call_id
    if (
        tcid is not None
        and (ref := draft.tool_calls.get(tcid)) is not None
        and ref.answer_message_id == e.message_id
    ):
        # Taking an answer out of the history reopens its call, so the agent can answer it again.
        draft.tool_calls[tcid] = replace(ref, answer_message_id=None)
    return {"message_count": s.message_count - 1}
