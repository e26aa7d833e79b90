"""The read side of `ChatLedger`: current read models, replays from the log, the audit trail.

Every read takes the acting `user_id`; a conversation the user does not own is `ConversationNotFound`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any, Literal, overload

from chatledger.domain import (
    ConversationDeleted,
    ConversationNotFound,
    ConversationState,
    DomainEvent,
    InvalidMessage,
    check_user_id,
    estimate_tokens,
    event_from_payload,
    replay,
    to_chat_format,
)
from chatledger.eventstore import EventStore, RecordedEvent, VerifyResult
from chatledger.eventstore.sql import SqlEventStore
from chatledger.projections import queries as q
from chatledger.projections.views import (
    ContextWindow,
    ConversationPage,
    ConversationView,
    EventPage,
    EventView,
    MessagePage,
)

from .live import LiveHub
from .replaying import page_in_memory, view_of_state

Order = Literal["asc", "desc"]


class VersionNotFound(ConversationNotFound):
    """`at_version` is beyond the conversation's history."""


class LedgerReads:
    """Read methods of `ChatLedger` (mixed in; the store is set up by `ChatLedger.__init__`)."""

    store: EventStore
    sql: SqlEventStore
    live: LiveHub

    async def _current(self, cid: str, user_id: str) -> ConversationView:
        check_user_id(user_id)
        async with self.sql.reader() as conn:
            view = await q.owned_conversation(conn, cid, user_id)
        if view is None:
            raise ConversationNotFound(cid)
        return view

    async def get_conversation(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        at_version: int | None = None,
        admin: bool = False,
    ) -> ConversationView:
        """The conversation now, or (`at_version`) replayed from the log as it stood after that event."""
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
        if at_version is None:
            return await self._current(cid, user_id)
        state = await self._replay(cid, user_id, at_version, admin=admin)
        return view_of_state(state)

    async def _replay(self, cid: str, user_id: str, at_version: int, *, admin: bool) -> ConversationState:
        if not admin:
            check_user_id(user_id)
        if at_version < 1:
            raise InvalidMessage("at_version must be at least 1", field="at_version")
        info = await self.store.stream_info(cid)
        if info is None or (info.partition != user_id and not admin):
            raise ConversationNotFound(cid)
        if not admin and await self._is_deleted(cid, info.version):
            raise ConversationDeleted(cid)
        if at_version > info.version:
            raise VersionNotFound(cid)
        events = await self.store.read_stream(cid, to_version=at_version)
        state = replay((to_domain(e), e.recorded_at) for e in events)
        if state is None:
            raise ConversationNotFound(cid)
        return state

    async def _is_deleted(self, cid: str, version: int) -> bool:
        last = await self.store.read_stream(cid, after_version=version - 1)
        return bool(last) and last[-1].type == "ConversationDeleted"

    async def list_conversations(
        self, *, user_id: str, limit: int = 20, after: str | None = None
    ) -> ConversationPage:
        """The user's conversations, most recent activity first; pass `next_cursor` as `after`."""
        check_user_id(user_id)
        check_limit(limit)
        async with self.sql.reader() as conn:
            views, more = await q.list_conversations(conn, user_id, limit, after)
        cursor = q.encode_cursor(views[-1]) if more and views else None
        return ConversationPage(data=views, has_more=more, next_cursor=cursor)

    async def get_messages(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        order: Order = "asc",
        at_version: int | None = None,
        admin: bool = False,
    ) -> MessagePage:
        """A page of history in `order` (DESIGN section 9, "Message pages")."""
        check_user_id(user_id)
        check_limit(limit)
        if order not in ("asc", "desc"):
            raise InvalidMessage("order must be 'asc' or 'desc'", field="order")
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
        before, after = bounded(before), bounded(after)
        if at_version is not None:
            state = await self._replay(cid, user_id, at_version, admin=admin)
            history = sorted(state.messages.values(), key=lambda m: m.seq)
            page, more = page_in_memory(history, limit=limit, before=before, after=after, order=order)
            return MessagePage(
                data=[q.message_view(cid, m) for m in page], has_more=more, order=order, version=state.version
            )
        async with self.sql.reader() as conn:
            found = await q.owned_rows(
                conn, cid, user_id, limit=limit, before=before, after=after, order=order
            )
        if found is None:
            raise ConversationNotFound(cid)
        version, rows, more = found
        return MessagePage.model_construct(
            data=q.message_views(rows), has_more=more, order=order, version=version
        )

    async def get_context(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        max_messages: int | None = None,
        max_tokens: int | None = None,
        format: Literal["chat", "raw"] = "chat",
    ) -> ContextWindow:
        """The most recent messages that fit the limits, ready to send to a model (DESIGN section 9)."""
        check_user_id(user_id)
        if max_messages is not None and max_messages < 1:
            raise InvalidMessage("max_messages must be at least 1", field="max_messages")
        if max_tokens is not None and max_tokens < 1:
            raise InvalidMessage("max_tokens must be at least 1", field="max_tokens")
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
        async with self.sql.reader() as conn:
            found = await q.owned_context_messages(
                conn, cid, user_id, max_messages=max_messages, max_tokens=max_tokens
            )
        if found is None:
            raise ConversationNotFound(cid)
        version, window, pinned = found
        data = [
            to_chat_format(m) if format == "chat" else q.message_view(cid, m).model_dump(mode="json")
            for m in window
        ]
        return ContextWindow(
            data=data,
            version=version,
            token_estimate=sum(estimate_tokens(m) for m in window),
            pinned=pinned,
        )

    async def get_events(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        after_version: int = 0,
        limit: int = 100,
        admin: bool = False,
    ) -> EventPage:
        """The audit trail: raw events with position, time and hashes. Admins may read any stream."""
        check_limit(limit, 1000)
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
        info = await self._audited_stream(cid, user_id, admin)
        events = await self.store.read_stream(cid, after_version=bounded(after_version), limit=limit + 1)
        return EventPage(
            data=[event_view(e) for e in events[:limit]], has_more=len(events) > limit, version=info.version
        )

    async def _audited_stream(self, cid: str, user_id: str, admin: bool) -> Any:
        if not admin:
            check_user_id(user_id)
        info = await self.store.stream_info(cid)
        if info is None or (info.partition != user_id and not admin):
            raise ConversationNotFound(cid)
        if not admin and await self._is_deleted(cid, info.version):
            raise ConversationDeleted(cid)
        return info

    async def verify(
        self,
        conversation_id: str | uuid.UUID | None = None,
        *,
        user_id: str | None = None,
        admin: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyResult:
        """Recompute the hash chain of one conversation (or, with no id, of the whole log);
        `progress(n)` hears how many events have been checked so far."""
        if conversation_id is None:
            return await self.store.verify(progress=progress)
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
        if user_id is not None or not admin:
            await self._audited_stream(cid, user_id or "", admin)
        return await self.store.verify(cid, progress=progress)

    async def subscribe_conversation(
        self, conversation_id: str | uuid.UUID, *, user_id: str, after_version: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        """This conversation's events after `after_version` (default: its current version, so only new
        events), then live ones; no gap and no duplicate at the hand-over."""
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
        # Listening starts before the history is read: an event committed later arrives through the
        # queue, an earlier one is visible to `read_stream`; versions already sent are skipped.
        async with self.live.listen(cid) as queue:
            current = await self._current(cid, user_id)
            sent = current.version if after_version is None else bounded(after_version)
            for e in await self.store.read_stream(cid, after_version=sent):
                sent = e.stream_version
                yield e
            # None: this listener fell too far behind and was dropped; the client resumes by version.
            while (live := await queue.get()) is not None:
                if live.stream_version > sent:
                    sent = live.stream_version
                    yield live

    async def projection_lag(self) -> dict[str, int]:
        """Events each asynchronous projection (one with a checkpoint) has still to process."""
        from chatledger.projections.runner import projection_lag

        return await projection_lag(self.store)

    async def ready(self) -> bool:
        """True when the database answers."""
        try:
            await self.store.head_position()
        except Exception:
            return False
        return True

    async def stats(self) -> dict[str, Any]:
        from chatledger.projections.stats import log_stats

        async with self.sql.connect() as conn:
            return await log_stats(conn, await self.store.head_position())


def event_view(e: RecordedEvent) -> EventView:
    return EventView(
        event_id=str(e.event_id),
        stream_id=e.stream_id,
        stream_version=e.stream_version,
        global_position=e.global_position,
        type=e.type,
        schema_version=e.schema_version,
        data=dict(e.data),
        metadata=dict(e.metadata),
        recorded_at=q.utc(e.recorded_at),
        prev_hash=e.prev_hash,
        hash=e.hash,
    )


def to_domain(e: RecordedEvent) -> DomainEvent:
    return event_from_payload(e.type, dict(e.data))


def parse_id(value: str | uuid.UUID, field: str, *, not_found: bool = False) -> str:
    """Ids are UUIDs, normalised to lowercase hyphenated text. A malformed id in a path is simply not
    found (it cannot name anything); in a body it is invalid input."""
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        if not_found:
            raise ConversationNotFound(str(value)) from None
        raise InvalidMessage(f"{field} must be a UUID", field=field) from None


SEQ_MAX = 2**63 - 1


@overload
def bounded(position: int) -> int: ...
@overload
def bounded(position: None) -> None: ...
def bounded(position: int | None) -> int | None:
    """A seq or version cursor within the 64-bit columns it is compared with (0 and below mean the
    start, anything past the largest possible value the end): same answer, no driver overflow."""
    return None if position is None else min(max(position, 0), SEQ_MAX)


def check_limit(limit: int, maximum: int = 100) -> None:
    if not 1 <= limit <= maximum:
        raise InvalidMessage(f"limit must be between 1 and {maximum}", field="limit")
