"""Domain events: immutable facts, named in the past tense. Their JSON payload is what the log stores."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FunctionCall(_Frozen):
    name: str
    arguments: str


class ToolCall(_Frozen):
    """An assistant's tool call in the OpenAI shape."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class DomainEvent(_Frozen):
    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1

    def payload(self) -> dict[str, Any]:
        """The JSON object stored as the event's `data`."""
        return self.model_dump(mode="json")


class ConversationStarted(DomainEvent):
    TYPE: ClassVar[str] = "ConversationStarted"
    conversation_id: str
    user_id: str
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class MessageAdded(DomainEvent):
    TYPE: ClassVar[str] = "MessageAdded"
    message_id: str
    role: Role
    content: str | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None
    token_count: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    raw: Any = None


class ConversationUpdated(DomainEvent):
    """`title` None means unchanged; `metadata` is the whole new value (None: unchanged)."""

    TYPE: ClassVar[str] = "ConversationUpdated"
    title: str | None = None
    metadata: dict[str, Any] | None = None


class MessageRemoved(DomainEvent):
    TYPE: ClassVar[str] = "MessageRemoved"
    message_id: str
    reason: str | None = None


class ConversationDeleted(DomainEvent):
    TYPE: ClassVar[str] = "ConversationDeleted"
    reason: str | None = None


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.TYPE: cls
    for cls in (ConversationStarted, MessageAdded, ConversationUpdated, MessageRemoved, ConversationDeleted)
}


def event_from_payload(type_: str, data: dict[str, Any]) -> DomainEvent:
    """Rebuild a domain event from a stored (already upcast) payload."""
    try:
        cls = EVENT_TYPES[type_]
    except KeyError:
        raise ValueError(f"unknown event type {type_!r}") from None
    return cls.model_validate(data)
