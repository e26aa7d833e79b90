"""The contract on the in-memory backend (internals are edited directly to simulate tampering)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chatledger.eventstore import EventStore
from chatledger.eventstore.memory import MemoryEventStore

from .contract import StoreContract, StoreFactory


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self) -> StoreFactory:
        async def make(**options: Any) -> EventStore:
            return MemoryEventStore(**options)

        return make

    def _events(self, store: EventStore, stream_id: str) -> list[Any]:
        assert isinstance(store, MemoryEventStore)
        return store._streams[stream_id].events

    async def tamper(self, store: EventStore, stream_id: str, version: int, **values: Any) -> None:
        events = self._events(store, stream_id)
        index = next(i for i, e in enumerate(events) if e.stream_version == version)
        events[index] = dataclasses.replace(events[index], **values)

    async def delete(self, store: EventStore, stream_id: str, version: int) -> None:
        events = self._events(store, stream_id)
        events[:] = [e for e in events if e.stream_version != version]

    async def events_in_tx(self, tx: Any, stream_id: str) -> int | None:
        assert tx is None
        return None
