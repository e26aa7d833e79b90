"""A chat-agnostic append-only event store with PostgreSQL, SQLite and in-memory backends."""

from .base import Decider, EventStore, InlineProjection, StreamContext, WriteFragment
from .errors import DuplicateEvent, EventStoreError, PartitionMismatch, StoreUnavailable, WrongExpectedVersion
from .model import (
    ANY,
    GENESIS_HASH,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    BrokenLink,
    Expected,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamHint,
    StreamInfo,
    VerifyResult,
)
from .upcasting import UpcasterRegistry

__all__ = [
    "ANY",
    "GENESIS_HASH",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "BrokenLink",
    "Decider",
    "DuplicateEvent",
    "EventStore",
    "EventStoreError",
    "Expected",
    "ExpectedVersion",
    "InlineProjection",
    "NewEvent",
    "PartitionMismatch",
    "RecordedEvent",
    "StoreUnavailable",
    "StreamContext",
    "StreamHint",
    "StreamInfo",
    "UpcasterRegistry",
    "VerifyResult",
    "WriteFragment",
    "WrongExpectedVersion",
]
