"""chatledger: event-sourced persistence for AI chat history.

`from chatledger import ChatLedger` is the library entry point; it is imported lazily so that
`chatledger.domain` and `chatledger.eventstore` stay importable on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import ChatLedger

__all__ = ["ChatLedger"]


def __getattr__(name: str) -> Any:
    if name == "ChatLedger":
        from .service import ChatLedger

        return ChatLedger
    raise AttributeError(f"module 'chatledger' has no attribute {name!r}")
