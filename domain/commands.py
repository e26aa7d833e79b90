"""Commands: requests to change a conversation, named in the imperative."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .messages import NewMessage


@dataclass(frozen=True, slots=True)
class StartConversation:
    conversation_id: str
    user_id: str
    title: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AddMessages:
    user_id: str
    messages: tuple[NewMessage, ...]


@dataclass(frozen=True, slots=True)
class UpdateConversation:
    """`title` None leaves it unchanged; `metadata_patch` is an RFC 7396 merge patch."""

    user_id: str
    title: str | None = None
    metadata_patch: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RemoveMessage:
    user_id: str
    message_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ClearMessages:
    user_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteConversation:
    user_id: str
    reason: str | None = None


Command = (
    StartConversation | AddMessages | UpdateConversation | RemoveMessage | ClearMessages | DeleteConversation
)
