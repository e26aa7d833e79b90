"""Scenario 7: append and last-50 read latency as the log grows (100 000 -> 1 000 000 -> 10 000 000).

Between measurement points the log is grown by COPY (`bench.rebuild.seed_log`: conversations of 1 000
events, hash-chained, with their streams and read rows). At each point, per repetition: `samples`
one-message `ChatLedger.add_messages` calls, each on a random seeded conversation, then `samples`
last-50 reads (`get_messages(limit=50, order="desc")`) of random seeded conversations; p50 and p99 of
each. The plot goes to docs/growth.png (matplotlib, Agg backend).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path

import asyncpg

from .append import ledger
from .env import BenchEnv
from .load import content
from .rebuild import SeededLog, seed_log
from .stats import Report, percentile, timed

PLOT = Path(__file__).resolve().parents[1] / "docs" / "growth.png"
PARTIAL = Path(__file__).resolve().parent / "results" / "growth-partial.json"
SIZES = (100_000, 1_000_000, 10_000_000)


def scenario_name(size: int) -> str:
    return f"7 growth @ {size:,} events"


async def growth_scenario(
    env: BenchEnv,
    report: Report,
    *,
    sizes: tuple[int, ...],
    reps: int,
    samples: int,
    plot: Path | None = PLOT,
    partial: Path | None = PARTIAL,
    per_conversation: int = 1000,
) -> None:
    rng = random.Random(7)
    log = SeededLog([])
    conn = await asyncpg.connect(env.pg_dsn)
    try:
        for size in sizes:
            started = time.perf_counter()
            await seed_log(conn, log, size - log.events, per_conversation=per_conversation)
            await settle(conn)
            report.notes.append(
                f"7: log at {log.events:,} events, grown in {time.perf_counter() - started:.1f} s"
            )
            await _measure(env, report, scenario_name(size), log, rng, reps, samples)
            # After every point, so that an interrupted run still leaves its figures and plot.
            _checkpoint(report, tuple(s for s in sizes if s <= size), log.events, plot, partial)
    finally:
        await conn.close()


def _checkpoint(
    report: Report, sizes: tuple[int, ...], events: int, plot: Path | None, partial: Path | None
) -> None:
    if plot is not None:
        draw(report, sizes, plot)
    if partial is not None:
        figures = [f.as_json() for (s, _), f in report.figures.items() if s.startswith("7 ")]
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"log_events": events, "figures": figures}, indent=2))


async def settle(conn: asyncpg.Connection) -> None:
    """After a bulk load: fresh statistics, and the load's dirty pages flushed (CHECKPOINT, where the
    role may run it) so that their write-out does not land inside the measurement."""
    await conn.execute("ANALYZE events, streams, conversations, messages")
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


async def _measure(
    env: BenchEnv, report: Report, scenario: str, log: SeededLog, rng: random.Random, reps: int, samples: int
) -> None:
    async with ledger(env.pg_url, pool=2) as led:
        for rep in range(reps):
            appends: list[float] = []
            reads: list[float] = []
            for n in range(samples + 10):
                cid, user = rng.choice(log.conversations)
                text = content(rep, n)

                async def append(cid: str = cid, user: str = user, text: str = text) -> object:
                    return await led.add_messages(
                        cid, user_id=user, messages=[{"role": "user", "content": text}]
                    )

                ms = await timed(append)
                if n >= 10:
                    appends.append(ms)
            for n in range(samples + 10):
                cid, user = rng.choice(log.conversations)

                async def read(cid: str = cid, user: str = user) -> object:
                    return await led.get_messages(cid, user_id=user, limit=50, order="desc")

                ms = await timed(read)
                if n >= 10:
                    reads.append(ms)
            for q in (50, 99):
                report.add(scenario, f"append p{q}", "ms", percentile(appends, q))
                report.add(scenario, f"last 50 p{q}", "ms", percentile(reads, q))


def growth_ratios(report: Report, sizes: tuple[int, ...]) -> None:
    """Each latency at the largest size over the same at the smallest (target: within 20%)."""
    if len(sizes) < 2:
        return
    first, last = scenario_name(sizes[0]), scenario_name(sizes[-1])
    for name in ("append p50", "append p99", "last 50 p50", "last 50 p99"):
        a, b = report.get(first, name), report.get(last, name)
        if a is not None and b is not None:
            report.add(
                f"7 growth {sizes[-1]:,} / {sizes[0]:,}", f"ratio {name}", "x", b.median / a.median, "<= 1.2"
            )


def draw(report: Report, sizes: tuple[int, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, kind in zip(axes, ("append", "last 50"), strict=True):
        for q, style in ((50, "o-"), (99, "s--")):
            figs = [report.get(scenario_name(s), f"{kind} p{q}") for s in sizes]
            xs = [s for s, f in zip(sizes, figs, strict=True) if f is not None]
            med = [f.median for f in figs if f is not None]
            lo = [f.median - min(f.values) for f in figs if f is not None]
            hi = [max(f.values) - f.median for f in figs if f is not None]
            ax.errorbar(xs, med, yerr=[lo, hi], fmt=style, capsize=3, label=f"p{q} (median, min-max)")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("events in the log")
        ax.set_ylabel("ms")
        ax.set_title("append 1 message" if kind == "append" else "read last 50 messages")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("chatledger latency as the log grows (PostgreSQL, one client)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
