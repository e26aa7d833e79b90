"""Scenario 6: `rebuild` events/s over a seeded log against a raw scan + COPY pipeline, same run.

The log is seeded by COPY (`seed_log`): whole conversations (one `ConversationStarted`, then
`MessageAdded` events), hash-chained with chatledger's own `record_events`, positioned as the
PostgreSQL store does (`tx_id * 65536 + i`) with the conversations of one transaction interleaved, so
a replay batch spans many streams as a real log does. The streams rows and the read rows that inline
projection would have written are seeded too.

The raw pipeline is the physical floor of a rebuild: one ordered scan of `events` through a
server-side asyncpg cursor, JSON decoding of each payload, the equivalent message and conversation
rows built as tuples and COPY'd into scratch tables (primary keys in place, the secondary unique
index built after the load, as `rebuild` does for its shadow tables).
"""

from __future__ import annotations

import json
import resource
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from chatledger.domain import derive_title
from chatledger.domain.events import ConversationStarted, MessageAdded
from chatledger.eventstore.model import GENESIS_HASH, NewEvent, RecordedEvent
from chatledger.eventstore.recording import record_events
from chatledger.projections.rebuild import rebuild

from .append import ledger
from .env import BenchEnv
from .seed import CONVERSATION_COLUMNS, EVENT_COLUMNS, MESSAGE_COLUMNS, _event_row
from .stats import Report

USER_PREFIX = "log-user"
PER_TX = 50_000
"""Events per seeding transaction (positions keep 16 bits for the index within a transaction)."""
USER_TEXT = "Please explain the next step of the plan in detail, with the reasoning behind it. " * 2
ASSISTANT_TEXT = "Here is the next step: first check the inputs, then run the job, then compare. " * 2

CONVERSATION_ROW = [*CONVERSATION_COLUMNS, "last_message_at"]


@dataclass
class SeededLog:
    """What `seed_log` wrote so far: every conversation id with its user, and the event count."""

    conversations: list[tuple[str, str]]
    events: int = 0


def _payloads(count: int) -> list[tuple[MessageAdded, dict[str, Any]]]:
    """`count` messages alternating user/assistant, validated once per role and copied per message."""
    templates = {
        "user": MessageAdded(message_id="x", role="user", content=USER_TEXT, token_count=40),
        "assistant": MessageAdded(message_id="x", role="assistant", content=ASSISTANT_TEXT, token_count=40),
    }
    out = []
    for seq in range(1, count + 1):
        m = templates["user" if seq % 2 else "assistant"].model_copy(update={"message_id": str(uuid.uuid4())})
        out.append((m, m.payload()))
    return out


async def seed_log(
    conn: asyncpg.Connection, log: SeededLog, events: int, *, per_conversation: int = 1000, users: int = 100
) -> None:
    """Append about `events` events (rounded up to whole conversations of `per_conversation`) to `log`."""
    per_conversation = max(2, min(per_conversation, PER_TX))
    target = log.events + events
    while log.events < target:
        convs = max(1, min(PER_TX // per_conversation, -(-(target - log.events) // per_conversation)))
        await _seed_tx(conn, log, convs, per_conversation, users)


async def _seed_tx(conn: asyncpg.Connection, log: SeededLog, convs: int, length: int, users: int) -> None:
    async with conn.transaction():
        xid = int(await conn.fetchval("SELECT pg_current_xact_id()::text::bigint"))
        base = datetime.now(UTC) - timedelta(days=1)
        events: list[tuple[Any, ...]] = []
        messages: list[tuple[Any, ...]] = []
        streams: list[tuple[Any, ...]] = []
        conversations: list[tuple[Any, ...]] = []
        for k in range(convs):
            cid = str(uuid.uuid4())
            user = f"{USER_PREFIX}-{(len(log.conversations) + k) % users}"
            started = ConversationStarted(conversation_id=cid, user_id=user).payload()
            added = _payloads(length - 1)
            new = [NewEvent("ConversationStarted", started, {"actor": user})]
            new += [NewEvent("MessageAdded", data, {"actor": user}) for _, data in added]
            # Interleaved: event j of conversation k sits at index j * convs + k of the transaction.
            recorded: list[RecordedEvent] = record_events(
                new,
                stream_id=cid,
                partition=user,
                version=0,
                prev_hash=GENESIS_HASH,
                positions=[xid * 65536 + j * convs + k for j in range(length)],
                recorded_at=base + timedelta(seconds=len(log.conversations) + k),
            )
            events += [_event_row(e, xid) for e in recorded]
            at = recorded[-1].recorded_at
            messages += [
                (cid, seq, m.message_id, user, m.role, m.content, "{}", at, m.token_count)
                for seq, (m, _) in enumerate(added, start=1)
            ]
            streams.append((cid, user, length, at, at))
            conversations.append(
                (cid, user, derive_title(USER_TEXT), False, "{}", length - 1, length - 1, length, at, at, at)
            )
            log.conversations.append((cid, user))
        events.sort(key=lambda row: row[0])
        await conn.copy_records_to_table(
            "streams",
            records=streams,
            columns=["stream_id", "partition", "version", "created_at", "updated_at"],
        )
        await conn.copy_records_to_table("events", records=events, columns=EVENT_COLUMNS)
        await conn.copy_records_to_table("conversations", records=conversations, columns=CONVERSATION_ROW)
        await conn.copy_records_to_table("messages", records=messages, columns=MESSAGE_COLUMNS)
        log.events += len(events)


# -- the raw pipeline ---------------------------------------------------------------------------------

SCAN = """
SELECT global_position, stream_id, stream_version, partition, type, data::text, recorded_at
FROM events ORDER BY global_position
"""
SCRATCH = """
DROP TABLE IF EXISTS raw_rebuild_messages, raw_rebuild_conversations;
CREATE TABLE raw_rebuild_conversations (LIKE conversations INCLUDING DEFAULTS);
ALTER TABLE raw_rebuild_conversations ADD PRIMARY KEY (id);
CREATE TABLE raw_rebuild_messages (LIKE messages INCLUDING DEFAULTS);
ALTER TABLE raw_rebuild_messages ADD PRIMARY KEY (conversation_id, seq);
"""
SCRATCH_INDEXES = """
CREATE UNIQUE INDEX ON raw_rebuild_messages (conversation_id, message_id);
CREATE INDEX ON raw_rebuild_conversations (user_id, updated_at DESC, id DESC);
"""


async def raw_pipeline(dsn: str, *, batch: int = 2000) -> int:
    """Scan the log in order, build the read rows, COPY them into scratch tables; returns events read."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCRATCH)
        seqs: dict[str, int] = {}
        done = 0
        async with conn.transaction():
            messages: list[tuple[Any, ...]] = []
            convs: list[tuple[Any, ...]] = []
            async for row in conn.cursor(SCAN, prefetch=batch):
                done += 1
                data = json.loads(row[5])
                if row[4] == "MessageAdded":
                    seq = seqs[row[1]] = seqs.get(row[1], 0) + 1
                    messages.append(
                        (row[1], seq, data["message_id"], row[3], data["role"], data["content"], "{}",
                         row[6], data.get("token_count"))
                    )  # fmt: skip
                elif row[4] == "ConversationStarted":
                    at = row[6]
                    convs.append((row[1], row[3], None, False, "{}", 0, 0, row[2], at, at, None))
                if len(messages) + len(convs) >= batch:
                    await _flush(conn, messages, convs)
            await _flush(conn, messages, convs)
        await conn.execute(SCRATCH_INDEXES)
        await conn.execute("DROP TABLE raw_rebuild_messages, raw_rebuild_conversations")
        return done
    finally:
        await conn.close()


async def _flush(
    conn: asyncpg.Connection, messages: list[tuple[Any, ...]], convs: list[tuple[Any, ...]]
) -> None:
    if convs:
        await conn.copy_records_to_table("raw_rebuild_conversations", records=convs, columns=CONVERSATION_ROW)
        convs.clear()
    if messages:
        await conn.copy_records_to_table("raw_rebuild_messages", records=messages, columns=MESSAGE_COLUMNS)
        messages.clear()


# -- the scenario -------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux `clear_refs` 5), so `peak_rss_mb`
    measures one phase; False where that is not possible (the figure is then the process's peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS since the last `reset_peak_rss` (`VmHWM`), else the process's (`getrusage`)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def rebuild_scenario(
    env: BenchEnv, report: Report, *, events: int, reps: int, batch: int = 2000
) -> None:
    """Seed `events`, then per repetition: `rebuild` (swapping its tables in), then the raw pipeline."""
    conn = await asyncpg.connect(env.pg_dsn)
    try:
        log = SeededLog([])
        started = time.perf_counter()
        await seed_log(conn, log, events)
        await conn.execute("ANALYZE")
        report.notes.append(
            f"6: seeded {log.events:,} events ({len(log.conversations):,} conversations)"
            f" in {time.perf_counter() - started:.1f} s"
        )
    finally:
        await conn.close()
    scenario = f"6 rebuild @ {log.events:,} events"
    async with ledger(env.pg_url, pool=2) as led:
        cid, user = log.conversations[0]
        verified = await led.verify(cid, user_id=user)
        report.notes.append(f"6: seeded conversation verify ok={verified.ok}")
        for _ in range(reps):
            reset = reset_peak_rss()
            result = await rebuild(led.engine, led.store, batch_size=batch)
            lib_rss = peak_rss_mb()
            report.add(scenario, "chatledger rebuild", "events/s", result.events_per_s)
            report.add(scenario, "chatledger peak RSS", "MB", lib_rss)
            reset_peak_rss()
            start = time.perf_counter()
            done = await raw_pipeline(env.pg_dsn, batch=batch)
            raw_rate = done / (time.perf_counter() - start)
            report.add(scenario, "raw scan+COPY", "events/s", raw_rate)
            report.add(scenario, "raw peak RSS", "MB", peak_rss_mb())
            report.add(scenario, "ratio chatledger/raw", "x", result.events_per_s / raw_rate, ">= 0.5")
            if not reset:
                report.notes.append("6: peak RSS could not be reset per phase: figures are process peaks")
        process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report.notes.append(f"6: process peak RSS (getrusage, seeding included) {process_peak:.0f} MB")
        page = await led.get_messages(cid, user_id=user, limit=1, order="desc")
        report.notes.append(f"6: after rebuild, last seq of a seeded conversation = {page.data[0].seq}")
