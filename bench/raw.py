"""The physical baseline: hand-written asyncpg on tables equivalent to chatledger's.

`raw_*` tables are created `LIKE` the real ones (same columns, indexes and constraints); the stream
row also keeps its last hash so the single-statement append can chain hashes in SQL. Every statement
is prepared once per connection by asyncpg's statement cache.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from .seed import EVENT_COLUMNS

SETUP = """
CREATE TABLE raw_streams (LIKE streams INCLUDING ALL);
ALTER TABLE raw_streams ADD COLUMN prev_hash text NOT NULL DEFAULT '', ADD COLUMN last_hash text NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
CREATE TABLE raw_events (LIKE events INCLUDING ALL);
CREATE TABLE raw_conversations (LIKE conversations INCLUDING ALL);
CREATE TABLE raw_messages (LIKE messages INCLUDING ALL);
"""

# One round trip: bump the stream head (chaining the hash on the locked row), insert the event row,
# touch the conversation row and insert the message row. $3 is the event's JSON payload.
APPEND = """
WITH s AS (
    UPDATE raw_streams
    SET version = version + 1, updated_at = now(), prev_hash = last_hash,
        last_hash = encode(sha256(convert_to(last_hash || $3::text, 'UTF8')), 'hex')
    WHERE stream_id = $1
    RETURNING version, partition, prev_hash, last_hash
), e AS (
    INSERT INTO raw_events (global_position, event_id, stream_id, stream_version, partition, type,
                            schema_version, data, metadata, recorded_at, prev_hash, hash, tx_id)
    SELECT pg_current_xact_id()::text::bigint * 65536, $2::uuid, $1, s.version, s.partition,
           'MessageAdded', 1, $3::text::json, $4::text::json, now(), s.prev_hash, s.last_hash,
           pg_current_xact_id()::text::bigint
    FROM s
    RETURNING stream_version
), c AS (
    UPDATE raw_conversations
    SET version = e.stream_version, last_seq = last_seq + 1, message_count = message_count + 1,
        updated_at = now(), last_message_at = now()
    FROM e WHERE id = $1
    RETURNING last_seq, user_id
)
INSERT INTO raw_messages (conversation_id, seq, message_id, user_id, role, content, metadata, created_at)
SELECT $1, c.last_seq, $5, c.user_id, 'user', $6, '{}'::json, now() FROM c
"""

LAST_N = """
SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id AND c.user_id = $2
WHERE m.conversation_id = $1 ORDER BY m.seq DESC LIMIT $3
"""
BEFORE = """
SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id AND c.user_id = $2
WHERE m.conversation_id = $1 AND m.seq < $3 ORDER BY m.seq DESC LIMIT $4
"""
# The context window's raw equivalent: the leading (pinned) rows and the tail, in one statement.
CONTEXT = """
(SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id AND c.user_id = $2
 WHERE m.conversation_id = $1 ORDER BY m.seq LIMIT 8)
UNION ALL
(SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id AND c.user_id = $2
 WHERE m.conversation_id = $1 ORDER BY m.seq DESC LIMIT $3)
"""
RECENT = "SELECT * FROM conversations WHERE user_id = $1 ORDER BY updated_at DESC, id DESC LIMIT $2"


async def create_tables(conn: asyncpg.Connection) -> None:
    await conn.execute(SETUP)


async def add_conversations(conn: asyncpg.Connection, user_id: str, count: int) -> list[str]:
    """`count` new raw streams with their conversation rows, owned by `user_id`."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    now = datetime.now(UTC)
    await conn.executemany(
        "INSERT INTO raw_streams (stream_id, partition, version, created_at, updated_at) "
        "VALUES ($1, $2, 0, $3, $3)",
        [(i, user_id, now) for i in ids],
    )
    await conn.executemany(
        "INSERT INTO raw_conversations (id, user_id, title, title_explicit, metadata, message_count, "
        "last_seq, version, created_at, updated_at) VALUES ($1, $2, NULL, false, '{}', 0, 0, 0, $3, $3)",
        [(i, user_id, now) for i in ids],
    )
    return ids


def message_payload(content: str) -> tuple[str, str]:
    """A message id and the event payload JSON (the same fields chatledger stores)."""
    mid = str(uuid.uuid4())
    data: dict[str, Any] = {
        "message_id": mid,
        "role": "user",
        "content": content,
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "token_count": None,
        "metadata": {},
        "raw": None,
    }
    return mid, json.dumps(data, ensure_ascii=False)


Append = Callable[[asyncpg.Pool, str, str, str], Awaitable[None]]


async def append_one(pool: asyncpg.Pool, stream_id: str, user_id: str, content: str) -> None:
    mid, data = message_payload(content)
    meta = json.dumps({"actor": user_id})
    async with pool.acquire() as conn:
        await conn.execute(APPEND, stream_id, uuid.uuid4(), data, meta, mid, content)


# chatledger's transaction shape with nothing else: BEGIN, the stream lock and head read, the same
# one-statement write, COMMIT. It tells the cost of the round trips apart from the cost of the Python.
LOCK = """
SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), version, last_hash
FROM raw_streams WHERE stream_id = $1 FOR UPDATE
"""


async def append_one_in_transaction(pool: asyncpg.Pool, stream_id: str, user_id: str, content: str) -> None:
    mid, data = message_payload(content)
    meta = json.dumps({"actor": user_id})
    async with pool.acquire() as conn, conn.transaction():
        await conn.fetch(LOCK, stream_id)
        await conn.execute(APPEND, stream_id, uuid.uuid4(), data, meta, mid, content)


async def batch_executemany(
    conn: asyncpg.Connection, stream_id: str, user_id: str, contents: Sequence[str]
) -> None:
    """Append a batch in one transaction: lock the head, executemany the events and the messages."""
    rows, msgs = await _batch_rows(conn, stream_id, user_id, contents)
    await conn.executemany(
        "INSERT INTO raw_events (global_position, event_id, stream_id, stream_version, partition, type, "
        "schema_version, data, metadata, recorded_at, prev_hash, hash, tx_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json, $9::text::json, $10, $11, $12, $13)",
        rows,
    )
    await conn.executemany(
        "INSERT INTO raw_messages (conversation_id, seq, message_id, user_id, role, content, metadata, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7::text::json, $8)",
        msgs,
    )


async def batch_copy(conn: asyncpg.Connection, stream_id: str, user_id: str, contents: Sequence[str]) -> None:
    """Append a batch in one transaction with COPY for the event and message rows."""
    rows, msgs = await _batch_rows(conn, stream_id, user_id, contents)
    await conn.copy_records_to_table(
        "raw_events",
        records=rows,
        columns=EVENT_COLUMNS,
    )
    await conn.copy_records_to_table(
        "raw_messages",
        records=msgs,
        columns=[
            "conversation_id",
            "seq",
            "message_id",
            "user_id",
            "role",
            "content",
            "metadata",
            "created_at",
        ],
    )


async def _batch_rows(
    conn: asyncpg.Connection, stream_id: str, user_id: str, contents: Sequence[str]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Lock and move the stream and conversation rows by len(contents); build chained rows."""
    n = len(contents)
    head = await conn.fetchrow(
        "SELECT version, last_hash, pg_current_xact_id()::text::bigint AS xid FROM raw_streams "
        "WHERE stream_id = $1 FOR UPDATE",
        stream_id,
    )
    conv = await conn.fetchrow(
        "UPDATE raw_conversations SET version = version + $2, last_seq = last_seq + $2, "
        "message_count = message_count + $2, updated_at = now(), last_message_at = now() WHERE id = $1 "
        "RETURNING last_seq",
        stream_id,
        n,
    )
    now = datetime.now(UTC)
    prev: str = head["last_hash"]
    rows: list[tuple[Any, ...]] = []
    msgs: list[tuple[Any, ...]] = []
    first_seq = conv["last_seq"] - n + 1
    for i, content in enumerate(contents):
        mid, data = message_payload(content)
        digest = hashlib.sha256((prev + data).encode()).hexdigest()
        version = head["version"] + i + 1
        rows.append(
            (
                head["xid"] * 65536 + i,
                uuid.uuid4(),
                stream_id,
                version,
                user_id,
                "MessageAdded",
                1,
                data,
                "{}",
                now,
                prev,
                digest,
                head["xid"],
            )
        )
        msgs.append((stream_id, first_seq + i, mid, user_id, "user", content, "{}", now))
        prev = digest
    await conn.execute(
        "UPDATE raw_streams SET version = $2, prev_hash = $3, last_hash = $4, updated_at = now() "
        "WHERE stream_id = $1",
        stream_id,
        head["version"] + n,
        rows[-1][10],
        prev,
    )
    return rows, msgs
