"""Tamper evidence: change one stored byte of one event (or delete its row) directly in the database,
and `verify` names exactly that event while untouched conversations still verify."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import sqlalchemy as sa

from chatledger.eventstore import BrokenLink, RecordedEvent
from chatledger.eventstore.schema import events
from chatledger.service import ChatLedger

Tamper = Literal["content", "type", "metadata", "prev_hash", "delete", "delete_last"]


async def _conversation(ledger: ChatLedger, user: str) -> tuple[str, list[RecordedEvent]]:
    conv = await ledger.start_conversation(user_id=user, title="audited")
    for text in ("hello", "world", "again"):
        await ledger.add_messages(conv.id, user_id=user, messages=[{"role": "user", "content": text}])
    return conv.id, await ledger.store.read_stream(conv.id)


def _replace(column: sa.ColumnElement[str], old: str, new: str, dialect: str) -> sa.ColumnElement[str]:
    """SQL that replaces text inside the stored JSON itself (one byte), as an attacker with database
    access would, without going through the application's serializer."""
    if dialect == "postgresql":
        return sa.cast(sa.func.replace(sa.cast(column, sa.Text), old, new), sa.JSON)
    return sa.func.replace(column, old, new)


async def _tamper(ledger: ChatLedger, target: RecordedEvent, how: Tamper, user: str) -> None:
    where = events.c.global_position == target.global_position
    dialect = ledger.engine.dialect.name
    changes: dict[str, dict[str, Any]] = {
        "content": {"data": _replace(events.c.data, '"world"', '"worle"', dialect)},
        "type": {"type": "MessageAddee"},
        "metadata": {"metadata": _replace(events.c.metadata, user, user[:-1] + "!", dialect)},
        "prev_hash": {"prev_hash": target.prev_hash[:-1] + ("0" if target.prev_hash[-1] != "0" else "1")},
    }
    async with ledger.engine.begin() as conn:
        if how in ("delete", "delete_last"):
            result = await conn.execute(events.delete().where(where))
        else:
            result = await conn.execute(events.update().where(where).values(**changes[how]))
        assert result.rowcount == 1


@pytest.mark.parametrize("how", ["content", "type", "metadata", "prev_hash", "delete", "delete_last"])
async def test_verify_names_exactly_the_tampered_event(ledger: ChatLedger, user: str, how: Tamper) -> None:
    untouched, before = await _conversation(ledger, user)
    cid, stored = await _conversation(ledger, user)
    assert (await ledger.verify(cid, admin=True)).ok
    target = stored[-1] if how == "delete_last" else stored[2]  # version 4, or version 3 ("world")

    await _tamper(ledger, target, how, user)

    result = await ledger.store.verify(cid)
    assert not result.ok
    if how.startswith("delete"):
        expected = BrokenLink(cid, target.stream_version, None, None, None, "missing event")
        assert result.first_broken == expected
        assert result.events_checked == target.stream_version - 1
    else:
        broken = result.first_broken
        assert broken is not None
        assert (broken.stream_id, broken.version, broken.position) == (
            cid,
            target.stream_version,
            target.global_position,
        )
        if how == "prev_hash":  # the link itself: the previous event's hash vs the stored prev_hash
            assert broken.expected_hash == target.prev_hash != broken.stored_hash
        else:  # the recomputed hash vs the hash stored when the event was appended
            assert broken.stored_hash == target.hash != broken.expected_hash
        assert broken.reason == ("prev_hash mismatch" if how == "prev_hash" else "hash mismatch")
        assert result.events_checked == target.stream_version
    assert await ledger.verify(cid, admin=True) == result
    whole = await ledger.store.verify()
    assert not whole.ok and whole.first_broken == result.first_broken

    clean = await ledger.verify(untouched, user_id=user)
    assert clean.ok and clean.events_checked == len(before) and clean.first_broken is None


async def test_an_untampered_log_verifies(ledger: ChatLedger, user: str) -> None:
    ids = [(await _conversation(ledger, user))[0] for _ in range(3)]
    await ledger.delete_conversation(ids[0], user_id=user)
    whole = await ledger.store.verify()
    assert whole.ok and whole.events_checked == 3 * 4 + 1
    deleted = await ledger.verify(ids[0], admin=True)  # admins can still audit a deleted conversation
    assert deleted.ok and deleted.events_checked == 5
