"""One error hierarchy for every backend; driver errors are translated at the backend edge."""

from __future__ import annotations


class EventStoreError(Exception):
    """Base of every error the event store raises."""


class WrongExpectedVersion(EventStoreError):
    """The stream was not at the version the caller expected (optimistic concurrency)."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        super().__init__(f"stream {stream_id!r} is at version {actual}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class DuplicateEvent(EventStoreError):
    """An event id that is already stored was appended again with different content."""

    def __init__(self, event_id: object, detail: str = "") -> None:
        msg = f"event {event_id} is already stored with different content"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.event_id = event_id


class PartitionMismatch(EventStoreError):
    """A stream was appended to with a partition key other than the one stored on it."""


class StoreUnavailable(EventStoreError):
    """The database cannot be reached (connection refused, lost or timed out). Safe to retry."""
