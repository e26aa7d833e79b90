"""Upcasters turn stored old payloads into the current shape on read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Upcaster = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class UpcasterRegistry:
    """Upcasters keyed by (event type, schema version); each lifts a payload one version up."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, type_: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def decorator(fn: Upcaster) -> Upcaster:
            self._steps[(type_, from_version)] = fn
            return fn

        return decorator

    def add(self, type_: str, from_version: int, fn: Upcaster) -> None:
        self._steps[(type_, from_version)] = fn

    def upcast(self, type_: str, version: int, data: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
        """Apply every registered step from `version` on; returns the final version and payload."""
        while (step := self._steps.get((type_, version))) is not None:
            data = step(data)
            version += 1
        return version, data
