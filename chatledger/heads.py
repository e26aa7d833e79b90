"""What this process remembers of the conversations it appended to last.

After an append, the service knows the stream's new head exactly: its version, the hash of its last
event and the conversation's state (the state it decided on, plus the events it appended). Handed
back to the store as a `StreamHint`, that lets the next single-message append on PostgreSQL skip its
read of the head (one round trip instead of two). The store's write checks the version and the hash,
so an entry made stale by another process costs one round trip and is replaced, never trusted.
"""

from __future__ import annotations

from collections import OrderedDict

from chatledger.domain import ConversationState
from chatledger.eventstore import AppendResult, StreamHint
from chatledger.projections import queries as q


class RecentHeads:
    """A bounded LRU of stream hints by conversation id; size 0 remembers nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._hints: OrderedDict[str, StreamHint] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hints)

    def get(self, cid: str) -> StreamHint | None:
        hint = self._hints.get(cid)
        if hint is not None:
            self._hints.move_to_end(cid)
        return hint

    def remember(self, cid: str, result: AppendResult, after: ConversationState | None) -> None:
        """Keep the head that `result` left, with `after` (the state folded through its events)."""
        if (
            self.size <= 0
            or after is None
            or after.deleted
            or after.version != result.version
            or not result.events
        ):
            self.forget(cid)
            return
        last = result.events[-1]
        self._hints[cid] = StreamHint(result.version, last.partition, last.hash, [q.state_row(after)])
        self._hints.move_to_end(cid)
        while len(self._hints) > self.size:
            self._hints.popitem(last=False)

    def forget(self, cid: str) -> None:
        self._hints.pop(cid, None)
