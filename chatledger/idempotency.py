"""Idempotency keys (DESIGN section 9): scoped per user, kept at least `ttl`; the same key with the same
route and body returns the original status and body, also to concurrent duplicates, which wait for
the first; the same key with another route or body is a conflict."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from chatledger.domain import DomainError, InvalidMessage
from chatledger.eventstore.sql import SqlEventStore
from chatledger.projections.schema import idempotency_keys as keys

NAMESPACE = uuid.UUID("5b0c1b6e-7d0a-4a43-9f8e-2f1d9f6c6a11")


class IdempotencyConflict(DomainError):
    """The key was already used with another route or body."""


def body_digest(body: Any) -> str:
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    except RecursionError:
        raise InvalidMessage("the request is nested too deeply") from None
    # surrogatepass: a lone surrogate must reach validation (422), not fail here; valid text is unchanged.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump is not None else str(value)


def command_digest(command: object) -> str:
    """A digest of what a command asks for (not of who asked or when)."""
    from dataclasses import asdict

    try:
        fields = asdict(command)  # type: ignore[call-overload]  # Command is a dataclass union
    except RecursionError:
        raise InvalidMessage("the request is nested too deeply") from None
    return body_digest(fields)


def derived_id(user_id: str, key: str, *parts: object) -> str:
    """Deterministic ids for a keyed request, so that duplicates racing in other processes write the
    same events and the event store's own idempotency keeps just one copy."""
    return str(uuid.uuid5(NAMESPACE, "\x00".join([user_id, key, *map(str, parts)])))


PENDING = 0
"""`status` of a claimed key whose request is still running (no HTTP status is 0)."""


class IdempotencyStore:
    """The keys table. A request claims its key *before* it runs (one insert that only the first
    claimant wins), so a duplicate in any process, or the same key on another route, finds the claim
    and waits for its answer or is refused: it never runs the request a second time."""

    def __init__(
        self,
        store: SqlEventStore,
        ttl: timedelta,
        *,
        stale_after: timedelta = timedelta(seconds=15),
        poll_seconds: float = 0.05,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.stale_after = stale_after
        self.poll_seconds = poll_seconds
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._last_sweep = datetime.min.replace(tzinfo=UTC)

    async def run(
        self,
        user_id: str,
        key: str,
        route: str,
        body: Any,
        produce: Callable[[], Awaitable[tuple[int, Any]]],
    ) -> tuple[int, Any]:
        """Return the stored `(status, body)` for this key, or call `produce` once and store its result.
        A request that fails (an exception) leaves nothing behind: its retry is judged afresh."""
        digest = body_digest(body)
        lock = self._locks.setdefault((user_id, key), asyncio.Lock())
        async with lock:  # duplicates in this process wait here, without polling the table
            claimed_at = await self._claim_or_wait(user_id, key, route, digest)
            if isinstance(claimed_at, tuple):
                return claimed_at
            try:
                status, response = await produce()
            except BaseException:
                with contextlib.suppress(Exception):  # unreleased, the claim goes stale and is taken over
                    await self._release(user_id, key, claimed_at)
                raise
            await self._complete(user_id, key, claimed_at, status, response)
            return status, response

    async def _claim_or_wait(
        self, user_id: str, key: str, route: str, digest: str
    ) -> datetime | tuple[int, Any]:
        """The time of this request's claim, or the stored answer of the request that holds it."""
        while True:
            now = datetime.now(UTC)
            row = await self._claim(user_id, key, route, digest, now)
            if row is None:
                return now
            if row.route != route or row.body_sha256 != digest:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used with a different request (route or body)"
                )
            if row.status != PENDING:
                return row.status, row.response
            # Another process runs it. A claim older than `stale_after` lost its process: take it over
            # (a keyed request derives its event ids, so running it again cannot write it twice).
            if now - _aware(row.created_at) > self.stale_after and await self._take_over(row, now):
                return now
            await asyncio.sleep(self.poll_seconds)

    async def _claim(self, user_id: str, key: str, route: str, digest: str, now: datetime) -> Any:
        """None when this request now holds the key; otherwise the row that holds it."""
        async with self.store.transaction() as conn:
            if now - self._last_sweep > timedelta(hours=1):
                self._last_sweep = now
                await conn.execute(keys.delete().where(keys.c.created_at < now - self.ttl))
            mine = (keys.c.user_id == user_id) & (keys.c.key == key)
            await conn.execute(keys.delete().where(mine, keys.c.created_at < now - self.ttl))
            insert = _insert(conn.dialect.name).values(
                user_id=user_id,
                key=key,
                route=route,
                body_sha256=digest,
                status=PENDING,
                response={},
                created_at=now,
            )
            inserted = await conn.execute(insert.on_conflict_do_nothing(index_elements=["user_id", "key"]))
            if inserted.rowcount == 1:
                return None
            return (await conn.execute(sa.select(keys).where(mine))).one()

    async def _take_over(self, row: Any, now: datetime) -> bool:
        async with self.store.transaction() as conn:
            moved = await conn.execute(
                keys.update().where(*self._held(row.user_id, row.key, row.created_at)).values(created_at=now)
            )
        return bool(moved.rowcount == 1)

    async def _complete(
        self, user_id: str, key: str, claimed_at: datetime, status: int, response: Any
    ) -> None:
        async with self.store.transaction() as conn:
            if status < 500:
                await conn.execute(
                    keys.update()
                    .where(*self._held(user_id, key, claimed_at))
                    .values(status=status, response=response)
                )
            else:
                await conn.execute(keys.delete().where(*self._held(user_id, key, claimed_at)))

    async def _release(self, user_id: str, key: str, claimed_at: datetime) -> None:
        async with self.store.transaction() as conn:
            await conn.execute(keys.delete().where(*self._held(user_id, key, claimed_at)))

    @staticmethod
    def _held(user_id: str, key: str, claimed_at: datetime) -> tuple[sa.ColumnElement[bool], ...]:
        """The claim made at `claimed_at`, still pending (not completed, not taken over)."""
        return (
            keys.c.user_id == user_id,
            keys.c.key == key,
            keys.c.status == PENDING,
            keys.c.created_at == claimed_at,
        )


def _insert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT, which both backends speak."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert(keys) if dialect == "postgresql" else sqlite.insert(keys)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite: naive UTC
