"""Scenario 5: reads through the ledger against the same query in raw asyncpg, p50/p99 alternating."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from chatledger.service import ChatLedger

from . import raw, seed
from .append import ledger
from .env import BenchEnv
from .stats import Report, percentile, timed

USER = "reader"
Call = Callable[[], Awaitable[object]]


async def compare(report: Report, scenario: str, lib: Call, base: Call, *, samples: int, target: str) -> None:
    """One repetition: `samples` calls of each, interleaved; records p50/p99 of both and the ratios."""
    for _ in range(20):
        await lib()
        await base()
    lib_ms: list[float] = []
    raw_ms: list[float] = []
    for _ in range(samples):
        lib_ms.append(await timed(lib))
        raw_ms.append(await timed(base))
    for q in (50, 99):
        a, b = percentile(lib_ms, q), percentile(raw_ms, q)
        report.add(scenario, f"chatledger p{q}", "ms", a)
        report.add(scenario, f"raw p{q}", "ms", b)
        report.add(scenario, f"ratio p{q} chatledger/raw", "x", a / b, target if q == 99 else "")


async def read_scenario(
    env: BenchEnv, report: Report, *, lengths: list[int], reps: int, samples: int, recent: bool
) -> None:
    conn = await asyncpg.connect(env.pg_dsn)
    try:
        seeded = {n: await seed.seed_messages(conn, USER, n) for n in lengths}
        owner = "heavy-user"
        if recent:
            await seed.seed_conversations(conn, owner, 10_000)
        await conn.execute("ANALYZE")
        async with ledger(env.pg_url, pool=2) as led:
            for n, cid in seeded.items():
                verified = await led.verify(cid, user_id=USER)
                report.notes.append(f"seeded {n} messages, verify ok={verified.ok}")
            for _ in range(reps):
                for n, cid in seeded.items():
                    await _one_length(report, led, conn, cid, n, samples)
                if recent:
                    await compare(
                        report,
                        "5 recent 20 of 10 000 conversations",
                        lambda: led.list_conversations(user_id=owner, limit=20),
                        lambda: conn.fetch(raw.RECENT, owner, 21),
                        samples=samples,
                        target="<= 1.5",
                    )
    finally:
        await conn.close()


async def _one_length(
    report: Report, led: ChatLedger, conn: asyncpg.Connection, cid: str, n: int, samples: int
) -> None:
    middle = n // 2
    cases: dict[str, tuple[Call, Call]] = {
        "last 50": (
            lambda: led.get_messages(cid, user_id=USER, limit=50, order="desc"),
            lambda: conn.fetch(raw.LAST_N, cid, USER, 51),
        ),
        f"50 before seq {middle}": (
            lambda: led.get_messages(cid, user_id=USER, limit=50, before=middle),
            lambda: conn.fetch(raw.BEFORE, cid, USER, middle, 51),
        ),
        "context window (max 50)": (
            lambda: led.get_context(cid, user_id=USER, max_messages=50),
            lambda: conn.fetch(raw.CONTEXT, cid, USER, 51),
        ),
    }
    for name, (lib, base) in cases.items():
        await compare(report, f"5 {name} @ {n:,}", lib, base, samples=samples, target="<= 1.5")
