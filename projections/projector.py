"""The conversation read models, maintained from events.

The same `ConversationProjector` runs inline (inside the append's transaction, so a write is readable as
soon as `append` returns) and during a rebuild (into shadow tables). It replays the domain's `evolve`
rules in SQL, so a rebuild and an inline build agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatledger.domain import derive_title
from chatledger.eventstore import RecordedEvent, WriteFragment
from chatledger.eventstore.driver import driver_executemany, driver_fetch

from . import pg_sql
from .schema import LIVE, ReadTables


class ConversationProjector:
    """Writes `conversations`, `messages` and `tool_calls` rows for a batch of events of one stream."""

    def __init__(self, tables: ReadTables = LIVE) -> None:
        self.t = tables

    async def apply(self, tx: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
        # On PostgreSQL the MessageAdded statements of different streams (a rebuild's batch holds
        # dozens) are pipelined in one round trip; they are sent before any other run is handled, so
        # each stream still sees its own events in order.
        pending: list[dict[str, Any]] = []
        pipelined = tx.dialect.name == "postgresql"
        for stream_id, group in groupby(events, key=lambda e: e.stream_id):
            for type_, run in groupby(group, key=lambda e: e.type):
                batch = list(run)
                if pipelined and type_ == "MessageAdded":
                    pending.append(pg_sql.message_added_params(stream_id, batch, _derived_title(batch)))
                    continue
                handler = getattr(self, f"_on_{type_}", None)
                if handler is not None:
                    await self._flush(tx, pending)
                    await handler(tx, stream_id, batch)
        await self._flush(tx, pending)

    async def _flush(self, tx: AsyncConnection, pending: list[dict[str, Any]]) -> None:
        if len(pending) == 1:
            await driver_fetch(tx, pg_sql.message_added_driver(self.t), pending[0])
        elif pending:
            await driver_executemany(tx, pg_sql.message_added_driver(self.t), pending)
        pending.clear()

    def write_fragment(self, dialect: str, events: Sequence[RecordedEvent]) -> WriteFragment | None:
        """On PostgreSQL, a batch of `MessageAdded` events of one stream (every `add_messages`) is
        projected by the store's own insert statement: one round trip fewer per append."""
        if dialect != "postgresql" or not events:
            return None
        first = events[0]
        if any(e.type != "MessageAdded" or e.stream_id != first.stream_id for e in events):
            return None
        params = pg_sql.message_added_params(first.stream_id, events, _derived_title(events))
        return WriteFragment(pg_sql.message_added_ctes(self.t), params)

    async def _touch(self, tx: AsyncConnection, stream_id: str, last: RecordedEvent, **values: Any) -> Any:
        c = self.t.conversations
        stmt = (
            c.update()
            .where(c.c.id == stream_id)
            .values(version=last.stream_version, updated_at=last.recorded_at, **values)
            .returning(c.c.last_seq, c.c.user_id)
        )
        return (await tx.execute(stmt)).one_or_none()

    async def _on_ConversationStarted(
        self, tx: AsyncConnection, stream_id: str, batch: list[RecordedEvent]
    ) -> None:
        e = batch[-1]
        await tx.execute(
            self.t.conversations.insert().values(
                id=stream_id,
                user_id=e.data["user_id"],
                title=e.data.get("title"),
                title_explicit=e.data.get("title") is not None,
                metadata=e.data.get("metadata") or {},
                message_count=0,
                last_seq=0,
                tool_call_count=0,
                version=e.stream_version,
                created_at=e.recorded_at,
                updated_at=e.recorded_at,
                last_message_at=None,
            )
        )

    async def _on_MessageAdded(self, tx: AsyncConnection, stream_id: str, batch: list[RecordedEvent]) -> None:
        # The generic path (SQLite). PostgreSQL runs pg_sql.message_added instead (see `apply`).
        derived = _derived_title(batch)
        c = self.t.conversations
        n = len(batch)
        last = batch[-1]
        opened = sum(len(e.data.get("tool_calls") or ()) for e in batch)
        values: dict[str, Any] = {
            "last_seq": c.c.last_seq + n,
            "message_count": c.c.message_count + n,
            "last_message_at": last.recorded_at,
        }
        if opened:
            values["tool_call_count"] = c.c.tool_call_count + opened
        if derived is not None:
            keep = sa.or_(c.c.title_explicit, c.c.title.is_not(None))
            values["title"] = sa.case((keep, c.c.title), else_=sa.literal(derived))
        row = await self._touch(tx, stream_id, last, **values)
        if row is None:
            return
        first_seq = row.last_seq - n + 1
        await tx.execute(
            self.t.messages.insert(),
            [_message_row(stream_id, row.user_id, first_seq + i, e) for i, e in enumerate(batch)],
        )
        calls = [
            {
                "conversation_id": stream_id,
                "call_id": call["id"],
                "user_id": row.user_id,
                "assistant_message_id": e.data["message_id"],
                "answer_message_id": None,
            }
            for e in batch
            for call in e.data.get("tool_calls") or ()
        ]
        if calls:
            await tx.execute(self.t.tool_calls.insert(), calls)
        answers = [e for e in batch if e.data.get("tool_call_id") is not None]
        if answers:
            await self._set_answers(
                tx, stream_id, [(e.data["tool_call_id"], e.data["message_id"]) for e in answers]
            )

    async def _set_answers(
        self, tx: AsyncConnection, stream_id: str, pairs: list[tuple[str, str | None]]
    ) -> None:
        t = self.t.tool_calls
        stmt = (
            t.update()
            .where(t.c.conversation_id == stream_id, t.c.call_id == sa.bindparam("b_call"))
            .values(answer_message_id=sa.bindparam("b_answer"))
        )
        await tx.execute(stmt, [{"b_call": call, "b_answer": answer} for call, answer in pairs])

    async def _on_ConversationUpdated(
        self, tx: AsyncConnection, stream_id: str, batch: list[RecordedEvent]
    ) -> None:
        values: dict[str, Any] = {}
        for e in batch:
            if e.data.get("title") is not None:
                values.update(title=e.data["title"], title_explicit=True)
            if e.data.get("metadata") is not None:
                values["metadata"] = e.data["metadata"]
        await self._touch(tx, stream_id, batch[-1], **values)

    async def _on_MessageRemoved(
        self, tx: AsyncConnection, stream_id: str, batch: list[RecordedEvent]
    ) -> None:
        m, t = self.t.messages, self.t.tool_calls
        ids = [e.data["message_id"] for e in batch]
        removed = (
            await tx.execute(
                m.delete()
                .where(m.c.conversation_id == stream_id, m.c.message_id.in_(ids))
                .returning(m.c.message_id, m.c.tool_call_id, m.c.tool_calls)
            )
        ).all()
        c = self.t.conversations
        closed = sum(len(r.tool_calls or ()) for r in removed)
        await self._touch(
            tx,
            stream_id,
            batch[-1],
            message_count=c.c.message_count - len(removed),
            tool_call_count=c.c.tool_call_count - closed,
        )
        if not removed:
            return
        gone = [r.message_id for r in removed]
        await tx.execute(
            t.delete().where(t.c.conversation_id == stream_id, t.c.assistant_message_id.in_(gone))
        )
        # Taking an answer out of the history reopens its call (domain rule, see conversation.py).
        await tx.execute(
            t.update()
            .where(t.c.conversation_id == stream_id, t.c.answer_message_id.in_(gone))
            .values(answer_message_id=None)
        )

    async def _on_ConversationDeleted(
        self, tx: AsyncConnection, stream_id: str, batch: list[RecordedEvent]
    ) -> None:
        for table in (self.t.tool_calls, self.t.messages):
            await tx.execute(table.delete().where(table.c.conversation_id == stream_id))
        c = self.t.conversations
        await tx.execute(c.delete().where(c.c.id == stream_id))


def _message_row(stream_id: str, user_id: str, seq: int, e: RecordedEvent) -> dict[str, Any]:
    d = e.data
    return {
        "conversation_id": stream_id,
        "seq": seq,
        "message_id": d["message_id"],
        "user_id": user_id,
        "role": d["role"],
        "content": d.get("content"),
        "name": d.get("name"),
        "tool_calls": d.get("tool_calls"),
        "tool_call_id": d.get("tool_call_id"),
        "token_count": d.get("token_count"),
        "metadata": d.get("metadata") or {},
        "raw": d.get("raw"),
        "created_at": e.recorded_at,
    }


def _derived_title(batch: Sequence[RecordedEvent]) -> str | None:
    """The title the batch's first titled user message gives (kept only while the conversation has none)."""
    return next(
        (t for e in batch if e.data["role"] == "user" and (t := derive_title(e.data.get("content")))),
        None,
    )
