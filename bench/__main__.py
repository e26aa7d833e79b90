"""`python -m bench [--quick] [--only SCENARIO ...] [--rebuild-events N] [--growth-max N]`: run, print
one table, write bench/results/latest.json.

The last line printed is `append_ratio_vs_raw=<x> read_last50_p99_ratio_vs_raw=<y>` (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import append, reads, rebuild
from .env import BenchEnv, bench_env
from .stats import Report

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
ALL = ("append", "hot", "batch", "reads", "peers", "rebuild", "growth", "http")


@dataclass(frozen=True)
class Plan:
    writers: tuple[int, ...]
    reps: int
    seconds: float
    lengths: list[int]
    read_reps: int
    samples: int
    recent: bool
    scenarios: tuple[str, ...]
    rebuild_events: int = 1_000_000
    rebuild_reps: int = 3
    growth_sizes: tuple[int, ...] = (100_000, 1_000_000, 10_000_000)
    growth_reps: int = 3
    growth_samples: int = 200


QUICK = Plan((8,), 5, 2.0, [10_000], 3, 300, False, ("append", "reads"))
FULL = Plan((1, 8, 32), 5, 3.0, [100, 10_000, 100_000], 5, 500, True, ALL)


async def run(plan: Plan, report: Report) -> None:
    async with bench_env() as env:
        steps: dict[str, Callable[[BenchEnv], Awaitable[None]]] = {
            "append": lambda e: _appends(e, plan, report),
            "hot": lambda e: append.append_scenario(
                e, report, writers=8, reps=plan.reps, seconds=plan.seconds, hot=True
            ),
            "batch": lambda e: append.batch_scenario(e, report, reps=plan.reps),
            "reads": lambda e: reads.read_scenario(
                e, report, lengths=plan.lengths, reps=plan.read_reps, samples=plan.samples, recent=plan.recent
            ),
            "peers": lambda e: _peers(e, plan, report),
            "rebuild": lambda e: rebuild.rebuild_scenario(
                e, report, events=plan.rebuild_events, reps=plan.rebuild_reps
            ),
            "growth": lambda e: _growth(e, plan, report),
            "http": lambda e: _http(e, plan, report),
        }
        for name in plan.scenarios:
            started = time.perf_counter()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            await steps[name](env)
            print(f"  {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


async def _appends(env: BenchEnv, plan: Plan, report: Report) -> None:
    for writers in plan.writers:
        await append.append_scenario(env, report, writers=writers, reps=plan.reps, seconds=plan.seconds)
    for writers in plan.writers[:2]:
        await append.sqlite_scenario(
            env, report, writers=writers, reps=min(plan.reps, 3), seconds=plan.seconds / 2
        )


async def _peers(env: BenchEnv, plan: Plan, report: Report) -> None:
    from . import peers

    await peers.peer_scenario(env, report, reps=plan.reps, seconds=plan.seconds)


async def _growth(env: BenchEnv, plan: Plan, report: Report) -> None:
    from . import growth

    await growth.growth_scenario(
        env, report, sizes=plan.growth_sizes, reps=plan.growth_reps, samples=plan.growth_samples
    )
    growth.growth_ratios(report, plan.growth_sizes)


async def _http(env: BenchEnv, plan: Plan, report: Report) -> None:
    from . import http

    await http.http_scenario(env, report, seconds=plan.seconds * 3)


def render(report: Report) -> Table:
    table = Table(title="chatledger benchmarks (median, min, max over repetitions)")
    for column in ("scenario", "figure", "median", "min", "max", "n", "target"):
        table.add_column(column, justify="left" if column in ("scenario", "figure", "target") else "right")
    for fig in report.figures.values():
        fmt = (
            "{:,.0f}"
            if fig.unit in ("msg/s", "req/s", "events/s")
            else ("{:.2f}" if fig.unit == "x" else "{:.3f}")
        )
        row = [fmt.format(v) for v in (fig.median, min(fig.values), max(fig.values))]
        table.add_row(fig.scenario, f"{fig.name} ({fig.unit})", *row, str(len(fig.values)), fig.target)
    return table


def write_json(report: Report, plan: Plan, path: Path = RESULTS) -> None:
    doc: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "plan": plan.__dict__
        | {
            "writers": list(plan.writers),
            "scenarios": list(plan.scenarios),
            "growth_sizes": list(plan.growth_sizes),
        },
        "figures": [f.as_json() for f in report.figures.values()],
        "notes": report.notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))


def summary(report: Report) -> str:
    append_ratio = report.get("1 append, 8 writers", "ratio chatledger/raw")
    read_ratio = next(
        (
            f
            for (s, n), f in report.figures.items()
            if s.startswith("5 last 50 @ 10,000") and n.startswith("ratio p99")
        ),
        None,
    )
    a = f"{append_ratio.median:.2f}" if append_ratio else "nan"
    r = f"{read_ratio.median:.2f}" if read_ratio else "nan"
    return f"append_ratio_vs_raw={a} read_last50_p99_ratio_vs_raw={r}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="append at 8 writers and reads at 10 000 only")
    parser.add_argument("--only", nargs="+", choices=ALL, help="run only these scenarios")
    parser.add_argument("--rebuild-events", type=int, help="size of the log scenario 6 rebuilds (1 000 000)")
    parser.add_argument("--rebuild-reps", type=int, help="repetitions of scenario 6 (3)")
    parser.add_argument(
        "--growth-max", type=int, help="scenario 7 stops at this log size (10 000 000; the cap is a size too)"
    )
    parser.add_argument("--growth-reps", type=int, help="repetitions per size in scenario 7 (3)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.only:
        changes["scenarios"] = tuple(args.only)
    if args.rebuild_events:
        changes["rebuild_events"] = args.rebuild_events
    if args.rebuild_reps:
        changes["rebuild_reps"] = args.rebuild_reps
    if args.growth_max:
        sizes = (*(s for s in plan.growth_sizes if s < args.growth_max), args.growth_max)
        changes["growth_sizes"] = sizes
    if args.growth_reps:
        changes["growth_reps"] = args.growth_reps
    if changes:
        plan = Plan(**(plan.__dict__ | changes))
    report = Report()
    asyncio.run(run(plan, report))
    write_json(report, plan)
    Console(width=160).print(render(report))
    for note in report.notes:
        print(note)
    print(summary(report))


if __name__ == "__main__":
    main()
