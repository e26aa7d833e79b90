"""Scenarios 1-3: appends through `ChatLedger.add_messages` against the raw single-statement baseline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

from chatledger.service import ChatLedger
from chatledger.settings import Settings

from . import raw
from .env import BenchEnv
from .load import content, throughput
from .stats import Report

USER = "bench-user"


@asynccontextmanager
async def ledger(url: str, *, pool: int = 10, max_per_call: int = 100) -> AsyncIterator[ChatLedger]:
    settings = Settings(database_url=url, pool_size=max(pool, 1), max_messages_per_call=max_per_call)
    async with ChatLedger.open(settings=settings, migrate=False) as led:
        yield led


async def start_many(led: ChatLedger, count: int) -> list[str]:
    return [(await led.start_conversation(user_id=USER)).id for _ in range(count)]


async def ledger_rate(url: str, writers: int, seconds: float, convs: list[str]) -> float:
    async with ledger(url, pool=writers) as led:

        async def op(w: int, n: int) -> None:
            cid = convs[w % len(convs)]
            await led.add_messages(cid, user_id=USER, messages=[{"role": "user", "content": content(w, n)}])

        return await throughput(op, writers, seconds)


async def raw_rate(
    dsn: str, writers: int, seconds: float, streams: list[str], append: raw.Append = raw.append_one
) -> float:
    async with asyncpg.create_pool(dsn, min_size=writers, max_size=writers) as pool:

        async def op(w: int, n: int) -> None:
            await append(pool, streams[w % len(streams)], USER, content(w, n))

        return await throughput(op, writers, seconds)


async def append_scenario(
    env: BenchEnv, report: Report, *, writers: int, reps: int, seconds: float, hot: bool = False
) -> None:
    """Scenario 1 (`hot=False`: each writer on its own conversation) or 2 (all on one), alternating."""
    scenario = f"2 hot conversation, {writers} writers" if hot else f"1 append, {writers} writers"
    count = 1 if hot else writers
    async with ledger(env.pg_url) as led:
        convs = await start_many(led, count)
    conn = await asyncpg.connect(env.pg_dsn)
    try:
        streams = await raw.add_conversations(conn, USER, count)
    finally:
        await conn.close()
    target = "" if hot else (">= 0.60" if writers == 1 else ">= 0.70")
    for _ in range(reps):
        lib = await ledger_rate(env.pg_url, writers, seconds, convs)
        base = await raw_rate(env.pg_dsn, writers, seconds, streams)
        shape = await raw_rate(env.pg_dsn, writers, seconds, streams, raw.append_one_in_transaction)
        report.add(scenario, "chatledger PG", "msg/s", lib)
        report.add(scenario, "raw asyncpg CTE", "msg/s", base)
        report.add(scenario, "raw, chatledger's 4 round trips", "msg/s", shape)
        report.add(scenario, "ratio chatledger/raw", "x", lib / base, target)
        report.add(scenario, "ratio 4 round trips/raw", "x", shape / base)


async def sqlite_scenario(env: BenchEnv, report: Report, *, writers: int, reps: int, seconds: float) -> None:
    """chatledger on SQLite (aiosqlite, WAL): writers serialise on the database lock."""
    async with ledger(env.sqlite_url) as led:
        convs = await start_many(led, writers)
    for _ in range(reps):
        report.add(
            f"1 append, {writers} writers",
            "chatledger SQLite",
            "msg/s",
            await ledger_rate(env.sqlite_url, writers, seconds, convs),
        )


async def batch_scenario(env: BenchEnv, report: Report, *, reps: int, size: int = 1000) -> None:
    """Scenario 3: one call of `size` messages vs raw executemany and COPY, each one transaction."""
    scenario = f"3 batch of {size}"
    async with ledger(env.pg_url, max_per_call=size) as led:
        (cid,) = await start_many(led, 1)
        conn = await asyncpg.connect(env.pg_dsn)
        try:
            (sid,) = await raw.add_conversations(conn, USER, 1)
            batch = [content(0, n) for n in range(size)]
            messages = [{"role": "user", "content": c} for c in batch]

            async def lib() -> None:
                await led.add_messages(cid, user_id=USER, messages=messages)

            def raw_call(fn: Callable[..., Awaitable[None]]) -> Callable[[], Awaitable[None]]:
                async def call() -> None:
                    async with conn.transaction():
                        await fn(conn, sid, USER, batch)

                return call

            runs = {
                "chatledger PG": lib,
                "raw executemany": raw_call(raw.batch_executemany),
                "raw COPY": raw_call(raw.batch_copy),
            }
            await lib()  # warm up prepared statements and the pool
            for _ in range(reps):
                rates = {}
                for name, call in runs.items():
                    start = time.perf_counter()
                    await call()
                    rates[name] = size / (time.perf_counter() - start)
                    report.add(scenario, name, "msg/s", rates[name])
                report.add(
                    scenario,
                    "ratio chatledger/executemany",
                    "x",
                    rates["chatledger PG"] / rates["raw executemany"],
                    ">= 0.50",
                )
                report.add(scenario, "ratio chatledger/COPY", "x", rates["chatledger PG"] / rates["raw COPY"])
        finally:
            await conn.close()
