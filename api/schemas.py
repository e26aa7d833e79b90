"""Edge schemas: what HTTP clients send (`XIn`, `XPatch`) and receive (`XPublic`, `XsPublic`).

Bodies are strict (`extra="forbid"`, no string-to-number coercion). The domain re-checks every rule
and limit; these models exist so the OpenAPI document is precise and obvious type errors are 422s.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, StrictInt, StrictStr, field_validator
from pydantic.json_schema import SkipJsonSchema

from chatledger.eventstore import VerifyResult
from chatledger.eventstore.hashing import format_time
from chatledger.projections.views import (
    ConversationPage,
    ConversationView,
    EventView,
    MessageView,
)


def json_response(model: BaseModel, *, status_code: int = 200) -> Response:
    """`model` as JSON, for a route whose `response_model` is `model`'s class: what FastAPI would send,
    without its dumping the model to a dict, validating that against the class again and encoding it
    (work per message of a page, for a model the route has just built and validated)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


Timestamp = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]
HashedTimestamp = Annotated[datetime, PlainSerializer(format_time, return_type=str)]
"""Always with microseconds, as the hash chain writes it, so an event's hash can be recomputed."""
Role = Literal["system", "user", "assistant", "tool"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Problem(_Out):
    """RFC 9457 problem details (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[dict[str, Any]] | None = None


# --- conversations ------------------------------------------------------------------------------------


class ConversationIn(_In):
    id: StrictStr | None = Field(None, description="Optional client-chosen UUID (get-or-create).")
    title: StrictStr | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ConversationPatch(_In):
    """`title` replaces; `metadata` merges as RFC 7396 JSON Merge Patch (a key set to null is removed).
    Omit a field to keep it; an explicit null for either is 422."""

    title: StrictStr | SkipJsonSchema[None] = None
    metadata: dict[str, Any] | SkipJsonSchema[None] = None

    @field_validator("title", "metadata", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null (omit the field to keep it)")
        return value


class ConversationPublic(_Out):
    object: Literal["conversation"] = "conversation"
    id: str
    user_id: str
    title: str | None
    metadata: dict[str, Any]
    message_count: int
    version: int
    created_at: Timestamp
    updated_at: Timestamp
    last_message_at: Timestamp | None
    tool_call_count: int = Field(0, description="Tool calls opened by the visible assistant messages.")

    @classmethod
    def of(cls, view: ConversationView) -> ConversationPublic:
        return cls(**view.model_dump())


class ConversationsPublic(_Out):
    object: Literal["list"] = "list"
    data: list[ConversationPublic]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `after` to fetch the next page.")

    @classmethod
    def of(cls, page: ConversationPage) -> ConversationsPublic:
        return cls(
            data=[ConversationPublic.of(v) for v in page.data],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )


# --- messages -----------------------------------------------------------------------------------------


class FunctionCallIn(_In):
    name: StrictStr
    arguments: StrictStr


class ToolCallIn(_In):
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_In):
    """A message in Chat Completions shape, plus chatledger's extras (`token_count`, `metadata`,
    `raw`: the provider-native item, returned byte-for-byte; `id`: optional client UUID)."""

    role: Role
    content: StrictStr | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: StrictStr | None = None
    token_count: StrictInt | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    raw: Any = None
    id: StrictStr | None = None


class MessagesIn(_In):
    messages: list[MessageIn] = Field(min_length=1, description="1 to 100 messages, appended atomically.")


class MessagePublic(_Out):
    object: Literal["message"] = "message"
    id: str
    message_id: str = Field(description="Same value as `id`.")
    conversation_id: str
    seq: int
    role: Role
    content: str | None
    name: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    token_count: int | None
    metadata: dict[str, Any]
    raw: Any
    created_at: Timestamp

    @classmethod
    def of(cls, view: MessageView) -> MessagePublic:
        calls = view.tool_calls
        return cls(
            id=view.id,
            message_id=view.id,
            conversation_id=view.conversation_id,
            seq=view.seq,
            role=view.role,
            content=view.content,
            name=view.name,
            tool_calls=None if calls is None else [c.model_dump(mode="json") for c in calls],
            tool_call_id=view.tool_call_id,
            token_count=view.token_count,
            metadata=view.metadata,
            raw=view.raw,
            created_at=view.created_at,
        )


class MessagesPublic(_Out):
    object: Literal["list"] = "list"
    data: list[MessagePublic]
    has_more: bool
    next_cursor: str | None = Field(
        description="The seq to pass as `after` (ascending travel) or `before` (descending) for the "
        "next page; null when there is none."
    )
    order: Literal["asc", "desc"]
    version: int


class AppendedPublic(_Out):
    data: list[MessagePublic]
    version: int


class ContextPublic(_Out):
    object: Literal["context"] = "context"
    data: list[dict[str, Any]] = Field(
        description="Chat Completions messages, or stored fields (format=raw)."
    )
    version: int
    token_estimate: int
    pinned: int = Field(description="How many leading system messages were pinned.")
    format: Literal["chat", "raw"]


# --- audit --------------------------------------------------------------------------------------------


class EventPublic(_Out):
    """One recorded event. Without `hash`, it is the envelope the hash covers: `hash =
    sha256(prev_hash || canonical JSON of the rest)`, canonical as in docs/audit.md."""

    event_id: str
    stream_id: str
    stream_version: int
    global_position: int
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: HashedTimestamp
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, view: EventView) -> EventPublic:
        return cls(**view.model_dump())


class EventsPublic(_Out):
    object: Literal["list"] = "list"
    data: list[EventPublic]
    has_more: bool
    version: int


class BrokenLinkPublic(_Out):
    stream_id: str
    version: int
    position: int | None
    expected_hash: str | None
    stored_hash: str | None
    reason: str


class VerifyPublic(_Out):
    ok: bool
    events_checked: int
    # Absent when ok; when present it has every key, null where a deleted row leaves no value.
    first_broken: BrokenLinkPublic | None = Field(None, exclude_if=lambda broken: broken is None)

    @classmethod
    def of(cls, result: VerifyResult) -> VerifyPublic:
        broken = result.first_broken
        return cls(
            ok=result.ok,
            events_checked=result.events_checked,
            first_broken=BrokenLinkPublic(**_fields(broken)) if broken is not None else None,
        )


def _fields(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    fields: dict[str, Any] = asdict(obj)
    return fields


class Health(_Out):
    status: Literal["ok", "unavailable"]
