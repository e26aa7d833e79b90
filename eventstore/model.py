"""Value types of the event store: what goes in, what comes out."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

GENESIS_HASH = "0" * 64
"""`prev_hash` of the first event of every stream."""


class ExpectedVersion(enum.Enum):
    """Symbolic expectations for `append`; an `int` means "the stream is exactly at this version"."""

    ANY = "any"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS
Expected: TypeAlias = ExpectedVersion | int

JSONObject: TypeAlias = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended. `event_id` is the idempotency key."""

    type: str
    data: JSONObject
    metadata: JSONObject = field(default_factory=dict)
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    schema_version: int = 1
    recorded_at: datetime | None = None
    """Only for importing a log: the event's original time (otherwise the store's clock at append)."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: its envelope and its (upcast) payload."""

    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    global_position: int
    partition: str
    type: str
    schema_version: int
    data: JSONObject
    metadata: JSONObject
    recorded_at: datetime
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The head of one stream."""

    stream_id: str
    partition: str
    version: int


@dataclass(frozen=True, slots=True)
class StreamHint:
    """What a caller remembers of a stream from its own last append to it: the version it left the
    stream at, its partition, the hash of its last event, and the rows that the caller's `prefetch`
    would read at that version (the caller derives them; the store does not check them).

    Given to `append_with`, it lets PostgreSQL's optimistic append skip its read: the write still
    checks that the stream is at `version` and that its event there has `last_hash`. That hash
    chains every earlier event, so a hint that matches describes exactly the stream as it is, and one
    that does not costs a round trip, never a wrong write."""

    version: int
    partition: str
    last_hash: str
    prefetched: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append wrote, or, for an idempotent retry, what the original append wrote."""

    stream_id: str
    events: tuple[RecordedEvent, ...]
    version: int
    """The stream version after the append (after the original append, for a retry)."""
    replayed: bool = False
    """True when every event was already stored: nothing was written."""

    @property
    def positions(self) -> tuple[int, ...]:
        return tuple(e.global_position for e in self.events)


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first event whose stored hash does not match the recomputed chain."""

    stream_id: str
    version: int
    position: int | None
    expected_hash: str | None
    stored_hash: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a hash-chain check."""

    ok: bool
    events_checked: int
    first_broken: BrokenLink | None = None
