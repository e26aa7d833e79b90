"""Bulk rows for a rebuild: streams folded in memory, written with one executemany per table.

A rebuild applies this to every stream whose `ConversationStarted` lies in the batch (so the shadow
tables hold nothing of it yet); streams that started in an earlier batch go through the
`ConversationProjector`, whose rows are already there. The rows follow the projector's column
conventions exactly (tests/projections/test_bulk.py checks them against it and against the domain's
`replay`):

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

from chatledger.domain import derive_title
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
    """The rows of one whole stream, given its events in version order from `ConversationStarted` on.

    The domain's `evolve` rules (domain/conversation.py), applied to the stored payloads directly:
    `replay` would validate every payload into a pydantic event and copy the frozen state twice per
    event, which made it the largest cost of a rebuild.
    """
    stream_id = events[0].stream_id
    owner = ""
    title: str | None = None
    explicit = deleted = False
    metadata: Any = {}
    created_at = last_message_at = None
    last: RecordedEvent | None = None
    last_seq = 0
    messages: dict[str, tuple[int, RecordedEvent]] = {}  # visible, by id, in seq order
    calls: dict[str, list[str | None]] = {}  # call id -> [assistant message id, answer message id]
    for e in events:
        d, kind = e.data, e.type
        if kind == "MessageAdded":
            last_seq += 1
            message_id = d["message_id"]
            messages[message_id] = (last_seq, e)
            for call in d.get("tool_calls") or ():
                calls[call["id"]] = [message_id, None]
            answered = d.get("tool_call_id")
            if answered is not None and (ref := calls.get(answered)) is not None:
                ref[1] = message_id
            if title is None and not explicit and d["role"] == "user":
                title = derive_title(d.get("content"))
            last_message_at = e.recorded_at
        elif kind == "MessageRemoved":
            removed = messages.pop(d["message_id"], None)
            if removed is not None:
                gone = removed[1].data
                for call in gone.get("tool_calls") or ():
                    calls.pop(call["id"], None)
                answered = gone.get("tool_call_id")
                if (
                    answered is not None
                    and (ref := calls.get(answered)) is not None
                    and ref[1] == d["message_id"]
                ):
                    ref[1] = None  # taking an answer out of the history reopens its call
        elif kind == "ConversationUpdated":
            if d.get("title") is not None:
                title, explicit = d["title"], True
            if d.get("metadata") is not None:
                metadata = d["metadata"]
        elif kind == "ConversationStarted":
            owner, title, created_at = d["user_id"], d.get("title"), e.recorded_at
            explicit, metadata = title is not None, d.get("metadata") or {}
        elif kind == "ConversationDeleted":
            deleted = True
        else:
            continue  # the projector ignores other types too
        last = e
    rows = Rows()
    if deleted or last is None:
        return rows
    rows.conversations.append(
        {
            "id": stream_id,
            "user_id": owner,
            "title": title,
            "title_explicit": explicit,
            "metadata": metadata,
            "message_count": len(messages),
            "last_seq": last_seq,
            "tool_call_count": len(calls),
            "version": last.stream_version,
            "created_at": created_at,
            "updated_at": last.recorded_at,
            "last_message_at": last_message_at,
        }
    )
    rows.messages.extend(_message_row(stream_id, owner, seq, e) for seq, e in messages.values())
    rows.tool_calls.extend(
        {
            "conversation_id": stream_id,
            "call_id": call_id,
            "user_id": owner,
            "assistant_message_id": assistant,
            "answer_message_id": answer,
        }
        for call_id, (assistant, answer) in calls.items()
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
