"""Read-model views: what queries return to the application (and, reshaped, to HTTP clients)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from chatledger.domain import Role, ToolCall


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ConversationView(_View):
    id: str
    user_id: str
    title: str | None
    metadata: dict[str, Any]
    message_count: int
    version: int
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime | None
    tool_call_count: int = 0
    """Tool calls opened by the visible assistant messages (added by migration 0002)."""


class MessageView(_View):
    id: str
    conversation_id: str
    seq: int
    role: Role
    content: str | None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    token_count: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    raw: Any = None
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def message_id(self) -> str:
        """`id` under its `MessageAdded` name."""
        return self.id


class ConversationPage(_View):
    data: list[ConversationView]
    has_more: bool
    next_cursor: str | None


class MessagePage(_View):
    data: list[MessageView]
    has_more: bool
    order: Literal["asc", "desc"]
    version: int


class AddedMessages(_View):
    data: list[MessageView]
    version: int


class ContextWindow(_View):
    data: list[dict[str, Any]]
    """Chat Completions messages (`format="chat"`) or stored fields (`format="raw"`)."""
    version: int
    token_estimate: int
    pinned: int
    """How many leading system messages were pinned."""


class EventView(_View):
    """A recorded event's envelope, named as DESIGN section 2 names it: dropping `hash` leaves exactly
    what the hash covers."""

    event_id: str
    stream_id: str
    stream_version: int
    global_position: int
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    prev_hash: str
    hash: str


class EventPage(_View):
    data: list[EventView]
    has_more: bool
    version: int
