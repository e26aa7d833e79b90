"""Closed-loop load: `writers` tasks each awaiting one operation after another for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Op = Callable[[int, int], Awaitable[object]]
"""One operation by writer `w`, its `n`-th."""


async def throughput(op: Op, writers: int, seconds: float, warmup: float = 0.3) -> float:
    """Operations per second over `seconds`, after `warmup` seconds that are not counted."""
    await _drive(op, writers, warmup, 0)
    count, elapsed = await _drive(op, writers, seconds, 1_000_000)
    return count / elapsed


async def _drive(op: Op, writers: int, seconds: float, offset: int) -> tuple[int, float]:
    start = time.perf_counter()
    deadline = start + seconds
    counts = [0] * writers

    async def worker(w: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            await op(w, offset + n)
            n += 1
        counts[w] = n

    await asyncio.gather(*(worker(w) for w in range(writers)))
    return sum(counts), time.perf_counter() - start


def content(w: int, n: int) -> str:
    """A realistic short chat message (~150 characters)."""
    return (
        f"Writer {w}, message {n}: could you summarise the last report and list the three open "
        "questions we still have about the rollout plan, please?"
    )
