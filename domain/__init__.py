"""The pure core: events, commands and the Conversation aggregate. No I/O lives here."""

from .commands import (
    AddMessages,
    ClearMessages,
    Command,
    DeleteConversation,
    RemoveMessage,
    StartConversation,
    UpdateConversation,
)
from .context import context_window, estimate_tokens, to_chat_format, window_from_suffix
from .conversation import ConversationState, Message, ToolCallRef, decide, evolve, replay
from .errors import (
    ConversationDeleted,
    ConversationIdUnavailable,
    ConversationNotFound,
    DomainError,
    InvalidMessage,
    LimitExceeded,
    MessageNotFound,
    ToolCallsStillAnswered,
)
from .events import (
    EVENT_TYPES,
    ConversationStarted,
    ConversationUpdated,
    DomainEvent,
    FunctionCall,
    MessageAdded,
    MessageRemoved,
    Role,
    ToolCall,
    event_from_payload,
)
from .limits import DEFAULT_LIMITS, Limits
from .messages import NewMessage, check_metadata, check_storable, parse_message
from .title import derive_title, merge_patch

__all__ = [
    "DEFAULT_LIMITS",
    "EVENT_TYPES",
    "AddMessages",
    "ClearMessages",
    "Command",
    "ConversationDeleted",
    "ConversationIdUnavailable",
    "ConversationNotFound",
    "ConversationStarted",
    "ConversationState",
    "ConversationUpdated",
    "DeleteConversation",
    "DomainError",
    "DomainEvent",
    "FunctionCall",
    "InvalidMessage",
    "LimitExceeded",
    "Limits",
    "Message",
    "MessageAdded",
    "MessageNotFound",
    "MessageRemoved",
    "NewMessage",
    "RemoveMessage",
    "Role",
    "StartConversation",
    "ToolCall",
    "ToolCallRef",
    "ToolCallsStillAnswered",
    "UpdateConversation",
    "check_metadata",
    "check_storable",
    "context_window",
    "decide",
    "derive_title",
    "estimate_tokens",
    "event_from_payload",
    "evolve",
    "merge_patch",
    "parse_message",
    "replay",
    "to_chat_format",
    "window_from_suffix",
]
