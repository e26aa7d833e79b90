"""chatledger: event-sourced persistence for AI chat history.

`from chatledger import ChatLedger` is the library entry point; the error types come from here too
(`from chatledger import ConversationNotFound`). Everything is imported lazily, so that
`chatledger.domain` and `chatledger.eventstore` stay importable on their own.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .domain.errors import (
        ConversationDeleted,
        ConversationIdUnavailable,
        ConversationNotFound,
        DomainError,
        InvalidMessage,
        LimitExceeded,
        MessageNotFound,
        ToolCallsStillAnswered,
    )
    from .eventstore.errors import DuplicateEvent, EventStoreError, StoreUnavailable, WrongExpectedVersion
    from .idempotency import IdempotencyConflict
    from .reads import VersionNotFound
    from .service import ChatLedger
    from .settings import Settings

_HOMES = {
    "ChatLedger": ".service",
    "Settings": ".settings",
    "VersionNotFound": ".reads",
    "IdempotencyConflict": ".idempotency",
    **dict.fromkeys(
        [
            "DomainError",
            "ConversationNotFound",
            "ConversationDeleted",
            "ConversationIdUnavailable",
            "InvalidMessage",
            "LimitExceeded",
            "MessageNotFound",
            "ToolCallsStillAnswered",
        ],
        ".domain.errors",
    ),
    **dict.fromkeys(
        ["EventStoreError", "WrongExpectedVersion", "DuplicateEvent", "StoreUnavailable"],
        ".eventstore.errors",
    ),
}

__all__ = [
    "ChatLedger",
    "ConversationDeleted",
    "ConversationIdUnavailable",
    "ConversationNotFound",
    "DomainError",
    "DuplicateEvent",
    "EventStoreError",
    "IdempotencyConflict",
    "InvalidMessage",
    "LimitExceeded",
    "MessageNotFound",
    "Settings",
    "StoreUnavailable",
    "ToolCallsStillAnswered",
    "VersionNotFound",
    "WrongExpectedVersion",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'chatledger' has no attribute {name!r}")
    return getattr(import_module(home, __name__), name)
