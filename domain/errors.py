"""Typed domain errors: each names one broken rule; nothing is written when one is raised."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule the Conversation aggregate enforces."""


class ConversationNotFound(DomainError):
    """No such conversation for this user (also raised for another user's conversation)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id} not found")
        self.conversation_id = conversation_id


class ConversationDeleted(ConversationNotFound):
    """The conversation was deleted: it takes no further events."""


class ConversationIdUnavailable(DomainError):
    """A client-chosen id is already used (by another user, or by a deleted conversation)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation id {conversation_id} is unavailable")
        self.conversation_id = conversation_id


class InvalidMessage(DomainError):
    """A message (or conversation field) breaks a role/field rule or a limit."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class LimitExceeded(InvalidMessage):
    """A configured size limit (content, metadata, batch) was exceeded."""


class MessageNotFound(DomainError):
    """The message is not (or no longer) in the conversation's history."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"message {message_id} not found")
        self.message_id = message_id


class ToolCallsStillAnswered(DomainError):
    """An assistant message cannot be removed while answers to its tool calls are present."""

    def __init__(self, message_id: str, call_ids: list[str]) -> None:
        super().__init__(
            f"message {message_id} has tool calls with answers still present: {', '.join(call_ids)}; "
            "remove the tool messages first"
        )
        self.message_id = message_id
        self.call_ids = call_ids
