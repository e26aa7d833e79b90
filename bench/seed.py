"""Fast seeding for the read scenarios: event rows and read rows written with COPY.

The event rows are real: numbered, positioned (`tx_id * 65536 + i`, as the PostgreSQL store does) and
hash-chained with chatledger's own `record_events` (eventstore/recording.py, which uses
eventstore/hashing.py), so `ChatLedger.verify` accepts them; the read rows are what the inline
projector would have written for the same events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from chatledger.domain import derive_title
from chatledger.domain.events import ConversationStarted, MessageAdded
from chatledger.eventstore.model import GENESIS_HASH, NewEvent, RecordedEvent
from chatledger.eventstore.recording import record_events

EVENT_COLUMNS = [
    "global_position",
    "event_id",
    "stream_id",
    "stream_version",
    "partition",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
    "prev_hash",
    "hash",
    "tx_id",
]
MESSAGE_COLUMNS = [
    "conversation_id",
    "seq",
    "message_id",
    "user_id",
    "role",
    "content",
    "metadata",
    "created_at",
    "token_count",
]
CONVERSATION_COLUMNS = [
    "id",
    "user_id",
    "title",
    "title_explicit",
    "metadata",
    "message_count",
    "last_seq",
    "version",
    "created_at",
    "updated_at",
]
CHUNK = 50_000


def _message(seq: int) -> MessageAdded:
    if seq == 1:
        return MessageAdded(
            message_id=str(uuid.uuid4()), role="system", content="You are a helpful assistant."
        )
    role = "user" if seq % 2 == 0 else "assistant"
    text = f"Message {seq}: " + ("please explain the next step of the plan in detail. " * 3)
    return MessageAdded(message_id=str(uuid.uuid4()), role=role, content=text, token_count=40)


def _event_row(e: RecordedEvent, tx_id: int) -> tuple[Any, ...]:
    return (
        e.global_position,
        e.event_id,
        e.stream_id,
        e.stream_version,
        e.partition,
        e.type,
        e.schema_version,
        json.dumps(e.data, ensure_ascii=False),
        json.dumps(e.metadata, ensure_ascii=False),
        e.recorded_at,
        e.prev_hash,
        e.hash,
        tx_id,
    )


async def _xid(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_current_xact_id()::text::bigint"))


async def seed_messages(conn: asyncpg.Connection, user_id: str, count: int) -> str:
    """A new conversation of `user_id` with `count` messages (seq 1 a system message)."""
    cid = str(uuid.uuid4())
    now = datetime.now(UTC)
    await _start(conn, [cid], user_id, now)
    for first in range(1, count + 1, CHUNK):
        await _append_chunk(conn, cid, user_id, first, min(CHUNK, count - first + 1))
    return cid


async def _append_chunk(conn: asyncpg.Connection, cid: str, user_id: str, first: int, n: int) -> None:
    async with conn.transaction():
        head = await conn.fetchrow(
            "SELECT s.version, e.hash FROM streams s JOIN events e ON e.stream_id = s.stream_id "
            "AND e.stream_version = s.version WHERE s.stream_id = $1 FOR UPDATE OF s",
            cid,
        )
        xid = await _xid(conn)
        now = datetime.now(UTC)
        added = [_message(seq) for seq in range(first, first + n)]
        new = [NewEvent("MessageAdded", m.payload(), {"actor": user_id}) for m in added]
        recorded = record_events(
            new,
            stream_id=cid,
            partition=user_id,
            version=head["version"],
            prev_hash=head["hash"],
            positions=range(xid * 65536, xid * 65536 + n),
            recorded_at=now,
        )
        await conn.copy_records_to_table(
            "events", records=[_event_row(e, xid) for e in recorded], columns=EVENT_COLUMNS
        )
        await conn.copy_records_to_table(
            "messages",
            records=[
                (cid, first + i, m.message_id, user_id, m.role, m.content, "{}", now, m.token_count)
                for i, m in enumerate(added)
            ],
            columns=MESSAGE_COLUMNS,
        )
        last = recorded[-1].stream_version
        await conn.execute(
            "UPDATE streams SET version = $2, updated_at = $3 WHERE stream_id = $1", cid, last, now
        )
        title = next((t for m in added if m.role == "user" and (t := derive_title(m.content))), None)
        await conn.execute(
            "UPDATE conversations SET version = $2, last_seq = last_seq + $3,"
            " message_count = message_count + $3, updated_at = $4, last_message_at = $4,"
            " title = coalesce(title, $5) WHERE id = $1",
            cid,
            last,
            n,
            now,
            title,
        )


async def seed_conversations(conn: asyncpg.Connection, user_id: str, count: int) -> list[str]:
    """`count` empty conversations of `user_id`, with distinct activity times."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    base = datetime.now(UTC) - timedelta(days=30)
    for start in range(0, count, CHUNK):
        await _start(conn, ids[start : start + CHUNK], user_id, base + timedelta(seconds=start))
    return ids


async def _start(conn: asyncpg.Connection, ids: Sequence[str], user_id: str, base: datetime) -> None:
    async with conn.transaction():
        xid = await _xid(conn)
        events: list[tuple[Any, ...]] = []
        convs: list[tuple[Any, ...]] = []
        streams: list[tuple[Any, ...]] = []
        for i, cid in enumerate(ids):
            at = base + timedelta(seconds=i)
            data = ConversationStarted(conversation_id=cid, user_id=user_id).payload()
            (e,) = record_events(
                [NewEvent("ConversationStarted", data, {"actor": user_id})],
                stream_id=cid,
                partition=user_id,
                version=0,
                prev_hash=GENESIS_HASH,
                positions=[xid * 65536 + i],
                recorded_at=at,
            )
            events.append(_event_row(e, xid))
            streams.append((cid, user_id, 1, at, at))
            convs.append((cid, user_id, None, False, "{}", 0, 0, 1, at, at))
        await conn.copy_records_to_table(
            "streams",
            records=streams,
            columns=["stream_id", "partition", "version", "created_at", "updated_at"],
        )
        await conn.copy_records_to_table("events", records=events, columns=EVENT_COLUMNS)
        await conn.copy_records_to_table("conversations", records=convs, columns=CONVERSATION_COLUMNS)
