"""Bulk rows for a rebuild: streams folded in memory, written with one executemany per table.

A rebuild applies this to every stream whose `ConversationStarted` lies in the batch (so the shadow
tables hold nothing of it yet); streams that started in an earlier batch go through the
`ConversationProjector`, whose rows are already there. The rows follow the projector's column
conventions exactly (tests/projections/test_bulk.py checks them against it):

- `version` and `updated_at` come from the stream's last event (`stream_version`, `recorded_at`);
- a message row is `projector._message_row` of the event that added it, so JSON columns hold the
  stored payload as it is (key order included) and `created_at` is its `recorded_at`;
- `tool_call_count` is the number of tool calls of visible assistant messages;
- a deleted conversation has no rows at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatledger.domain import EVENT_TYPES, event_from_payload, replay
from chatledger.eventstore import RecordedEvent

from .projector import _message_row
from .schema import ReadTables

STARTED = "ConversationStarted"


@dataclass(slots=True)
class Rows:
    conversations: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.conversations) + len(self.messages) + len(self.tool_calls)


def fold_stream(events: Sequence[RecordedEvent]) -> Rows:
    """The rows of one whole stream, given its events in version order from `ConversationStarted` on,
    folded by the domain's own `replay` (one set of rules for inline, rebuild and replay)."""
    stream_id = events[0].stream_id
    known = [e for e in events if e.type in EVENT_TYPES]
    state = replay((event_from_payload(e.type, dict(e.data)), e.recorded_at) for e in known)
    rows = Rows()
    if state is None or state.deleted:
        return rows
    last = known[-1]
    rows.conversations.append(
        {
            "id": stream_id,
            "user_id": state.owner,
            "title": state.title,
            "title_explicit": state.title_explicit,
            "metadata": state.metadata,
            "message_count": state.message_count,
            "last_seq": state.last_seq,
            "tool_call_count": len(state.tool_calls),
            "version": last.stream_version,
            "created_at": state.created_at,
            "updated_at": last.recorded_at,
            "last_message_at": state.last_message_at,
        }
    )
    # Message rows come from the stored events, so JSON columns keep the payload exactly as stored.
    added = {e.data["message_id"]: e for e in known if e.type == "MessageAdded"}
    for m in sorted(state.messages.values(), key=lambda m: m.seq):
        rows.messages.append(_message_row(stream_id, state.owner, m.seq, added[m.message_id]))
    rows.tool_calls.extend(
        {
            "conversation_id": stream_id,
            "call_id": ref.call_id,
            "user_id": state.owner,
            "assistant_message_id": ref.assistant_message_id,
            "answer_message_id": ref.answer_message_id,
        }
        for ref in state.tool_calls.values()
    )
    return rows


def split_batch(batch: Iterable[RecordedEvent]) -> tuple[dict[str, list[RecordedEvent]], list[RecordedEvent]]:
    """(streams that start in this batch, by id, each in version order; the other events in batch
    order). The first are new to tables filled from a log read in order; the second continue streams
    already there."""
    fresh: dict[str, list[RecordedEvent]] = {}
    rest: list[RecordedEvent] = []
    pending = list(batch)
    started = {e.stream_id for e in pending if e.type == STARTED}
    for e in pending:
        if e.stream_id in started:
            fresh.setdefault(e.stream_id, []).append(e)
        else:
            rest.append(e)
    for events in fresh.values():
        events.sort(key=lambda e: e.stream_version)
    return fresh, rest


def fold_streams(streams: Iterable[Sequence[RecordedEvent]]) -> Rows:
    out = Rows()
    for events in streams:
        rows = fold_stream(events)
        out.conversations.extend(rows.conversations)
        out.messages.extend(rows.messages)
        out.tool_calls.extend(rows.tool_calls)
    return out


async def insert_rows(tx: AsyncConnection, tables: ReadTables, rows: Rows) -> None:
    """One executemany per table (SQLAlchemy batches them into multi-row INSERTs on PostgreSQL)."""
    pairs: list[tuple[sa.Table, list[dict[str, Any]]]] = [
        (tables.conversations, rows.conversations),
        (tables.messages, rows.messages),
        (tables.tool_calls, rows.tool_calls),
    ]
    for table, values in pairs:
        if values:
            await tx.execute(table.insert(), values)
