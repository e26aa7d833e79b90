"""Idempotency keys (DESIGN section 9): scoped per user, kept at least `ttl`; the same key with the same
route and body returns the original status and body, also to concurrent duplicates, which wait for
the first; the same key with another route or body is a conflict."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from chatledger.domain import DomainError
from chatledger.eventstore.sql import SqlEventStore
from chatledger.projections.schema import idempotency_keys as keys

NAMESPACE = uuid.UUID("5b0c1b6e-7d0a-4a43-9f8e-2f1d9f6c6a11")


class IdempotencyConflict(DomainError):
    """The key was already used with another route or body."""


def body_digest(body: Any) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump is not None else str(value)


def command_digest(command: object) -> str:
    """A digest of what a command asks for (not of who asked or when)."""
    from dataclasses import asdict

    return body_digest(asdict(command))  # type: ignore[call-overload]  # Command is a dataclass union


def derived_id(user_id: str, key: str, *parts: object) -> str:
    """Deterministic ids for a keyed request, so that duplicates racing in other processes write the
    same events and the event store's own idempotency keeps just one copy."""
    return str(uuid.uuid5(NAMESPACE, "\x00".join([user_id, key, *map(str, parts)])))


class IdempotencyStore:
    def __init__(self, store: SqlEventStore, ttl: timedelta) -> None:
        self.store = store
        self.ttl = ttl
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
        """Return the stored `(status, body)` for this key, or call `produce` once and store its result."""
        digest = body_digest(body)
        lock = self._locks.setdefault((user_id, key), asyncio.Lock())
        async with lock:
            stored = await self._find(user_id, key)
            if stored is not None:
                if stored.route != route or stored.body_sha256 != digest:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was already used with a different request (route or body)"
                    )
                return stored.status, stored.response
            status, response = await produce()
            if status < 500:
                await self._save(user_id, key, route, digest, status, response)
            return status, response

    async def _find(self, user_id: str, key: str) -> Any:
        cutoff = datetime.now(UTC) - self.ttl
        stmt = sa.select(keys).where(
            keys.c.user_id == user_id, keys.c.key == key, keys.c.created_at >= cutoff
        )
        async with self.store.connect() as conn:
            return (await conn.execute(stmt)).one_or_none()

    async def _save(
        self, user_id: str, key: str, route: str, digest: str, status: int, response: Any
    ) -> None:
        now = datetime.now(UTC)
        async with self.store.transaction() as conn:
            if now - self._last_sweep > timedelta(hours=1):
                self._last_sweep = now
                await conn.execute(keys.delete().where(keys.c.created_at < now - self.ttl))
            # An expired record under the same key is replaced; a live one from another process wins.
            await conn.execute(
                keys.delete().where(
                    keys.c.user_id == user_id, keys.c.key == key, keys.c.created_at < now - self.ttl
                )
            )
            exists = (
                await conn.execute(sa.select(keys.c.key).where(keys.c.user_id == user_id, keys.c.key == key))
            ).first()
            if exists is None:
                await conn.execute(
                    keys.insert().values(
                        user_id=user_id,
                        key=key,
                        route=route,
                        body_sha256=digest,
                        status=status,
                        response=response,
                        created_at=now,
                    )
                )
