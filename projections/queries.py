"""Reads over the read tables. Each costs O(page size) thanks to the (conversation_id, seq) primary key
and the (user_id, updated_at, id) index, whatever the history's length."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatledger.domain import ConversationState, Message, ToolCall, ToolCallRef, window_from_suffix
from chatledger.eventstore import StreamInfo

from .schema import LIVE, ReadTables
from .views import ConversationView, MessageView

Order = Literal["asc", "desc"]


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not issue."""


def utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def conversation_view(row: Any) -> ConversationView:
    return ConversationView(
        id=row.id,
        user_id=row.user_id,
        title=row.title,
        metadata=row.metadata or {},
        message_count=row.message_count,
        version=row.version,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        last_message_at=utc(row.last_message_at) if row.last_message_at else None,
    )


def domain_message(row: Any) -> Message:
    return Message(
        message_id=row.message_id,
        seq=row.seq,
        role=row.role,
        content=row.content,
        name=row.name,
        tool_calls=tuple(ToolCall.model_validate(c) for c in row.tool_calls) if row.tool_calls else None,
        tool_call_id=row.tool_call_id,
        token_count=row.token_count,
        metadata=row.metadata or {},
        raw=row.raw,
        created_at=utc(row.created_at),
    )


def message_view(conversation_id: str, m: Message) -> MessageView:
    assert m.created_at is not None
    return MessageView(
        id=m.message_id,
        conversation_id=conversation_id,
        seq=m.seq,
        role=m.role,
        content=m.content,
        name=m.name,
        tool_calls=list(m.tool_calls) if m.tool_calls is not None else None,
        tool_call_id=m.tool_call_id,
        token_count=m.token_count,
        metadata=dict(m.metadata),
        raw=m.raw,
        created_at=m.created_at,
    )


@cache
def _conversation_by_id(t: ReadTables) -> sa.Select[Any]:
    c = t.conversations
    return sa.select(c).where(c.c.id == sa.bindparam("cid"))


async def get_conversation(conn: AsyncConnection, conversation_id: str, t: ReadTables = LIVE) -> Any:
    return (await conn.execute(_conversation_by_id(t), {"cid": conversation_id})).one_or_none()


def encode_cursor(view: ConversationView) -> str:
    raw = json.dumps([view.updated_at.isoformat(), view.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, conv_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return utc(datetime.fromisoformat(stamp)), str(conv_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc


async def list_conversations(
    conn: AsyncConnection, user_id: str, limit: int, after: str | None, t: ReadTables = LIVE
) -> tuple[list[ConversationView], bool]:
    """Most recent activity first, keyset-paginated on (updated_at, id): no OFFSET scans."""
    c = t.conversations
    stmt = sa.select(c).where(c.c.user_id == user_id)
    if after is not None:
        stamp, conv_id = decode_cursor(after)
        stmt = stmt.where(
            sa.tuple_(c.c.updated_at, c.c.id)
            < sa.tuple_(sa.literal(stamp, c.c.updated_at.type), sa.literal(conv_id))
        )
    stmt = stmt.order_by(c.c.updated_at.desc(), c.c.id.desc()).limit(limit + 1)
    rows = (await conn.execute(stmt)).all()
    return [conversation_view(r) for r in rows[:limit]], len(rows) > limit


async def message_page(
    conn: AsyncConnection,
    conversation_id: str,
    *,
    limit: int,
    before: int | None = None,
    after: int | None = None,
    order: Order = "asc",
    t: ReadTables = LIVE,
) -> tuple[list[Message], bool]:
    """DESIGN section 9 "Message pages": the `limit` messages nearest the cursor (or the end the order
    starts from), returned in `order`, with `has_more` for the direction of travel."""
    m = t.messages
    stmt = sa.select(m).where(m.c.conversation_id == conversation_id)
    if after is not None:
        stmt = stmt.where(m.c.seq > after)
    if before is not None:
        stmt = stmt.where(m.c.seq < before)
    ascending = after is not None or (before is None and order == "asc")
    stmt = stmt.order_by(m.c.seq.asc() if ascending else m.c.seq.desc()).limit(limit + 1)
    rows = (await conn.execute(stmt)).all()
    page = [domain_message(r) for r in rows[:limit]]
    if ascending != (order == "asc"):
        page.reverse()
    return page, len(rows) > limit


async def messages_by_id(
    conn: AsyncConnection, conversation_id: str, message_ids: Sequence[str], t: ReadTables = LIVE
) -> list[Message]:
    if not message_ids:
        return []
    m = t.messages
    stmt = (
        sa.select(m)
        .where(m.c.conversation_id == conversation_id, m.c.message_id.in_(list(message_ids)))
        .order_by(m.c.seq)
    )
    return [domain_message(r) for r in (await conn.execute(stmt)).all()]


async def context_messages(
    conn: AsyncConnection,
    conversation_id: str,
    *,
    max_messages: int | None,
    max_tokens: int | None,
    t: ReadTables = LIVE,
) -> tuple[list[Message], int]:
    """The context window and how many pinned messages lead it, reading only the pinned run and as
    much of the tail as the limits need."""
    m = t.messages
    base = sa.select(m).where(m.c.conversation_id == conversation_id)
    pinned: list[Message] = []
    while True:
        after = pinned[-1].seq if pinned else 0
        rows = (await conn.execute(base.where(m.c.seq > after).order_by(m.c.seq).limit(32))).all()
        lead = [domain_message(r) for r in rows]
        run = next((i for i, msg in enumerate(lead) if msg.role != "system"), len(lead))
        pinned.extend(lead[:run])
        if run < len(lead) or len(rows) < 32:
            break
    floor = pinned[-1].seq if pinned else 0
    # The trailing open tool group can hold up to max_tool_calls answers: read a little past the limit.
    chunk = (max_messages or 64) + 160
    while True:
        stmt = base.where(m.c.seq > floor).order_by(m.c.seq.desc()).limit(chunk + 1)
        rows = (await conn.execute(stmt)).all()
        complete = len(rows) <= chunk
        suffix = [domain_message(r) for r in reversed(rows[:chunk])]
        window = window_from_suffix(
            pinned, suffix, complete=complete, max_messages=max_messages, max_tokens=max_tokens
        )
        if window is not None:
            return window, len(pinned)
        chunk *= 4


async def load_state(
    conn: AsyncConnection,
    conversation_id: str,
    stream: StreamInfo | None,
    *,
    message_ids: Sequence[str] = (),
    call_ids: Sequence[str] = (),
    all_messages: bool = False,
    t: ReadTables = LIVE,
) -> ConversationState | None:
    """The slice of the aggregate's state that a command needs (see domain/conversation.py), read
    under the stream lock so it is exactly the state at `stream.version`."""
    if stream is None:
        return None
    row = await get_conversation(conn, conversation_id, t)
    if row is None:
        # Events exist but no read row: only a tombstone removes it.
        return ConversationState(
            conversation_id, owner=stream.partition, version=stream.version, deleted=True
        )
    m, tc = t.messages, t.tool_calls
    if all_messages:
        stmt = sa.select(m).where(m.c.conversation_id == conversation_id).order_by(m.c.seq)
        messages = [domain_message(r) for r in (await conn.execute(stmt)).all()]
    else:
        messages = await messages_by_id(conn, conversation_id, message_ids, t)
    calls: dict[str, ToolCallRef] = {}
    assistants = [msg.message_id for msg in messages if msg.tool_calls]
    if call_ids or assistants:
        stmt = sa.select(tc).where(
            tc.c.conversation_id == conversation_id,
            sa.or_(tc.c.call_id.in_(list(call_ids)), tc.c.assistant_message_id.in_(assistants)),
        )
        for r in (await conn.execute(stmt)).all():
            calls[r.call_id] = ToolCallRef(r.call_id, r.assistant_message_id, r.answer_message_id)
    return ConversationState(
        conversation_id=conversation_id,
        owner=row.user_id,
        version=row.version,
        title=row.title,
        title_explicit=row.title_explicit,
        metadata=row.metadata or {},
        message_count=row.message_count,
        last_seq=row.last_seq,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        last_message_at=utc(row.last_message_at) if row.last_message_at else None,
        messages={msg.message_id: msg for msg in messages},
        tool_calls=calls,
    )
