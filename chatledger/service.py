"""The application service: wires the event store, the domain and the projections.

The HTTP API, the CLI and library users all go through `ChatLedger`. Every call takes the acting
`user_id`; a conversation the user does not own is `ConversationNotFound`, exactly like one that does
not exist.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import uuid
import weakref
from collections.abc import Mapping, Sequence
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
    ConversationIdUnavailable,
    ConversationNotFound,
    ConversationState,
    DeleteConversation,
    DomainEvent,
    InvalidMessage,
    MessageNotFound,
    RemoveMessage,
    StartConversation,
    UpdateConversation,
    check_user_id,
    decide,
    parse_message,
    replay,
)
from chatledger.eventstore import (
    ANY,
    AppendResult,
    DuplicateEvent,
    EventStore,
    NewEvent,
    PartitionMismatch,
    RecordedEvent,
    StoreUnavailable,
    StreamContext,
    WrongExpectedVersion,
)
from chatledger.eventstore.factory import create_engine_for, open_store
from chatledger.eventstore.sql import Prefetch, SqlEventStore
from chatledger.projections import LIVE, ConversationProjector
from chatledger.projections import queries as q
from chatledger.projections.views import (
    AddedMessages,
    ConversationView,
)
from chatledger.settings import Settings

from .heads import RecentHeads
from .idempotency import IdempotencyConflict, IdempotencyStore, command_digest, derived_id
from .live import LiveHub
from .reads import LedgerReads, VersionNotFound, event_view, parse_id

Order = Literal["asc", "desc"]
log = logging.getLogger("chatledger")


Decision = tuple[ConversationState | None, Sequence[DomainEvent]]
"""The state a command was decided on and the domain events it produced."""


class ChatLedger(LedgerReads):
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
        if settings.upcasters:
            register_upcasters(settings.upcasters, store)
        self.live = LiveHub(store)
        self.idempotency = IdempotencyStore(store, timedelta(hours=settings.idempotency_ttl_hours))
        self._run_migrations = run_migrations
        self.started = False
        """True once `start` has succeeded (the schema is migrated when asked to be)."""
        self._heads = RecentHeads(settings.head_cache_size)
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

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
            with self.sql.translated():  # an unreachable database is StoreUnavailable, as on any call
                await migrate.upgrade(self.engine)
        self.started = True
        return self

    async def start_when_reachable(self, retry_seconds: float) -> None:
        """`start`, retried every `retry_seconds` while the database is unavailable."""
        while True:
            try:
                await self.start()
                return
            except StoreUnavailable as exc:
                log.warning("database unavailable at startup, retrying in %ss: %s", retry_seconds, exc)
                await asyncio.sleep(retry_seconds)

    async def close(self) -> None:
        await self.live.close()
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
            cid = parse_id(conversation_id, "id")
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
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
        if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
            raise InvalidMessage("messages must be a list of message objects", field="messages")
        parsed = tuple(parse_message(m, self.limits, i) for i, m in enumerate(messages))
        parsed = tuple(
            m.model_copy(update={"id": parse_id(m.id, f"messages[{i}].id")}) if m.id is not None else m
            for i, m in enumerate(parsed)
        )
        result, after = await self._execute_on(
            cid, AddMessages(user_id, parsed), user_id, expected=expected_version, key=idempotency_key
        )
        ids = [e.data["message_id"] for e in result.events]
        if after is None:
            async with self.sql.reader() as conn:
                rows = await q.messages_by_id(conn, cid, ids)
        else:
            # The state the command was decided on plus its events gives each message's seq and time,
            # so the answer needs no further read.
            rows = [after.messages[i] for i in ids]
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
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
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
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
        try:
            mid = parse_id(message_id, "message_id")
        except InvalidMessage:
            raise MessageNotFound(str(message_id)) from None  # a malformed id names no message
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
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
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
        cid = parse_id(conversation_id, "conversation_id", not_found=True)
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
        """Decide `command` under the stream lock and append; also returns the state after the append,
        folded from the state the command was decided on (None when an earlier identical request is
        answered, or nothing was appended)."""
        check_user_id(user_id)
        decided: list[Decision] = []
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
            decided[:] = [(state, events)]
            return [self._new_event(e, user_id, cid, key, digest, i) for i, e in enumerate(events)]

        prefetch = Prefetch(q.conversation_by_id(), {"cid": cid})
        # Only a one-message add can be a single-event append (see StreamContext); for the rest
        # the optimistic read would be wasted.
        single = isinstance(command, AddMessages) and len(command.messages) == 1
        try:
            # Writers of one conversation in this process take turns here rather than in the
            # database: each then finds the head it remembers current and appends in one round trip,
            # where racing each other for the stream lock would cost every loser a retry.
            async with self._turn(cid):
                result = await self.store.append_with(
                    cid,
                    decider,
                    ANY,
                    partition=partition,
                    prefetch=prefetch,
                    optimistic=single,
                    hint=self._heads.get(cid) if single else None,
                )
        except PartitionMismatch:
            # Only a start names a partition: the id belongs to someone else's stream.
            raise ConversationIdUnavailable(cid) from None
        except (DuplicateEvent, WrongExpectedVersion):
            # A duplicate of this keyed request won the race (here or in another process), and this one
            # then met its events or the version it moved to: answer as the winner was answered.
            self._heads.forget(cid)
            if key and (earlier := await self._replayed(cid, user_id, key, digest)) is not None:
                return earlier, None
            raise
        except BaseException:
            self._heads.forget(cid)
            raise
        if key and not result.events and (earlier := await self._replayed(cid, user_id, key, digest)):
            return earlier, None  # a keyed start decided nothing: its duplicate had just created it
        after = None
        if decided and result.events and not result.replayed:
            state, events = decided[0]
            after = replay(zip(events, (e.recorded_at for e in result.events), strict=True), state)
        self._heads.remember(cid, result, after)
        return result, after

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
            prefetched=ctx.prefetched,
        )

    def _turn(self, cid: str) -> asyncio.Lock:
        """This process's lock for writing `cid`; it lives only while someone holds or awaits it."""
        lock = self._turns.get(cid)
        if lock is None:
            lock = self._turns[cid] = asyncio.Lock()
        return lock

    def _new_event(
        self, event: DomainEvent, user_id: str, cid: str, key: str | None, digest: str | None, index: int
    ) -> NewEvent:
        request_id = request_id_var.get()
        meta: dict[str, Any] = {"actor": user_id}
        if request_id:
            # The request is the command: it both causes these events and correlates the work.
            meta.update(request_id=request_id, correlation_id=request_id, causation_id=request_id)
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


def register_upcasters(target: str, store: EventStore) -> None:
    """Call the `module:function` named by `target` with the store's upcaster registry."""
    module_name, _, function = target.partition(":")
    try:
        register = getattr(importlib.import_module(module_name), function or "register")
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"CHATLEDGER_UPCASTERS={target!r} names no importable function: {exc}") from None
    register(store.upcasters)


__all__ = ["ChatLedger", "VersionNotFound", "event_view"]
