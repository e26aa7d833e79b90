"""Events stored in an old shape (written straight into the table, hash chain intact) replay, rebuild
and verify once an upcaster for (type, schema version) is registered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from chatledger.domain import ConversationNotFound
from chatledger.eventstore import GENESIS_HASH
from chatledger.eventstore.hashing import chain_hash, envelope_for_hash
from chatledger.eventstore.schema import events, streams
from chatledger.projections.rebuild import rebuild
from chatledger.service import ChatLedger

from .support import assert_matches_fold


def started_v0(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """v0 called the owner `owner` and had no metadata."""
    return {"conversation_id": data["conversation_id"], "user_id": data["owner"], "title": data.get("title")}


def message_v0(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """v0 had `id` and `text` and knew only user and assistant messages."""
    return {"message_id": data["id"], "role": data["role"], "content": data["text"]}


async def _insert_old(
    ledger: ChatLedger, stream_id: str, partition: str, rows: list[tuple[str, dict[str, Any]]]
) -> None:
    """Write schema-version-0 events as a store of that era would have: positions, hash chain, stream row."""
    when = datetime(2019, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    prev = GENESIS_HASH
    async with ledger.engine.begin() as conn:
        pg = conn.dialect.name == "postgresql"
        if pg:
            xid = (await conn.execute(sa.text("SELECT pg_current_xact_id()::text::bigint"))).scalar_one()
            first = xid * 65536
        else:
            xid = None
            first = (
                await conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.global_position), 0)))
            ).scalar_one() + 1
        for i, (type_, data) in enumerate(rows):
            envelope = envelope_for_hash(
                event_id=(event_id := uuid.uuid4()),
                stream_id=stream_id,
                stream_version=i + 1,
                global_position=first + i,
                type=type_,
                schema_version=0,
                data=data,
                metadata={"actor": partition},
                recorded_at=when,
                prev_hash=prev,
            )
            digest = chain_hash(prev, envelope)
            await conn.execute(
                events.insert().values(
                    global_position=first + i,
                    event_id=event_id,
                    stream_id=stream_id,
                    stream_version=i + 1,
                    partition=partition,
                    type=type_,
                    schema_version=0,
                    data=data,
                    metadata={"actor": partition},
                    recorded_at=when,
                    prev_hash=prev,
                    hash=digest,
                    tx_id=xid,
                )
            )
            prev = digest
        await conn.execute(
            streams.insert().values(
                stream_id=stream_id, partition=partition, version=len(rows), created_at=when, updated_at=when
            )
        )


@pytest.fixture
async def old_conversation(ledger: ChatLedger, user: str) -> str:
    cid = str(uuid.uuid4())
    await _insert_old(
        ledger,
        cid,
        user,
        [
            ("ConversationStarted", {"conversation_id": cid, "owner": user}),
            ("MessageAdded", {"id": str(uuid.uuid4()), "role": "user", "text": "written in 2019"}),
            ("MessageAdded", {"id": str(uuid.uuid4()), "role": "assistant", "text": "long ago"}),
        ],
    )
    ledger.store.upcasters.add("ConversationStarted", 0, started_v0)
    ledger.store.upcasters.add("MessageAdded", 0, message_v0)
    return cid


async def test_old_events_replay_through_the_facade(
    ledger: ChatLedger, user: str, old_conversation: str
) -> None:
    cid = old_conversation
    view = await ledger.get_conversation(cid, user_id=user, at_version=3)
    assert (view.title, view.message_count, view.version) == ("written in 2019", 2, 3)
    page = await ledger.get_messages(cid, user_id=user, at_version=3)
    assert [(m.role, m.content) for m in page.data] == [
        ("user", "written in 2019"),
        ("assistant", "long ago"),
    ]
    raw = await ledger.get_events(cid, user_id=user)
    assert [e.schema_version for e in raw.data] == [1, 1, 1]  # read upcast


async def test_old_events_rebuild_into_the_read_models_and_verify(
    ledger: ChatLedger, user: str, old_conversation: str
) -> None:
    cid = old_conversation
    with pytest.raises(ConversationNotFound):  # never projected inline: only a rebuild brings it in
        await ledger.get_conversation(cid, user_id=user)
    await rebuild(ledger.engine, ledger.store)
    assert await ledger.get_conversation(cid, user_id=user) == await ledger.get_conversation(
        cid, user_id=user, at_version=3
    )
    await assert_matches_fold(ledger, user, cid)

    verified = await ledger.verify(cid, user_id=user)  # the hash covers the payload as stored
    assert verified.ok and verified.events_checked == 3

    added = await ledger.add_messages(cid, user_id=user, messages=[{"role": "user", "content": "and today"}])
    assert added.version == 4 and added.data[0].seq == 3
    await assert_matches_fold(ledger, user, cid)
    assert (await ledger.verify(cid, user_id=user)).ok


def test_upcasters_named_in_the_settings_serve_the_cli(
    sqlite_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deployment registers its upcasters by name (CHATLEDGER_UPCASTERS=module:function), so the CLI
    # and the server read an old log too, not only library code that registers them itself.
    (tmp_path / "old_shapes.py").write_text(
        "from tests_upcasters_support import started_v0, message_v0\n"
        "def register(registry):\n"
        "    registry.add('ConversationStarted', 0, started_v0)\n"
        "    registry.add('MessageAdded', 0, message_v0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys
    import types

    support = types.ModuleType("tests_upcasters_support")
    support.started_v0 = started_v0  # type: ignore[attr-defined]
    support.message_v0 = message_v0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_upcasters_support", support)

    from typer.testing import CliRunner

    from chatledger.cli import app
    from chatledger.settings import Settings

    cid = str(uuid.uuid4())

    async def seed() -> None:
        async with ChatLedger.open(sqlite_url) as plain:
            await _insert_old(
                plain,
                cid,
                "alice",
                [
                    ("ConversationStarted", {"conversation_id": cid, "owner": "alice"}),
                    ("MessageAdded", {"id": str(uuid.uuid4()), "role": "user", "text": "written in 2019"}),
                ],
            )

    async def read() -> Any:
        settings = Settings(database_url=sqlite_url, upcasters="old_shapes:register")
        async with ChatLedger.open(settings=settings) as ledger:
            return await ledger.get_conversation(cid, user_id="alice")

    asyncio.run(seed())
    env = {"CHATLEDGER_DATABASE_URL": sqlite_url, "CHATLEDGER_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    assert runner.invoke(app, ["rebuild"], env=env).exit_code == 1  # without them the old shape fails
    env["CHATLEDGER_UPCASTERS"] = "old_shapes:register"
    result = runner.invoke(app, ["rebuild"], env=env)
    assert result.exit_code == 0, result.output
    view = asyncio.run(read())
    assert (view.title, view.message_count) == ("written in 2019", 1)
    with pytest.raises(ValueError, match="names no importable function"):
        ChatLedger.open(settings=Settings(database_url=sqlite_url, upcasters="no_such_module:register"))
