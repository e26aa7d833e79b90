"""Scenario 4: the same logical work (one message per transaction) done by chatledger's peers.

(a) "seeds' style": SQLAlchemy async ORM, one session per message: select the conversation by id and
    user, add the message, bump `updated_at`, commit, refresh; on its own `orm_*` tables.
(b) the `eventsourcing` library (PostgreSQL persistence, psycopg 3, synchronous: driven from
    threads), a Conversation aggregate appending one event per message, in its default mode and with
    its database-functions option; the aggregate cache is on in both, so no replay per command.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .append import USER, ledger, ledger_rate, start_many
from .env import BenchEnv
from .load import content, throughput
from .stats import Report


class Base(DeclarativeBase):
    pass


class OrmConversation(Base):
    __tablename__ = "orm_conversations"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    title: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class OrmMessage(Base):
    __tablename__ = "orm_messages"
    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(sa.ForeignKey("orm_conversations.id"), index=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    content: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


async def orm_rate(url: str, writers: int, seconds: float) -> float:
    engine = create_async_engine(url, pool_size=writers)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = async_sessionmaker(engine, class_=AsyncSession)
        now = datetime.now(UTC)
        convs = [str(uuid.uuid4()) for _ in range(writers)]
        async with sessions() as s, s.begin():
            s.add_all(OrmConversation(id=c, user_id=USER, created_at=now, updated_at=now) for c in convs)

        async def op(w: int, n: int) -> None:
            async with sessions() as s:
                query = sa.select(OrmConversation).where(
                    OrmConversation.id == convs[w], OrmConversation.user_id == USER
                )
                conv = (await s.execute(query)).scalar_one()
                msg = OrmMessage(
                    conversation_id=conv.id, role="user", content=content(w, n), created_at=datetime.now(UTC)
                )
                s.add(msg)
                conv.updated_at = datetime.now(UTC)
                await s.commit()
                await s.refresh(msg)

        return await throughput(op, writers, seconds)
    finally:
        await engine.dispose()


class Conversation(Aggregate):
    @event("Started")
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.message_count = 0

    @event("MessageAdded")
    def add_message(self, message_id: str, role: str, content: str) -> None:
        self.message_count += 1


class ConversationsApp(Application[uuid.UUID]):
    def start(self, user_id: str) -> uuid.UUID:
        conv = Conversation(user_id)
        self.save(conv)
        return conv.id

    def add(self, conversation_id: uuid.UUID, text: str) -> None:
        conv: Conversation = self.repository.get(conversation_id)
        conv.add_message(str(uuid.uuid4()), "user", text)
        self.save(conv)


def es_env(env: BenchEnv, writers: int, db_functions: bool) -> dict[str, str]:
    url = make_url(env.pg_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.database or "",
        "POSTGRES_HOST": url.host or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_POOL_SIZE": str(writers),
        "POSTGRES_ENABLE_DB_FUNCTIONS": "y" if db_functions else "",
        "AGGREGATE_CACHE_MAXSIZE": "1000",
    }


def es_rate(env: BenchEnv, writers: int, seconds: float, db_functions: bool) -> float:
    """Events/s of `writers` threads each adding messages to its own aggregate (time-bounded)."""
    name = "EsDbFunctions" if db_functions else "EsDefault"
    app_class: type[ConversationsApp] = type(name, (ConversationsApp,), {})
    app = app_class(env=es_env(env, writers, db_functions))
    try:
        ids = [app.start(USER) for _ in range(writers)]
        for w in range(writers):
            app.add(ids[w], "warm up")
        return _threads(lambda w, n: app.add(ids[w], content(w, n)), writers, seconds)
    finally:
        app.close()


def _threads(op: Callable[[int, int], Any], writers: int, seconds: float) -> float:
    counts = [0] * writers
    barrier = threading.Barrier(writers + 1)

    def worker(w: int) -> None:
        barrier.wait()
        n = 0
        while time.perf_counter() < deadline:
            op(w, n)
            n += 1
        counts[w] = n

    with ThreadPoolExecutor(writers) as pool:
        futures = [pool.submit(worker, w) for w in range(writers)]
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        barrier.wait()
        for f in futures:
            f.result()
        elapsed = time.perf_counter() - start
    return sum(counts) / elapsed


async def peer_scenario(env: BenchEnv, report: Report, *, reps: int, seconds: float) -> None:
    for writers in (1, 8):
        scenario = f"4 peers, {writers} writer{'s' if writers > 1 else ''}"
        async with ledger(env.pg_url) as led:
            convs = await start_many(led, writers)
        for _ in range(reps):
            lib = await ledger_rate(env.pg_url, writers, seconds, convs)
            orm = await orm_rate(env.pg_url, writers, seconds)
            es = await asyncio.to_thread(es_rate, env, writers, seconds, False)
            es_fn = await asyncio.to_thread(es_rate, env, writers, seconds, True)
            for name, value in (
                ("chatledger PG", lib),
                ("seeds' ORM style", orm),
                ("eventsourcing default", es),
                ("eventsourcing db functions", es_fn),
            ):
                report.add(scenario, name, "msg/s", value)
            report.add(scenario, "ratio chatledger/ORM", "x", lib / orm, ">= 10")
            report.add(scenario, "ratio chatledger/eventsourcing best", "x", lib / max(es, es_fn), ">= 3")
