"""Read models built from events: conversations, message history, tool calls; queries over them."""

from .projector import ConversationProjector
from .queries import InvalidCursor
from .schema import LIVE, ReadTables, read_tables

__all__ = ["LIVE", "ConversationProjector", "InvalidCursor", "ReadTables", "read_tables"]
