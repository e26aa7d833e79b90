"""Reads over the read tables. Each costs O(page size) thanks to the (conversation_id, seq) primary key
and the (user_id, updated_at, id) index, whatever the history's length."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from chatledger.domain import ConversationState, Message, ToolCall, ToolCallRef, window_from_suffix
from chatledger.eventstore import StreamInfo
from chatledger.eventstore.driver import DriverConnection, DriverStatement, driver_fetch, driver_statement

from .schema import LIVE, ReadTables
from .views import ConversationView, MessageView

Order = Literal["asc", "desc"]


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not issue."""


def utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# Reads run on PostgreSQL through asyncpg directly (`driver_fetch`, each statement compiled once),
# elsewhere through SQLAlchemy; either way a row is a mapping keyed by the view's field names, and
# views are validated a page at a time (one call into pydantic's core, cheaper than building each
# model from Python).
Row = Mapping[Any, Any]
_MESSAGE_VIEWS: TypeAdapter[list[MessageView]] = TypeAdapter(list[MessageView])
_CONVERSATION_VIEWS: TypeAdapter[list[ConversationView]] = TypeAdapter(list[ConversationView])


def message_columns(m: sa.Table) -> list[sa.ColumnElement[Any]]:
    """The messages table's columns under `MessageView`'s field names."""
    return [
        m.c.message_id.label("id"),
        m.c.conversation_id,
        m.c.seq,
        m.c.role,
        m.c.content,
        m.c.name,
        m.c.tool_calls,
        m.c.tool_call_id,
        m.c.token_count,
        m.c.metadata,
        m.c.raw,
        m.c.created_at,
    ]


Prepared = tuple[sa.Select[Any], DriverStatement]
"""A statement with its `driver_statement` compilation (built once, in a cached function)."""


Conn = AsyncConnection | DriverConnection
"""What the reads take: `SqlEventStore.reader()` (or `connect()`, or an append's `StreamContext.tx`)."""


def prepared(stmt: sa.Select[Any], pg: sa.Select[Any] | None = None) -> Prepared:
    """`pg`: PostgreSQL's own form of `stmt`, where they differ (a list as one array parameter)."""
    return stmt, driver_statement(stmt if pg is None else pg)


async def fetch(conn: Conn, statement: Prepared, params: Mapping[str, Any]) -> Sequence[Row]:
    stmt, driver = statement
    if isinstance(conn, DriverConnection) or conn.dialect.name == "postgresql":
        return await driver_fetch(conn, driver, params)
    return (await conn.execute(stmt, params)).mappings().all()


def _any_of(column: sa.ColumnElement[Any], name: str, pg: bool) -> sa.ColumnElement[bool]:
    """`column IN (:name...)`: one array parameter on PostgreSQL, an expanding list elsewhere."""
    if pg:
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(sa.Text)))
    return column.in_(sa.bindparam(name, expanding=True))


def _fields(row: Row) -> dict[str, Any]:
    fields = dict(row)
    fields["created_at"] = utc(fields["created_at"])
    return fields


def message_views(rows: Sequence[Row]) -> list[MessageView]:
    return _MESSAGE_VIEWS.validate_python([_fields(r) for r in rows])


def conversation_views(rows: Sequence[Row]) -> list[ConversationView]:
    def fields(row: Row) -> dict[str, Any]:
        out = _fields(row)
        out["updated_at"] = utc(out["updated_at"])
        if out["last_message_at"] is not None:
            out["last_message_at"] = utc(out["last_message_at"])
        return out

    return _CONVERSATION_VIEWS.validate_python([fields(r) for r in rows])


def domain_message(row: Row) -> Message:
    return Message(
        message_id=row["id"],
        seq=row["seq"],
        role=row["role"],
        content=row["content"],
        name=row["name"],
        tool_calls=tuple(ToolCall.model_validate(c) for c in row["tool_calls"])
        if row["tool_calls"]
        else None,
        tool_call_id=row["tool_call_id"],
        token_count=row["token_count"],
        metadata=row["metadata"] or {},
        raw=row["raw"],
        created_at=utc(row["created_at"]),
    )


def message_view(conversation_id: str, m: Message) -> MessageView:
    assert m.created_at is not None
    return MessageView.model_validate(
        {
            "id": m.message_id,
            "conversation_id": conversation_id,
            "seq": m.seq,
            "role": m.role,
            "content": m.content,
            "name": m.name,
            "tool_calls": list(m.tool_calls) if m.tool_calls is not None else None,
            "tool_call_id": m.tool_call_id,
            "token_count": m.token_count,
            "metadata": dict(m.metadata),
            "raw": m.raw,
            "created_at": m.created_at,
        }
    )


@cache
def conversation_by_id(t: ReadTables = LIVE) -> sa.Select[Any]:
    """The conversation row by id (bind parameter `cid`); built once, so it can serve as an append's
    prefetch."""
    c = t.conversations
    return sa.select(c).where(c.c.id == sa.bindparam("cid"))


@cache
def _conversation_by_id(t: ReadTables) -> Prepared:
    return prepared(conversation_by_id(t))


async def get_conversation(conn: Conn, conversation_id: str, t: ReadTables = LIVE) -> Row | None:
    rows = await fetch(conn, _conversation_by_id(t), {"cid": conversation_id})
    return rows[0] if rows else None


@cache
def _owned_conversation(t: ReadTables) -> Prepared:
    c = t.conversations
    stmt = sa.select(c).where(c.c.id == sa.bindparam("cid"), c.c.user_id == sa.bindparam("uid"))
    return prepared(stmt)


async def owned_conversation(
    conn: Conn, conversation_id: str, user_id: str, t: ReadTables = LIVE
) -> ConversationView | None:
    rows = await fetch(conn, _owned_conversation(t), {"cid": conversation_id, "uid": user_id})
    return conversation_views(rows)[0] if rows else None


def encode_cursor(view: ConversationView) -> str:
    raw = json.dumps([view.updated_at.isoformat(), view.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, conv_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return utc(datetime.fromisoformat(stamp)), str(uuid.UUID(conv_id))
    # OverflowError: a time at the edge of the calendar that has no UTC value.
    except (ValueError, TypeError, OverflowError, AttributeError, RecursionError, binascii.Error) as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc


@cache
def _recent(t: ReadTables, after: bool) -> Prepared:
    c = t.conversations
    stmt = sa.select(c).where(c.c.user_id == sa.bindparam("uid"))
    if after:
        stmt = stmt.where(
            sa.tuple_(c.c.updated_at, c.c.id)
            < sa.tuple_(sa.bindparam("stamp", type_=c.c.updated_at.type), sa.bindparam("conv_id"))
        )
    stmt = stmt.order_by(c.c.updated_at.desc(), c.c.id.desc()).limit(sa.bindparam("limit"))
    return prepared(stmt)


async def list_conversations(
    conn: Conn, user_id: str, limit: int, after: str | None, t: ReadTables = LIVE
) -> tuple[list[ConversationView], bool]:
    """Most recent activity first, keyset-paginated on (updated_at, id): no OFFSET scans."""
    params: dict[str, Any] = {"uid": user_id, "limit": limit + 1}
    if after is not None:
        params["stamp"], params["conv_id"] = decode_cursor(after)
    rows = await fetch(conn, _recent(t, after is not None), params)
    return conversation_views(rows[:limit]), len(rows) > limit


@cache
def _owned_page(t: ReadTables, after: bool, before: bool, ascending: bool) -> Prepared:
    c, m = t.conversations, t.messages
    page = sa.select(*message_columns(m)).where(m.c.conversation_id == sa.bindparam("cid"))
    if after:
        page = page.where(m.c.seq > sa.bindparam("after"))
    if before:
        page = page.where(m.c.seq < sa.bindparam("before"))
    seq = m.c.seq.asc() if ascending else m.c.seq.desc()
    sub = page.order_by(seq).limit(sa.bindparam("limit")).subquery()
    # The owner's conversation row left-joined to the page: no row at all means "not found".
    stmt = (
        sa.select(c.c.version.label("conversation_version"), sub)
        .select_from(c.outerjoin(sub, sa.true()))
        .where(c.c.id == sa.bindparam("cid"), c.c.user_id == sa.bindparam("uid"))
        .order_by(sub.c.seq.asc() if ascending else sub.c.seq.desc())
    )
    return prepared(stmt)


async def owned_rows(
    conn: Conn,
    conversation_id: str,
    user_id: str,
    *,
    limit: int,
    before: int | None = None,
    after: int | None = None,
    order: Order = "asc",
    t: ReadTables = LIVE,
) -> tuple[int, list[Row], bool] | None:
    """DESIGN section 9 "Message pages", with the ownership check in the same round trip: the `limit`
    messages nearest the cursor (or the end the order starts from) in `order`, as (conversation
    version, rows, has_more for the direction of travel), or None when `user_id` has no such
    conversation."""
    ascending = after is not None or (before is None and order == "asc")
    params = {"cid": conversation_id, "uid": user_id, "limit": limit + 1, "after": after, "before": before}
    rows = await fetch(conn, _owned_page(t, after is not None, before is not None, ascending), params)
    if not rows:
        return None
    version = rows[0]["conversation_version"]
    found = [r for r in rows if r["seq"] is not None]
    page = found[:limit]
    if ascending != (order == "asc"):
        page.reverse()
    return version, page, len(found) > limit


@cache
def _messages_by_id(t: ReadTables) -> Prepared:
    m = t.messages

    def by_id(pg: bool) -> sa.Select[Any]:
        where = (m.c.conversation_id == sa.bindparam("cid"), _any_of(m.c.message_id, "ids", pg))
        return sa.select(*message_columns(m)).where(*where).order_by(m.c.seq)

    return prepared(by_id(False), by_id(True))


async def messages_by_id(
    conn: Conn, conversation_id: str, message_ids: Sequence[str], t: ReadTables = LIVE
) -> list[Message]:
    if not message_ids:
        return []
    rows = await fetch(conn, _messages_by_id(t), {"cid": conversation_id, "ids": list(message_ids)})
    return [domain_message(r) for r in rows]


@cache
def _tool_calls(t: ReadTables) -> Prepared:
    """The tool calls with these call ids, or opened by these assistant messages."""
    tc = t.tool_calls

    def calls(pg: bool) -> sa.Select[Any]:
        return sa.select(tc.c.call_id, tc.c.assistant_message_id, tc.c.answer_message_id).where(
            tc.c.conversation_id == sa.bindparam("cid"),
            sa.or_(_any_of(tc.c.call_id, "calls", pg), _any_of(tc.c.assistant_message_id, "assistants", pg)),
        )

    return prepared(calls(False), calls(True))


PINNED_CHUNK = 32
MAX_FIRST_READ = 1000
HEAD = 8
"""Leading messages the context window's first statement reads, enough for the usual pinned prompt."""


@cache
def _tail(t: ReadTables, ascending: bool) -> Prepared:
    m = t.messages
    stmt = (
        sa.select(*message_columns(m))
        .where(m.c.conversation_id == sa.bindparam("cid"), m.c.seq > sa.bindparam("floor"))
        .order_by(m.c.seq.asc() if ascending else m.c.seq.desc())
        .limit(sa.bindparam("limit"))
    )
    return prepared(stmt)


@cache
def _owned_context(t: ReadTables) -> Prepared:
    """The owner's conversation row left-joined to the first `head` and the last `tail` messages."""
    c, m = t.conversations, t.messages

    def end(part: int, order: sa.UnaryExpression[Any], limit: str) -> sa.Select[Any]:
        rows = (
            sa.select(*message_columns(m), sa.literal_column(str(part)).label("part"))
            .where(m.c.conversation_id == sa.bindparam("cid"))
            .order_by(order)
            .limit(sa.bindparam(limit))
            .subquery()
        )
        return sa.select(rows)

    both = sa.union_all(end(0, m.c.seq.asc(), "head"), end(1, m.c.seq.desc(), "tail")).subquery()
    stmt = (
        sa.select(c.c.version.label("conversation_version"), both)
        .select_from(c.outerjoin(both, sa.true()))
        .where(c.c.id == sa.bindparam("cid"), c.c.user_id == sa.bindparam("uid"))
    )
    return prepared(stmt)


def _leading_system(messages: Sequence[Message]) -> int:
    return next((i for i, msg in enumerate(messages) if msg.role != "system"), len(messages))


async def owned_context_messages(
    conn: Conn,
    conversation_id: str,
    user_id: str,
    *,
    max_messages: int | None,
    max_tokens: int | None,
    t: ReadTables = LIVE,
) -> tuple[int, list[Message], int] | None:
    """The context window with the ownership check: (conversation version, window, how many pinned
    messages lead it), or None when `user_id` has no such conversation. Usually one statement: the
    first `HEAD` messages (the pinned run) and the last `max_messages + 16`; more reads only when the
    pinned run is longer than that or the window reaches further back."""
    # Most windows are decided by max_messages + a few rows; window_from_suffix says when they are not
    # (and _window_after then reads four times as many, as often as needed).
    chunk = min(max_messages or 64, MAX_FIRST_READ) + 16
    params = {"cid": conversation_id, "uid": user_id, "head": HEAD + 1, "tail": chunk + 1}
    rows = await fetch(conn, _owned_context(t), params)
    if not rows:
        return None
    version = rows[0]["conversation_version"]
    head = sorted((r for r in rows if r["part"] == 0), key=lambda r: r["seq"])
    lead = [domain_message(r) for r in head[:HEAD]]
    run = _leading_system(lead)
    pinned = lead[:run]
    limits = {"max_messages": max_messages, "max_tokens": max_tokens}
    if len(head) <= HEAD:
        # The whole history is in hand.
        window = window_from_suffix(pinned, lead[run:], complete=True, **limits)
        assert window is not None
        return version, window, run
    if run == len(lead):
        # Every message read so far is pinned: read the run to its end first.
        window, count = await _context_after(conn, t, conversation_id, lead, chunk, **limits)
        return version, window, count
    floor = pinned[-1].seq if pinned else 0
    newest = sorted((r for r in rows if r["part"] == 1 and r["seq"] > floor), key=lambda r: -r["seq"])
    suffix = [domain_message(r) for r in reversed(newest[:chunk])]
    window = window_from_suffix(pinned, suffix, complete=len(newest) <= chunk, **limits)
    if window is None:
        window = await _window_after(conn, t, conversation_id, pinned, chunk * 4, **limits)
    return version, window, run


async def _context_after(
    conn: Conn,
    t: ReadTables,
    conversation_id: str,
    pinned: list[Message],
    chunk: int,
    *,
    max_messages: int | None,
    max_tokens: int | None,
) -> tuple[list[Message], int]:
    """The window when `pinned` (a run of system messages) may go on: read the run to its end, then
    the tail."""
    while True:
        params = {"cid": conversation_id, "floor": pinned[-1].seq, "limit": PINNED_CHUNK}
        lead = [domain_message(r) for r in await fetch(conn, _tail(t, True), params)]
        run = _leading_system(lead)
        pinned = pinned + lead[:run]
        if len(lead) < PINNED_CHUNK:
            window = window_from_suffix(
                pinned, lead[run:], complete=True, max_messages=max_messages, max_tokens=max_tokens
            )
            assert window is not None
            return window, len(pinned)
        if run < len(lead):
            break
    window = await _window_after(
        conn, t, conversation_id, pinned, chunk, max_messages=max_messages, max_tokens=max_tokens
    )
    return window, len(pinned)


async def _window_after(
    conn: Conn,
    t: ReadTables,
    conversation_id: str,
    pinned: list[Message],
    chunk: int,
    *,
    max_messages: int | None,
    max_tokens: int | None,
) -> list[Message]:
    """The window over `pinned` and the messages after them, reading `chunk` messages from the end,
    then four times as many, until `window_from_suffix` can decide."""
    floor = pinned[-1].seq if pinned else 0
    while True:
        params = {"cid": conversation_id, "floor": floor, "limit": chunk + 1}
        rows = await fetch(conn, _tail(t, False), params)
        suffix = [domain_message(r) for r in reversed(rows[:chunk])]
        window = window_from_suffix(
            pinned, suffix, complete=len(rows) <= chunk, max_messages=max_messages, max_tokens=max_tokens
        )
        if window is not None:
            return window
        chunk *= 4


async def load_state(
    conn: Conn,
    conversation_id: str,
    stream: StreamInfo | None,
    *,
    message_ids: Sequence[str] = (),
    call_ids: Sequence[str] = (),
    all_messages: bool = False,
    prefetched: Sequence[Row] | None = None,
    t: ReadTables = LIVE,
) -> ConversationState | None:
    """The slice of the aggregate's state that a command needs (see domain/conversation.py), read
    under the stream lock so it is exactly the state at `stream.version`. `prefetched`: the rows of
    `conversation_by_id` when the append has already read them with the lock."""
    if stream is None:
        return None
    if prefetched is None:
        row = await get_conversation(conn, conversation_id, t)
    else:
        row = prefetched[0] if prefetched else None
    if row is None:
        # Events exist but no read row: only a tombstone removes it.
        return ConversationState(
            conversation_id, owner=stream.partition, version=stream.version, deleted=True
        )
    m = t.messages
    if all_messages:
        # Only a locked append clears (it is never a single event), so `conn` is SQLAlchemy's.
        assert isinstance(conn, AsyncConnection)
        stmt = sa.select(*message_columns(m)).where(m.c.conversation_id == conversation_id).order_by(m.c.seq)
        messages = [domain_message(r) for r in (await conn.execute(stmt)).mappings().all()]
    else:
        messages = await messages_by_id(conn, conversation_id, message_ids, t)
    calls: dict[str, ToolCallRef] = {}
    assistants = [msg.message_id for msg in messages if msg.tool_calls]
    if call_ids or assistants:
        params = {"cid": conversation_id, "calls": list(call_ids), "assistants": assistants}
        for r in await fetch(conn, _tool_calls(t), params):
            calls[r["call_id"]] = ToolCallRef(r["call_id"], r["assistant_message_id"], r["answer_message_id"])
    return ConversationState(
        conversation_id=conversation_id,
        owner=row["user_id"],
        version=row["version"],
        title=row["title"],
        title_explicit=row["title_explicit"],
        metadata=row["metadata"] or {},
        message_count=row["message_count"],
        last_seq=row["last_seq"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
        last_message_at=utc(row["last_message_at"]) if row["last_message_at"] else None,
        messages={msg.message_id: msg for msg in messages},
        tool_calls=calls,
    )


def state_row(state: ConversationState) -> dict[str, Any]:
    """The row of `conversation_by_id` as it stands at `state` (what `load_state` reads of it), for a
    caller that folded the state itself and wants to decide its next command without reading."""
    return {
        "user_id": state.owner,
        "version": state.version,
        "title": state.title,
        "title_explicit": state.title_explicit,
        "metadata": state.metadata,
        "message_count": state.message_count,
        "last_seq": state.last_seq,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "last_message_at": state.last_message_at,
    }
