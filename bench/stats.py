"""Figures and how they are summarised: every figure and every ratio as median, min and max over
repetitions; latencies as p50/p99 within one repetition."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One named measurement repeated `len(values)` times (msg/s, ms, or a ratio)."""

    scenario: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values, default=float("nan")),
            "max": max(self.values, default=float("nan")),
            "values": self.values,
            "target": self.target,
        }


class Report:
    """All figures of a run, in the order they were first recorded."""

    def __init__(self) -> None:
        self.figures: dict[tuple[str, str], Figure] = {}
        self.notes: list[str] = []

    def add(self, scenario: str, name: str, unit: str, value: float, target: str = "") -> None:
        key = (scenario, name)
        fig = self.figures.setdefault(key, Figure(scenario, name, unit, target=target))
        fig.values.append(value)

    def get(self, scenario: str, name: str) -> Figure | None:
        return self.figures.get((scenario, name))


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    """Milliseconds one awaited call takes."""
    start = time.perf_counter()
    await call()
    return (time.perf_counter() - start) * 1000
