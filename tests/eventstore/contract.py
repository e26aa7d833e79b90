"""The event store contract, run against every backend by subclassing `StoreContract`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, cast

import pytest
import sqlalchemy as sa

from chatledger.eventstore import (
    ANY,
    GENESIS_HASH,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    DuplicateEvent,
    EventStore,
    NewEvent,
    PartitionMismatch,
    RecordedEvent,
    StreamContext,
    StreamHint,
    StreamInfo,
    UpcasterRegistry,
    WrongExpectedVersion,
)
from chatledger.eventstore.recording import MAX_EVENTS_PER_APPEND, AppendTooLarge
from chatledger.eventstore.schema import events
from chatledger.eventstore.sql import Prefetch, SqlEventStore

StoreFactory = Callable[..., Awaitable[EventStore]]
_EVENT_COUNT = sa.select(sa.func.count().label("n")).where(events.c.stream_id == sa.bindparam("sid"))
WAIT = 10.0


def ev(type_: str = "Happened", n: int = 0, **data: Any) -> NewEvent:
    return NewEvent(type_, {"n": n, **data}, {"actor": "test"})


def batch(count: int, start: int = 0) -> list[NewEvent]:
    return [ev(n=start + i) for i in range(count)]


def subscription(store: EventStore, after: int = 0) -> AsyncGenerator[RecordedEvent, None]:
    return cast(AsyncGenerator[RecordedEvent, None], store.subscribe(after=after))


async def take(events: AsyncGenerator[RecordedEvent, None], count: int) -> list[RecordedEvent]:
    return [await asyncio.wait_for(anext(events), WAIT) for _ in range(count)]


class Boom(Exception):
    pass


class Recorder:
    """An inline projection that records what it was given and can be told to fail."""

    def __init__(self, seen_in_tx: Callable[[Any, str], Awaitable[int | None]], fail: bool = False) -> None:
        self.calls: list[tuple[Any, list[RecordedEvent], int | None]] = []
        self._seen_in_tx = seen_in_tx
        self.fail = fail

    async def apply(self, tx: Any, events: Sequence[RecordedEvent]) -> None:
        self.calls.append((tx, list(events), await self._seen_in_tx(tx, events[0].stream_id)))
        if self.fail:
            raise Boom


class StoreContract:
    """Subclasses provide the `make_store` fixture and the backend-specific hooks below."""

    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> EventStore:
        return await make_store()

    async def tamper(self, store: EventStore, stream_id: str, version: int, **values: Any) -> None:
        """Overwrite stored columns of one event behind the store's back."""
        raise NotImplementedError

    async def delete(self, store: EventStore, stream_id: str, version: int) -> None:
        raise NotImplementedError

    async def events_in_tx(self, tx: Any, stream_id: str) -> int | None:
        """How many events of the stream `tx` sees (None when the backend has no transaction)."""
        raise NotImplementedError

    # -- append and versions ------------------------------------------------------------------

    async def test_append_records_envelope(self, store: EventStore) -> None:
        result = await store.append("s", batch(3), NO_STREAM, partition="alice")
        assert [e.stream_version for e in result.events] == [1, 2, 3]
        assert result.version == 3 and not result.replayed
        assert list(result.positions) == sorted(set(result.positions))
        assert {e.partition for e in result.events} == {"alice"}
        assert len({e.recorded_at for e in result.events}) == 1
        assert result.events[0].prev_hash == GENESIS_HASH
        assert result.events[1].prev_hash == result.events[0].hash
        assert await store.read_stream("s") == list(result.events)
        assert await store.stream_info("s") == StreamInfo("s", "alice", 3)

    async def test_stream_info_of_unknown_stream(self, store: EventStore) -> None:
        assert await store.stream_info("nope") is None
        assert await store.read_stream("nope") == []

    async def test_prefetch_is_read_under_the_lock(self, store: EventStore) -> None:
        # Every decision sees the prefetched rows exactly as of the version it is made on, including
        # those that waited for the lock behind other writers (on PostgreSQL, their lock statement
        # ran on an older snapshot and the rows are read again) and optimistic ones (read without
        # the lock, in one snapshot with the stream head).
        sql = isinstance(store, SqlEventStore)
        seen: list[tuple[int, Any]] = []

        async def decide(ctx: StreamContext) -> list[NewEvent]:
            seen.append((ctx.stream.version if ctx.stream else 0, ctx.prefetched))
            return [ev()]

        count = Prefetch(_EVENT_COUNT, {"sid": "hot"}) if sql else None
        await store.append_with("hot", decide, prefetch=count)  # the stream row exists from here on
        await asyncio.gather(*(store.append_with("hot", decide, prefetch=count) for _ in range(16)))
        # PostgreSQL may decide a contended append more than once (optimistically, then again).
        assert set(version for version, _ in seen) == set(range(17))
        assert (await store.stream_info("hot")) == StreamInfo("hot", "", 17)
        got = [(version, None if rows is None else [dict(r) for r in rows]) for version, rows in seen]
        assert got == [(version, [{"n": version}] if sql else None) for version, _ in seen]
        if sql:
            seen.clear()
            nothing = sa.select(events.c.hash).where(events.c.stream_id == sa.bindparam("sid"), sa.false())
            none = Prefetch(nothing, {"sid": "hot"})
            await store.append_with("hot", decide, prefetch=none)
            assert [rows for _, rows in seen] == [[]]

    async def test_single_appends_to_an_existing_stream(self, store: EventStore) -> None:
        # The shape PostgreSQL appends optimistically (its hash computed in SQL): awkward text
        # included, the chain must verify and read back exactly as the results said.
        first = await store.append("s", [ev(n=0)])
        texts = ['quote " backslash \\ slash /', "emoji 🎉 and ünïcödé", "tab\tnewline\n", "<&>", ""]
        results = [await store.append("s", [ev(n=i + 1, text=t)]) for i, t in enumerate(texts)]
        stored = await store.read_stream("s")
        assert stored == [*first.events, *(e for r in results for e in r.events)]
        assert [e.stream_version for e in stored] == list(range(1, len(texts) + 2))
        assert [e.data.get("text") for e in stored[1:]] == texts
        assert [e.prev_hash for e in stored[1:]] == [e.hash for e in stored[:-1]]
        assert [e.global_position for e in stored] == sorted({e.global_position for e in stored})
        assert (await store.verify("s")).ok

    async def test_concurrent_single_appends_to_an_existing_stream(self, store: EventStore) -> None:
        await store.append("hot", [ev(n=-1)])
        results = await asyncio.gather(*(store.append("hot", [ev(n=i)]) for i in range(24)))
        assert sorted(r.version for r in results) == list(range(2, 26))
        stored = await store.read_stream("hot")
        assert [e.stream_version for e in stored] == list(range(1, 26))
        assert sorted(e.data["n"] for e in stored) == list(range(-1, 24))
        assert [e.global_position for e in stored] == sorted(e.global_position for e in stored)
        assert (await store.verify("hot")).ok
        assert [e.event_id for e in await store.read_all()] == [e.event_id for e in stored]

    async def test_a_hint_is_followed_only_while_it_matches_the_stream(self, store: EventStore) -> None:
        # A hint is the caller's memory of the stream. PostgreSQL decides on it without reading when
        # it is current (the decider sees the hinted rows, once); a hint made stale by another writer,
        # or one whose hash is not the stored one, must cost a retry and never a wrong write.
        # Backends without an optimistic path ignore hints: the same results, from a read.
        pg = type(store).__name__ == "PostgresEventStore"
        sql = isinstance(store, SqlEventStore)
        seen: list[tuple[int, Any]] = []

        async def decide(ctx: StreamContext) -> list[NewEvent]:
            rows = None if ctx.prefetched is None else [dict(r) for r in ctx.prefetched]
            seen.append((ctx.stream.version if ctx.stream else 0, rows))
            return [ev(n=len(seen))]

        count = Prefetch(_EVENT_COUNT, {"sid": "s"}) if sql else None
        first = (await store.append("s", [ev(n=0)], partition="p")).events[0]
        remembered = [{"n": 1, "from": "the hint"}]
        current = StreamHint(1, "p", first.hash, remembered)
        written = await store.append_with("s", decide, prefetch=count, hint=current)
        assert written.version == 2 and written.events[0].prev_hash == first.hash
        read = [{"n": 1}] if sql else None
        assert seen == ([(1, remembered)] if pg else [(1, read)])

        await store.append("s", [ev(n=-1)])  # another writer: the hint of version 2 is now stale
        third = (await store.read_stream("s"))[-1]
        seen.clear()
        stale = StreamHint(2, "p", written.events[0].hash, remembered)
        after_stale = await store.append_with("s", decide, prefetch=count, hint=stale)
        assert after_stale.version == 4 and after_stale.events[0].prev_hash == third.hash
        read = [{"n": 3}] if sql else None
        assert seen == ([(2, remembered), (3, read)] if pg else [(3, read)])

        seen.clear()
        forged = StreamHint(4, "p", "f" * 64, remembered)  # the right version, not the stored hash
        after_forged = await store.append_with("s", decide, prefetch=count, hint=forged)
        assert after_forged.version == 5
        assert after_forged.events[0].prev_hash == after_stale.events[0].hash
        read = [{"n": 4}] if sql else None
        assert seen == ([(4, remembered), (4, read)] if pg else [(4, read)])

        stored = await store.read_stream("s")
        assert [e.stream_version for e in stored] == [1, 2, 3, 4, 5]
        assert stored[1:] == [*written.events, third, *after_stale.events, *after_forged.events]
        assert (await store.verify("s")).ok

    async def test_a_refusal_on_a_stale_hint_is_judged_again_on_a_fresh_read(self, store: EventStore) -> None:
        # The decider may refuse only because the remembered head is old (the caller's expected
        # version has moved on elsewhere): that refusal must not reach the caller.
        first = (await store.append("s", [ev(n=0)], partition="p")).events[0]
        await store.append("s", [ev(n=1)])  # another writer: a hint of version 1 is stale
        seen: list[int] = []

        async def expects_two(ctx: StreamContext) -> list[NewEvent]:
            seen.append(ctx.stream.version if ctx.stream else 0)
            if seen[-1] != 2:
                raise ValueError(f"at version {seen[-1]}, not 2")
            return [ev(n=2)]

        stale = StreamHint(1, "p", first.hash, None)
        assert (await store.append_with("s", expects_two, hint=stale)).version == 3
        assert seen[-1] == 2

        async def always_refuses(ctx: StreamContext) -> list[NewEvent]:
            raise ValueError("no")

        head = (await store.read_stream("s"))[-1]
        with pytest.raises(ValueError):  # a real refusal still comes out, unchanged
            await store.append_with("s", always_refuses, hint=StreamHint(3, "p", head.hash, None))
        assert len(await store.read_stream("s")) == 3

    async def test_append_listeners_hear_each_committed_append_once(self, store: EventStore) -> None:
        heard: list[AppendResult] = []
        store.append_listeners.append(heard.append)
        first = await store.append("s", [ev(n=0)])  # a new stream: the locked path
        batch_result = await store.append("s", batch(2, 1))
        single = await store.append("s", [ev(n=3)])  # on PostgreSQL the optimistic path
        assert (await store.append("s", [])).events == ()  # nothing to write: not heard
        retried = [NewEvent(e.type, dict(e.data), dict(e.metadata), e.event_id) for e in single.events]
        assert (await store.append("s", retried)).replayed  # a retry writes nothing: not heard
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", [ev(n=9)], 1)

        async def refuse(_: StreamContext) -> list[NewEvent]:
            raise Boom

        with pytest.raises(Boom):
            await store.append_with("s", refuse)
        assert heard == [first, batch_result, single]

    async def test_32_concurrent_appenders_on_one_stream(self, store: EventStore) -> None:
        results = await asyncio.gather(*(store.append("hot", [ev(n=i)]) for i in range(32)))
        assert sorted(r.version for r in results) == list(range(1, 33))
        stored = await store.read_stream("hot")
        assert [e.stream_version for e in stored] == list(range(1, 33))
        assert sorted(e.data["n"] for e in stored) == list(range(32))
        assert (await store.verify("hot")).ok
        # Consumers of the global order (subscribers, rebuilds) see a stream in version order.
        in_log = [e.stream_version for e in await store.read_all(limit=1000) if e.stream_id == "hot"]
        assert in_log == list(range(1, 33))
        positions = [e.global_position for e in stored]
        assert positions == sorted(positions)

    async def test_concurrent_appends_to_different_streams(self, store: EventStore) -> None:
        async def writer(name: str) -> None:
            for i in range(4):
                await store.append(name, [ev(n=i), ev(n=i)])

        await asyncio.gather(*(writer(f"s{k}") for k in range(8)))
        for k in range(8):
            assert [e.stream_version for e in await store.read_stream(f"s{k}")] == list(range(1, 9))
        everything = await store.read_all(limit=1000)
        assert len(everything) == 64
        assert [e.global_position for e in everything] == sorted({e.global_position for e in everything})

    async def test_expected_version_conflicts(self, store: EventStore) -> None:
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", [ev()], STREAM_EXISTS)
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", [ev()], 1)
        await store.append("s", [ev()], NO_STREAM)
        with pytest.raises(WrongExpectedVersion) as caught:
            await store.append("s", [ev()], NO_STREAM)
        assert caught.value.actual == 1
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", [ev()], 0)
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", [ev()], 2)
        assert (await store.append("s", [ev()], 1)).version == 2
        assert (await store.append("s", [ev()], STREAM_EXISTS)).version == 3
        assert (await store.append("s", [ev()], ANY)).version == 4
        assert len(await store.read_stream("s")) == 4

    async def test_failing_decide_writes_nothing(self, store: EventStore) -> None:
        await store.append("s", [ev()])
        error = Boom("no")
        seen: list[StreamInfo | None] = []

        async def decide(ctx: StreamContext) -> Sequence[NewEvent]:
            seen.append(ctx.stream)
            raise error

        with pytest.raises(Boom) as caught:
            await store.append_with("s", decide)
        assert caught.value is error
        assert seen == [StreamInfo("s", "", 1)]
        with pytest.raises(Boom):
            await store.append_with("new", decide)
        assert await store.stream_info("new") is None
        assert len(await store.read_all()) == 1

    async def test_decide_sees_stream_and_empty_result_writes_nothing(self, store: EventStore) -> None:
        async def nothing(ctx: StreamContext) -> Sequence[NewEvent]:
            assert ctx.stream is None
            return []

        result = await store.append_with("s", nothing)
        assert result.events == () and result.version == 0
        assert await store.stream_info("s") is None
        await store.append("s", batch(2))

        async def next_version(ctx: StreamContext) -> Sequence[NewEvent]:
            assert ctx.stream is not None
            return [ev(n=ctx.stream.version + 1)]

        assert (await store.append_with("s", next_version, 2)).events[0].data["n"] == 3

    async def test_append_too_large_writes_nothing(self, store: EventStore) -> None:
        too_many = [NewEvent("E", {}) for _ in range(MAX_EVENTS_PER_APPEND + 1)]
        with pytest.raises(AppendTooLarge):
            await store.append("s", too_many)
        assert await store.stream_info("s") is None

    # -- idempotency -------------------------------------------------------------------------------

    async def test_idempotent_retry_returns_original(self, store: EventStore) -> None:
        events = batch(2)
        first = await store.append("s", events, NO_STREAM)
        await store.append("s", [ev(n=9)])
        head = await store.head_position()
        for expected in (ANY, NO_STREAM, 0, STREAM_EXISTS):
            again = await store.append("s", events, expected)
            assert again.replayed
            assert again.version == first.version == 2
            assert again.positions == first.positions
            assert [e.event_id for e in again.events] == [e.event_id for e in events]
        assert await store.head_position() == head
        assert len(await store.read_stream("s")) == 3

    async def test_reused_event_id_with_other_content_is_a_duplicate(self, store: EventStore) -> None:
        original = ev(n=1)
        await store.append("s", [original])
        changed = NewEvent(original.type, {"n": 2}, original.metadata, original.event_id)
        with pytest.raises(DuplicateEvent):
            await store.append("s", [changed])
        with pytest.raises(DuplicateEvent):
            await store.append("other", [original])
        with pytest.raises(DuplicateEvent):
            await store.append("s", [original, ev(n=3)])
        upgraded = NewEvent(
            original.type, original.data, original.metadata, original.event_id, schema_version=2
        )
        with pytest.raises(DuplicateEvent):
            await store.append("s", [upgraded])
        assert len(await store.read_all()) == 1
        assert await store.stream_info("other") is None

    # -- reads ---------------------------------------------------------------------------------

    async def test_read_stream_ranges(self, store: EventStore) -> None:
        await store.append("s", batch(6))
        await store.append("t", batch(2))

        def versions(events: list[RecordedEvent]) -> list[int]:
            return [e.stream_version for e in events]

        assert versions(await store.read_stream("s", after_version=2)) == [3, 4, 5, 6]
        assert versions(await store.read_stream("s", to_version=3)) == [1, 2, 3]
        assert versions(await store.read_stream("s", after_version=1, to_version=4, limit=2)) == [2, 3]
        assert versions(await store.read_stream("s", after_version=6)) == []

    async def test_read_all_order_after_and_limit(self, store: EventStore) -> None:
        assert await store.head_position() == 0
        for i in range(5):
            await store.append(f"s{i % 2}", batch(2, start=2 * i))
        everything = await store.read_all()
        assert [e.data["n"] for e in everything] == list(range(10))
        positions = [e.global_position for e in everything]
        assert positions == sorted(set(positions))
        assert await store.head_position() == positions[-1]
        assert await store.read_all(after=positions[3], limit=4) == everything[4:8]
        assert await store.read_all(after=positions[-1]) == []
        ids = [everything[7].event_id, everything[2].event_id, uuid.uuid4()]
        assert await store.get_events(ids) == [everything[2], everything[7]]

    async def test_upcasters_apply_on_read(self, make_store: StoreFactory) -> None:
        upcasters = UpcasterRegistry()
        upcasters.add("Renamed", 1, lambda d: {"name": d["old"]})
        upcasters.add("Renamed", 2, lambda d: {**d, "v3": True})
        store = await make_store(upcasters=upcasters)
        stored = (await store.append("s", [NewEvent("Renamed", {"old": "x"})])).events[0]
        assert (stored.schema_version, stored.data) == (3, {"name": "x", "v3": True})
        for read in (
            await store.read_stream("s"),
            await store.read_all(),
            await store.get_events([stored.event_id]),
        ):
            assert [(e.schema_version, e.data) for e in read] == [(3, {"name": "x", "v3": True})]
        assert (await store.verify()).ok

    # -- tamper evidence ---------------------------------------------------------------------------

    async def test_verify_reports_progress_up_to_every_event(self, store: EventStore) -> None:
        for k in range(3):
            await store.append(f"s{k}", batch(900))  # more than one of the SQL walk's batches
        heard: list[int] = []
        result = await store.verify(progress=heard.append)
        assert result.ok and result.events_checked == 2700
        assert heard and heard == sorted(heard) and heard[-1] == 2700
        heard.clear()
        assert (await store.verify("s1", progress=heard.append)).events_checked == 900
        assert heard[-1] == 900

    async def test_verify_detects_edited_content(self, store: EventStore) -> None:
        await store.append("a", batch(3))
        await store.append("b", batch(4))
        assert (await store.verify()).events_checked == 7
        await self.tamper(store, "b", 2, data={"n": 666})
        result = await store.verify("b")
        assert not result.ok and result.first_broken is not None
        assert (result.first_broken.stream_id, result.first_broken.version) == ("b", 2)
        assert result.first_broken.reason == "hash mismatch"
        assert result.events_checked == 2
        assert result.first_broken.position == (await store.read_stream("b"))[1].global_position
        assert (await store.verify("a")).ok
        everything = await store.verify()
        assert not everything.ok and everything.events_checked == 7
        assert everything.first_broken == result.first_broken

    async def test_verify_detects_rewritten_hash_and_type(self, store: EventStore) -> None:
        events = (await store.append("s", batch(3))).events
        await self.tamper(store, "s", 1, hash="f" * 64)
        result = await store.verify("s")
        assert result.first_broken is not None
        assert (result.first_broken.version, result.first_broken.reason) == (1, "hash mismatch")
        assert result.first_broken.stored_hash == "f" * 64
        assert result.first_broken.expected_hash == events[0].hash
        await self.tamper(store, "s", 1, hash=events[0].hash, type="Other")
        assert (await store.verify("s")).first_broken is not None

    async def test_verify_detects_a_recomputed_link(self, store: EventStore) -> None:
        await store.append("s", batch(3))
        await self.tamper(store, "s", 2, prev_hash="a" * 64)
        result = await store.verify("s")
        assert result.first_broken is not None
        assert (result.first_broken.version, result.first_broken.reason) == (2, "prev_hash mismatch")

    async def test_verify_detects_missing_events(self, store: EventStore) -> None:
        await store.append("s", batch(4))
        await self.delete(store, "s", 2)
        result = await store.verify("s")
        assert result.first_broken is not None
        assert (result.first_broken.version, result.first_broken.reason) == (2, "missing event")
        assert result.first_broken.position is None
        assert result.events_checked == 1
        await self.delete(store, "s", 4)
        await store.append("t", batch(1))
        tail = await store.verify()
        assert tail.first_broken is not None and tail.first_broken.version == 2

    async def test_verify_detects_a_deleted_tail(self, store: EventStore) -> None:
        await store.append("s", batch(3))
        await self.delete(store, "s", 3)
        result = await store.verify("s")
        assert result.first_broken is not None
        assert (result.first_broken.version, result.first_broken.reason) == (3, "missing event")

    # -- inline projections -------------------------------------------------------------------

    async def test_inline_projection_runs_in_the_transaction(self, make_store: StoreFactory) -> None:
        projection = Recorder(self.events_in_tx)
        store = await make_store(inline_projections=[projection])
        result = await store.append("s", batch(2))
        [(tx, events, seen)] = projection.calls
        assert events == list(result.events)
        assert seen in (None, 2)
        assert (tx is None) == (seen is None)

    async def test_inline_projection_failure_rolls_back(self, make_store: StoreFactory) -> None:
        projection = Recorder(self.events_in_tx, fail=True)
        store = await make_store(inline_projections=[projection])
        with pytest.raises(Boom):
            await store.append("s", batch(2))
        assert await store.stream_info("s") is None
        assert await store.read_all() == []
        projection.fail = False
        assert (await store.append("s", batch(1))).version == 1

    # -- subscribe ---------------------------------------------------------------------------------

    async def test_subscribe_history_then_live(self, store: EventStore) -> None:
        history = (await store.append("a", batch(3))).events
        events = subscription(store)
        try:
            assert await take(events, 3) == list(history)
            live = (await store.append("b", batch(2))).events
            assert await take(events, 2) == list(live)
        finally:
            await events.aclose()
        resumed = subscription(store, after=history[-1].global_position)
        try:
            assert await take(resumed, 2) == list(live)
        finally:
            await resumed.aclose()

    async def test_subscribe_hand_over_has_no_gap_or_duplicate(self, store: EventStore) -> None:
        await store.append("s", batch(5))

        async def write() -> list[RecordedEvent]:
            written: list[RecordedEvent] = []
            for i in range(20):
                written += (await store.append(f"w{i % 3}", [ev(n=i)])).events
            return written

        events = subscription(store)
        try:
            writer = asyncio.create_task(write())
            received = await take(events, 25)
            written = await writer
        finally:
            await events.aclose()
        assert [e.event_id for e in received[5:]] == [e.event_id for e in written]
        positions = [e.global_position for e in received]
        assert positions == sorted(set(positions))

    # -- partitions --------------------------------------------------------------------------------

    async def test_partition_is_stored_and_enforced(self, store: EventStore) -> None:
        await store.append("s", [ev()], partition="alice")
        second = await store.append("s", [ev()])
        assert second.events[0].partition == "alice"
        assert (await store.append("s", [ev()], partition="alice")).version == 3
        with pytest.raises(PartitionMismatch):
            await store.append("s", [ev()], partition="bob")
        assert (await store.append("t", [ev()])).events[0].partition == ""
        assert {e.partition for e in await store.read_stream("s")} == {"alice"}
