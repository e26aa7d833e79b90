"""PostgreSQL-only statements for the projector's hot path: a `MessageAdded` batch becomes one
statement (update the conversation, insert the messages and their tool calls, record answers)
instead of two to four. The generic SQLAlchemy path in projector.py stays the reference (SQLite).

Data-modifying CTEs share one snapshot, so the answers UPDATE cannot see tool-call rows inserted
by the same statement: a call answered inside its own batch gets its answer at insert time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa

from chatledger.eventstore import RecordedEvent
from chatledger.eventstore.driver import DriverStatement, driver_statement

from .schema import ReadTables


@cache
def message_added(t: ReadTables) -> sa.TextClause:
    """One round trip for a batch of `MessageAdded` events of one stream (see `message_added_params`)."""
    return sa.text(f"WITH {message_added_ctes(t, fused=False)}\nSELECT last_seq FROM c")


@cache
def message_added_ctes(t: ReadTables, *, fused: bool = True) -> str:
    """`message_added` as common table expressions. `fused`: for the event store's insert statement
    (the inline projection's `write_fragment`), writing only when the store's `es_ev` wrote the
    events (its optimistic append writes nothing when the stream moved)."""
    c, m, tc = (f'"{x.name}"' for x in t.all())
    gate = "AND EXISTS (SELECT FROM es_ev)" if fused else ""
    return f"""
        c AS (
            UPDATE {c} SET version = :version, updated_at = :at, last_message_at = :at,
                last_seq = last_seq + :n, message_count = message_count + :n,
                tool_call_count = tool_call_count + :opened,
                title = CASE WHEN CAST(:derived AS text) IS NULL OR title_explicit OR title IS NOT NULL
                             THEN title ELSE CAST(:derived AS text) END
            WHERE id = :cid {gate}
            RETURNING last_seq, user_id
        ), m AS (
            INSERT INTO {m} (conversation_id, seq, message_id, user_id, role, content, name, tool_calls,
                             tool_call_id, token_count, metadata, raw, created_at)
            SELECT :cid, c.last_seq - :n + u.ord, u.message_id, c.user_id, u.role, u.content, u.name,
                   CAST(u.tool_calls AS json), u.tool_call_id, u.token_count, CAST(u.metadata AS json),
                   CAST(u.raw AS json), u.created_at
            FROM c, unnest(CAST(:message_ids AS text[]), CAST(:roles AS text[]), CAST(:contents AS text[]),
                           CAST(:names AS text[]), CAST(:tool_calls AS text[]),
                           CAST(:tool_call_ids AS text[]), CAST(:token_counts AS int[]),
                           CAST(:metadatas AS text[]), CAST(:raws AS text[]),
                           CAST(:created_ats AS timestamptz[]))
                    WITH ORDINALITY AS u(message_id, role, content, name, tool_calls, tool_call_id,
                                         token_count, metadata, raw, created_at, ord)
        ), a AS (
            SELECT * FROM unnest(CAST(:answer_calls AS text[]), CAST(:answer_ids AS text[]))
                WITH ORDINALITY AS a(call_id, answer, ord)
        ), opened AS (
            INSERT INTO {tc} (conversation_id, call_id, user_id, assistant_message_id, answer_message_id)
            SELECT :cid, o.call_id, c.user_id, o.assistant,
                   (SELECT a.answer FROM a WHERE a.call_id = o.call_id ORDER BY a.ord DESC LIMIT 1)
            FROM c, unnest(CAST(:call_ids AS text[]), CAST(:call_assistants AS text[]))
                    AS o(call_id, assistant)
        ), answered AS (
            UPDATE {tc} AS t SET answer_message_id = a.answer
            FROM a
            WHERE t.conversation_id = :cid AND t.call_id = a.call_id AND EXISTS (SELECT FROM c)
              AND a.ord = (SELECT max(b.ord) FROM a AS b WHERE b.call_id = a.call_id)
        )"""


@cache
def message_added_driver(t: ReadTables) -> DriverStatement:
    """`message_added` compiled once for `driver_fetch` (asyncpg directly, no per-call SQLAlchemy work)."""
    return driver_statement(message_added(t))


def message_added_params(
    stream_id: str, batch: Sequence[RecordedEvent], derived: str | None
) -> dict[str, Any]:
    last = batch[-1]
    data = [e.data for e in batch]
    calls = [(call["id"], d["message_id"]) for d in data for call in d.get("tool_calls") or ()]
    answers = [(d["tool_call_id"], d["message_id"]) for d in data if d.get("tool_call_id") is not None]
    return {
        "cid": stream_id,
        "version": last.stream_version,
        "at": last.recorded_at,
        "n": len(batch),
        "opened": len(calls),
        "derived": derived,
        "message_ids": [d["message_id"] for d in data],
        "roles": [d["role"] for d in data],
        "contents": [d.get("content") for d in data],
        "names": [d.get("name") for d in data],
        # sa.JSON without none_as_null stores a missing list as JSON null, `raw` as SQL NULL: keep both.
        "tool_calls": [_json(d.get("tool_calls")) for d in data],
        "tool_call_ids": [d.get("tool_call_id") for d in data],
        "token_counts": [d.get("token_count") for d in data],
        "metadatas": [_json(d.get("metadata") or {}) for d in data],
        "raws": [None if d.get("raw") is None else _json(d["raw"]) for d in data],
        "created_ats": [e.recorded_at for e in batch],
        "call_ids": [c for c, _ in calls],
        "call_assistants": [a for _, a in calls],
        "answer_calls": [c for c, _ in answers],
        "answer_ids": [a for _, a in answers],
    }


def _json(value: Any) -> str:
    # Most messages carry no tool calls and no metadata: skip the encoder for those (a rebuild
    # encodes two of these per message).
    if value is None:
        return "null"
    if isinstance(value, dict) and not value:
        return "{}"
    return json.dumps(value)
