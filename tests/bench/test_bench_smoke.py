"""The benchmark code imports and runs one tiny iteration on SQLite and PostgreSQL (never a benchmark)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a repository package, not part of the installed distribution
    sys.path.insert(0, str(ROOT))

from bench import append, growth, reads, rebuild  # noqa: E402
from bench.__main__ import QUICK, render, summary, write_json  # noqa: E402
from bench.env import base_url, bench_env, dsn_of  # noqa: E402
from bench.stats import Report, percentile  # noqa: E402

pytestmark = pytest.mark.postgres


async def _reachable() -> None:
    try:
        conn = await asyncpg.connect(dsn_of(base_url()), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    await conn.close()


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0


async def test_one_tiny_iteration(tmp_path: Path) -> None:
    await _reachable()
    report = Report()
    async with bench_env() as env:
        await append.append_scenario(env, report, writers=2, reps=1, seconds=0.2)
        await append.sqlite_scenario(env, report, writers=2, reps=1, seconds=0.2)
        await append.batch_scenario(env, report, reps=1, size=20)
        await reads.read_scenario(env, report, lengths=[120], reps=1, samples=5, recent=False)
    ratio = report.get("1 append, 2 writers", "ratio chatledger/raw")
    assert ratio is not None and ratio.median > 0
    assert report.get("1 append, 2 writers", "chatledger SQLite") is not None
    assert "seeded 120 messages, verify ok=True" in report.notes
    assert any(s.startswith("5 last 50 @ 120") for s, _ in report.figures)
    write_json(report, QUICK, tmp_path / "latest.json")
    assert (tmp_path / "latest.json").stat().st_size > 0
    assert render(report).row_count == len(report.figures)
    assert summary(report).startswith("append_ratio_vs_raw=nan read_last50_p99_ratio_vs_raw=")


async def test_rebuild_and_growth_tiny_iterations(tmp_path: Path) -> None:
    await _reachable()
    report = Report()
    async with bench_env() as env:
        await rebuild.rebuild_scenario(env, report, events=1000, reps=1, batch=200)
        sizes = (300, 600)
        await growth.growth_scenario(
            env,
            report,
            sizes=sizes,
            reps=1,
            samples=5,
            plot=None,  # matplotlib is in the bench extra, not in what `make test` installs
            partial=tmp_path / "growth.json",
            per_conversation=50,
        )
        growth.growth_ratios(report, sizes)
    ratio = report.get("6 rebuild @ 1,000 events", "ratio chatledger/raw")
    assert ratio is not None and ratio.median > 0
    rss = report.get("6 rebuild @ 1,000 events", "chatledger peak RSS")
    assert rss is not None and rss.median > 0
    assert "6: seeded conversation verify ok=True" in report.notes
    assert "6: after rebuild, last seq of a seeded conversation = 999" in report.notes
    for size in sizes:
        assert report.get(growth.scenario_name(size), "append p99") is not None
        assert report.get(growth.scenario_name(size), "last 50 p50") is not None
    assert report.get("7 growth 600 / 300", "ratio last 50 p99") is not None
    assert (tmp_path / "growth.json").stat().st_size > 0
