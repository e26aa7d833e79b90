"""A stateful hypothesis test: random appends, retries and reads against a plain dict model."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatledger import migrate
from chatledger.eventstore import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    Expected,
    NewEvent,
    RecordedEvent,
    WrongExpectedVersion,
)
from chatledger.eventstore.factory import create_engine_for
from chatledger.eventstore.memory import MemoryEventStore
from chatledger.eventstore.sqlite import SqliteEventStore

STREAMS = st.sampled_from(["a", "b", "c"])
MODES = st.sampled_from(["any", "exact", "wrong", "no_stream"])


class StoreMachine(RuleBasedStateMachine):
    """Drives a store through a sync wrapper (one `asyncio.Runner` per run); the model is a dict of
    stream id -> list of (event id, type, data) plus the positions handed out."""

    backend: ClassVar[str] = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.store = self.runner.run(self._open())
        self.model: dict[str, list[tuple[uuid.UUID, str, dict[str, Any]]]] = {}
        self.positions: dict[uuid.UUID, int] = {}
        self.last: tuple[str, list[NewEvent], AppendResult] | None = None
        self.counter = 0

    async def _open(self) -> EventStore:
        if self.backend == "memory":
            return MemoryEventStore()
        engine = create_engine_for("sqlite+aiosqlite:///:memory:")
        await migrate.upgrade(engine)
        return SqliteEventStore(engine, owns_engine=True)

    def teardown(self) -> None:
        self.runner.run(self.store.close())
        self.runner.close()

    @rule(stream=STREAMS, count=st.integers(1, 3), mode=MODES)
    def append(self, stream: str, count: int, mode: str) -> None:
        version = len(self.model.get(stream, []))
        choices: dict[str, Expected] = {
            "any": ANY,
            "exact": version,
            "wrong": version + 1,
            "no_stream": NO_STREAM,
        }
        expected = choices[mode]
        succeeds = mode in ("any", "exact") or (mode == "no_stream" and version == 0)
        new = [NewEvent(f"T{self.counter % 3}", {"i": self.counter + k}) for k in range(count)]
        self.counter += count
        try:
            result = self.runner.run(self.store.append(stream, new, expected))
        except WrongExpectedVersion:
            assert not succeeds
            return
        assert succeeds and not result.replayed
        assert [e.stream_version for e in result.events] == list(range(version + 1, version + count + 1))
        self.model.setdefault(stream, []).extend((e.event_id, e.type, dict(e.data)) for e in new)
        self.positions.update((e.event_id, e.global_position) for e in result.events)
        self.last = (stream, new, result)

    @precondition(lambda self: self.last is not None)
    @rule(expected=st.sampled_from([ANY, NO_STREAM, 0]))
    def retry_last_append(self, expected: Expected) -> None:
        assert self.last is not None
        stream, new, original = self.last
        again = self.runner.run(self.store.append(stream, new, expected))
        assert again.replayed
        assert (again.version, again.positions) == (original.version, original.positions)

    @rule(stream=STREAMS, after=st.integers(0, 6), limit=st.none() | st.integers(1, 4))
    def read_stream(self, stream: str, after: int, limit: int | None) -> None:
        events = self.runner.run(self.store.read_stream(stream, after_version=after, limit=limit))
        expected = self.model.get(stream, [])[after:]
        assert [(e.event_id, e.type, e.data) for e in events] == expected[:limit]

    @rule(after_index=st.integers(0, 30), limit=st.integers(1, 5))
    def read_all_page(self, after_index: int, limit: int) -> None:
        ordered = sorted(self.positions.values())
        after = ordered[after_index - 1] if 0 < after_index <= len(ordered) else 0
        page = self.runner.run(self.store.read_all(after=after, limit=limit))
        assert [e.global_position for e in page] == [p for p in ordered if p > after][:limit]

    def _log(self) -> list[RecordedEvent]:
        return self.runner.run(self.store.read_all(limit=10_000))

    @invariant()
    def log_matches_model(self) -> None:
        log = self._log()
        positions = [e.global_position for e in log]
        assert positions == sorted(set(positions))
        assert {e.event_id: e.global_position for e in log} == self.positions
        for stream, expected in self.model.items():
            events = [e for e in log if e.stream_id == stream]
            assert [e.stream_version for e in events] == list(range(1, len(expected) + 1))
            assert [(e.event_id, e.type, e.data) for e in events] == expected

    @invariant()
    def chains_verify(self) -> None:
        result = self.runner.run(self.store.verify())
        assert result.ok and result.events_checked == len(self.positions)


class SqliteStoreMachine(StoreMachine):
    backend = "sqlite"


_settings = settings(
    max_examples=40, stateful_step_count=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestMemoryStoreMachine = StoreMachine.TestCase
TestMemoryStoreMachine.settings = _settings
TestSqliteStoreMachine = SqliteStoreMachine.TestCase
TestSqliteStoreMachine.settings = settings(_settings, max_examples=20)
