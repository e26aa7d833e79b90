"""The application service: wires the event store, the domain and the projections.

The HTTP API, the CLI and library users all go through `ChatLedger`. Every call takes the acting
`user_id`; a conversation the user does not own is `ConversationNotFound`, exactly like one that does
not exist.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self

from sqlalchemy.ext.asyncio import AsyncEngine

from chatledger import migrate
from chatledger.context import request_id_var
from chatledger.domain import (
    AddMessages,
    ClearMessages,
    Command,
    ConversationDeleted,
    ConversationIdUnavailable,
    ConversationNotFound,
    ConversationState,
    DeleteConversation,
    DomainEvent,
    InvalidMessage,
    RemoveMessage,
    StartConversation,
    UpdateConversation,
    decide,
    estimate_tokens,
    event_from_payload,
    parse_message,
    replay,
    to_chat_format,
)
from chatledger.eventstore import (
    ANY,
    AppendResult,
    DuplicateEvent,
    EventStore,
    NewEvent,
    PartitionMismatch,
    RecordedEvent,
    StreamContext,
    VerifyResult,
    WrongExpectedVersion,
)
from chatledger.eventstore.factory import create_engine_for, open_store
from chatledger.eventstore.sql import SqlEventStore
from chatledger.projections import LIVE, ConversationProjector
from chatledger.projections import queries as q
from chatledger.projections.views import (
    AddedMessages,
    ContextWindow,
    ConversationPage,
    ConversationView,
    EventPage,
    EventView,
    MessagePage,
)
from chatledger.settings import Settings

from .idempotency import IdempotencyConflict, IdempotencyStore, command_digest, derived_id
from .replaying import page_in_memory, view_of_state

Order = Literal["asc", "desc"]


class VersionNotFound(ConversationNotFound):
    """`at_version` is beyond the conversation's history."""


class ChatLedger:
    """Event-sourced chat history: `async with ChatLedger.open(url) as ledger: ...`."""

    def __init__(self, engine: AsyncEngine, settings: Settings, *, run_migrations: bool = True) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.engine = engine
        self.projector = ConversationProjector(LIVE)
        store = open_store(engine, inline_projections=[self.projector])
        if not isinstance(store, SqlEventStore):
            raise TypeError("ChatLedger needs a SQL database (PostgreSQL or SQLite) for its read tables")
        self.store: EventStore = store
        self.sql = store
        self.idempotency = IdempotencyStore(store, timedelta(hours=settings.idempotency_ttl_hours))
        self._run_migrations = run_migrations

    @classmethod
    def open(cls, url: str | None = None, *, settings: Settings | None = None, migrate: bool = True) -> Self:
        """A ledger on `url` (default: the settings' database URL); migrates on entry unless told not to."""
        settings = settings or Settings()
        if url is not None:
            settings = settings.model_copy(update={"database_url": url})
        engine = create_engine_for(
            settings.database_url,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
        )
        return cls(engine, settings, run_migrations=migrate)

    async def start(self) -> Self:
        if self._run_migrations:
            await migrate.upgrade(self.engine)
        return self

    async def close(self) -> None:
        await self.store.close()
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- writes ---------------------------------------------------------------------------------------

    async def start_conversation(
        self,
        *,
        user_id: str,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        conversation_id: str | uuid.UUID | None = None,
        idempotency_key: str | None = None,
    ) -> ConversationView:
        """Start a conversation; with the id of one of the caller's own conversations, return it as it
        is (get-or-create: check `created` on the result of `start_or_get`)."""
        view, _ = await self.start_or_get(
            user_id=user_id,
            title=title,
            metadata=metadata,
            conversation_id=conversation_id,
            idempotency_key=idempotency_key,
        )
        return view

    async def start_or_get(
        self,
        *,
        user_id: str,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        conversation_id: str | uuid.UUID | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[ConversationView, bool]:
        """Like `start_conversation`, also saying whether the conversation was created."""
        if conversation_id is not None:
            cid = _uuid(conversation_id, "id")
        elif idempotency_key is not None:
            cid = derived_id(user_id, idempotency_key, "conversation")
        else:
            cid = str(uuid.uuid4())
        command = StartConversation(cid, user_id, title, dict(metadata or {}))
        result = await self._execute(cid, command, user_id, partition=user_id, key=idempotency_key)
        view = await self._current(cid, user_id)
        return view, bool(result.events) or result.replayed

    async def add_messages(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AddedMessages:
        """Append 1..n messages atomically; returns them with their `seq` and the new version."""
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
            raise InvalidMessage("messages must be a list of message objects", field="messages")
        parsed = tuple(parse_message(m, self.limits, i) for i, m in enumerate(messages))
        parsed = tuple(
            m.model_copy(update={"id": _uuid(m.id, f"messages[{i}].id")}) if m.id is not None else m
            for i, m in enumerate(parsed)
        )
        result, decided_on = await self._execute_on(
            cid, AddMessages(user_id, parsed), user_id, expected=expected_version, key=idempotency_key
        )
        ids = [e.data["message_id"] for e in result.events]
        if result.replayed or decided_on is None:
            async with self.sql.connect() as conn:
                rows = await q.messages_by_id(conn, cid, ids)
        else:
            # The state the command was decided on plus its events gives each message's seq and time,
            # so the answer needs no further read.
            after = replay(((_domain(e), e.recorded_at) for e in result.events), decided_on)
            rows = [after.messages[i] for i in ids] if after is not None else []
        return AddedMessages(data=[q.message_view(cid, m) for m in rows], version=result.version)

    async def update_conversation(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> ConversationView:
        """`title` replaces; `metadata` merges as RFC 7396 JSON Merge Patch (null removes a key)."""
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        command = UpdateConversation(user_id, title, dict(metadata) if metadata is not None else None)
        await self._execute(cid, command, user_id, expected=expected_version)
        return await self._current(cid, user_id)

    async def remove_message(
        self,
        conversation_id: str | uuid.UUID,
        message_id: str | uuid.UUID,
        *,
        user_id: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> int:
        """Take one message out of the history (the log keeps it); returns the new version."""
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        mid = _uuid(message_id, "message_id", not_found=True)
        result = await self._execute(
            cid, RemoveMessage(user_id, mid, reason), user_id, expected=expected_version
        )
        return result.version

    async def clear_messages(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> int:
        """Remove every visible message in one atomic append; the conversation stays."""
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        result = await self._execute(cid, ClearMessages(user_id, reason), user_id, expected=expected_version)
        return result.version

    async def delete_conversation(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> None:
        """Tombstone: gone from every read model, no later event accepted; the log keeps it."""
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        await self._execute(cid, DeleteConversation(user_id, reason), user_id, expected=expected_version)

    async def _execute(
        self,
        cid: str,
        command: Command,
        user_id: str,
        *,
        expected: int | None = None,
        partition: str | None = None,
        key: str | None = None,
    ) -> AppendResult:
        result, _ = await self._execute_on(
            cid, command, user_id, expected=expected, partition=partition, key=key
        )
        return result

    async def _execute_on(
        self,
        cid: str,
        command: Command,
        user_id: str,
        *,
        expected: int | None = None,
        partition: str | None = None,
        key: str | None = None,
    ) -> tuple[AppendResult, ConversationState | None]:
        """Decide `command` under the stream lock and append; also returns the state it was decided on."""
        decided: list[ConversationState | None] = [None]
        digest = command_digest(command) if key else None
        if key and (earlier := await self._replayed(cid, user_id, key, digest)) is not None:
            return earlier, None

        async def decider(ctx: StreamContext) -> list[NewEvent]:
            state = await self._load(ctx, cid, command)
            if state is None and not isinstance(command, StartConversation):
                raise ConversationNotFound(cid)
            owned = state is not None and state.owner == user_id and not state.deleted
            # Ownership is checked before the version, so a stranger learns nothing from a 409.
            if owned and expected is not None and state is not None and state.version != expected:
                raise WrongExpectedVersion(cid, expected, state.version)
            counter = itertools.count()

            def ids() -> str:
                return derived_id(user_id, key, cid, "message", next(counter)) if key else str(uuid.uuid4())

            events = decide(state, command, ids, self.limits)
            decided[0] = state
            return [self._new_event(e, user_id, cid, key, digest, i) for i, e in enumerate(events)]

        try:
            return await self.store.append_with(cid, decider, ANY, partition=partition), decided[0]
        except PartitionMismatch:
            # Only a start names a partition: the id belongs to someone else's stream.
            raise ConversationIdUnavailable(cid) from None
        except DuplicateEvent:
            # A duplicate of this keyed request won a race in another process: answer as it was answered.
            if key and (earlier := await self._replayed(cid, user_id, key, digest)) is not None:
                return earlier, None
            raise

    async def _replayed(self, cid: str, user_id: str, key: str, digest: str | None) -> AppendResult | None:
        """The original result of a keyed request already applied, or None."""
        first = uuid.UUID(derived_id(user_id, key, cid, "event", 0))
        found = await self.store.get_events([first])
        if not found:
            return None
        head = found[0]
        if head.stream_id != cid or head.metadata.get("request_digest") != digest:
            raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
        ids = {
            uuid.UUID(derived_id(user_id, key, cid, "event", i))
            for i in range(self.limits.max_messages_per_call + 1)
        }
        following = await self.store.read_stream(
            cid, after_version=head.stream_version - 1, limit=self.limits.max_messages_per_call + 1
        )
        batch: list[RecordedEvent] = []
        for e in following:
            if e.event_id not in ids:
                break
            batch.append(e)
        return AppendResult(
            stream_id=cid, events=tuple(batch), version=batch[-1].stream_version, replayed=True
        )

    async def _load(self, ctx: StreamContext, cid: str, command: Command) -> ConversationState | None:
        message_ids: list[str] = []
        call_ids: list[str] = []
        if isinstance(command, AddMessages):
            message_ids = [m.id for m in command.messages if m.id]
            call_ids = [c.id for m in command.messages for c in m.tool_calls or ()]
            call_ids += [m.tool_call_id for m in command.messages if m.tool_call_id]
        elif isinstance(command, RemoveMessage):
            message_ids = [command.message_id]
        return await q.load_state(
            ctx.tx,
            cid,
            ctx.stream,
            message_ids=message_ids,
            call_ids=call_ids,
            all_messages=isinstance(command, ClearMessages),
        )

    def _new_event(
        self, event: DomainEvent, user_id: str, cid: str, key: str | None, digest: str | None, index: int
    ) -> NewEvent:
        request_id = request_id_var.get()
        meta: dict[str, Any] = {"actor": user_id}
        if request_id:
            meta.update(request_id=request_id, correlation_id=request_id)
        if key:
            meta.update(idempotency_key=key, request_digest=digest)
        event_id = uuid.UUID(derived_id(user_id, key, cid, "event", index)) if key else uuid.uuid4()
        return NewEvent(
            type=event.TYPE,
            data=event.payload(),
            metadata=meta,
            event_id=event_id,
            schema_version=event.SCHEMA_VERSION,
        )

    # --- reads ----------------------------------------------------------------------------------------

    async def _current(self, cid: str, user_id: str) -> ConversationView:
        async with self.sql.connect() as conn:
            row = await q.get_conversation(conn, cid)
        if row is None or row.user_id != user_id:
            raise ConversationNotFound(cid)
        return q.conversation_view(row)

    async def get_conversation(
        self,
        conversation_id: str | uuid.UUID,
        *,
        user_id: str,
        at_version: int | None = None,
        admin: bool = False,
    ) -> ConversationView:
        """The conversation now, or (`at_version`) replayed from the log as it stood after that event."""
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        if at_version is None:
            return await self._current(cid, user_id)
        state = await self._replay(cid, user_id, at_version, admin=admin)
        return view_of_state(state)

    async def _replay(self, cid: str, user_id: str, at_version: int, *, admin: bool) -> ConversationState:
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
        state = replay((_domain(e), e.recorded_at) for e in events)
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
        _check_limit(limit)
        async with self.sql.connect() as conn:
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
        _check_limit(limit)
        if order not in ("asc", "desc"):
            raise InvalidMessage("order must be 'asc' or 'desc'", field="order")
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        if at_version is not None:
            state = await self._replay(cid, user_id, at_version, admin=admin)
            history = sorted(state.messages.values(), key=lambda m: m.seq)
            page, more = page_in_memory(history, limit=limit, before=before, after=after, order=order)
            return MessagePage(
                data=[q.message_view(cid, m) for m in page], has_more=more, order=order, version=state.version
            )
        async with self.sql.connect() as conn:
            view = await self._owned(conn, cid, user_id)
            page, more = await q.message_page(conn, cid, limit=limit, before=before, after=after, order=order)
        return MessagePage(
            data=[q.message_view(cid, m) for m in page], has_more=more, order=order, version=view.version
        )

    async def _owned(self, conn: Any, cid: str, user_id: str) -> ConversationView:
        row = await q.get_conversation(conn, cid)
        if row is None or row.user_id != user_id:
            raise ConversationNotFound(cid)
        return q.conversation_view(row)

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
        if max_messages is not None and max_messages < 1:
            raise InvalidMessage("max_messages must be at least 1", field="max_messages")
        if max_tokens is not None and max_tokens < 1:
            raise InvalidMessage("max_tokens must be at least 1", field="max_tokens")
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        async with self.sql.connect() as conn:
            view = await self._owned(conn, cid, user_id)
            window, pinned = await q.context_messages(
                conn, cid, max_messages=max_messages, max_tokens=max_tokens
            )
        data = [
            to_chat_format(m) if format == "chat" else q.message_view(cid, m).model_dump(mode="json")
            for m in window
        ]
        return ContextWindow(
            data=data,
            version=view.version,
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
        _check_limit(limit, 1000)
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        info = await self._audited_stream(cid, user_id, admin)
        events = await self.store.read_stream(cid, after_version=max(after_version, 0), limit=limit + 1)
        return EventPage(
            data=[event_view(e) for e in events[:limit]], has_more=len(events) > limit, version=info.version
        )

    async def _audited_stream(self, cid: str, user_id: str, admin: bool) -> Any:
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
    ) -> VerifyResult:
        """Recompute the hash chain of one conversation (or, with no id, of the whole log)."""
        if conversation_id is None:
            return await self.store.verify()
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        if user_id is not None or not admin:
            await self._audited_stream(cid, user_id or "", admin)
        return await self.store.verify(cid)

    async def subscribe_conversation(
        self, conversation_id: str | uuid.UUID, *, user_id: str, after_version: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """This conversation's events after `after_version` (default: its current version, so only new
        events), then live ones; no gap and no duplicate at the hand-over."""
        cid = _uuid(conversation_id, "conversation_id", not_found=True)
        # The log head is taken first: any event of this stream that commits later has a higher
        # position and arrives through `subscribe`; any earlier one is visible to `read_stream`.
        head = await self.store.head_position()
        current = await self._current(cid, user_id)
        sent = current.version if after_version is None else max(after_version, 0)
        for e in await self.store.read_stream(cid, after_version=sent):
            sent = e.stream_version
            yield e
        async for e in self.store.subscribe(after=head):
            if e.stream_id == cid and e.stream_version > sent:
                sent = e.stream_version
                yield e

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
        version=e.stream_version,
        position=e.global_position,
        type=e.type,
        schema_version=e.schema_version,
        data=dict(e.data),
        metadata=dict(e.metadata),
        recorded_at=q.utc(e.recorded_at),
        prev_hash=e.prev_hash,
        hash=e.hash,
    )


def _domain(e: RecordedEvent) -> DomainEvent:
    return event_from_payload(e.type, dict(e.data))


def _uuid(value: str | uuid.UUID, field: str, *, not_found: bool = False) -> str:
    """Ids are UUIDs, normalised to lowercase hyphenated text. A malformed id in a path is simply not
    found (it cannot name anything); in a body it is invalid input."""
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        if not_found:
            raise ConversationNotFound(str(value)) from None
        raise InvalidMessage(f"{field} must be a UUID", field=field) from None


def _check_limit(limit: int, maximum: int = 100) -> None:
    if not 1 <= limit <= maximum:
        raise InvalidMessage(f"limit must be between 1 and {maximum}", field="limit")
