"""Helpers: random command scripts run through the facade, and full dumps of the read tables."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from chatledger.domain import DomainError, event_from_payload, replay
from chatledger.projections import LIVE
from chatledger.replaying import view_of_state
from chatledger.service import ChatLedger

TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)
Step = tuple[str, Any]


@st.composite
def steps(draw: st.DrawFn, max_steps: int = 10, deletes: bool = True) -> list[Step]:
    """Commands of every kind, some of which the domain will refuse (those write nothing)."""
    kinds = ["message", "tools", "answer", "remove", "update", "clear"] + (["delete"] if deletes else [])
    out: list[Step] = []
    for i in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(kinds))
        if kind == "message":
            role = draw(st.sampled_from(["user", "system", "assistant"]))
            message: dict[str, Any] = {"role": role, "content": draw(TEXT), "metadata": {"i": i}}
            if draw(st.booleans()):
                message["token_count"] = draw(st.integers(0, 50))
            out.append(("add", [message]))
        elif kind == "tools":
            n = draw(st.integers(1, 3))
            calls = [
                {"id": f"c{i}_{k}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                for k in range(n)
            ]
            answers = [
                {"role": "tool", "content": draw(TEXT), "tool_call_id": c["id"]}
                for c in calls[: draw(st.integers(0, n))]
            ]
            out.append(("add", [{"role": "assistant", "content": None, "tool_calls": calls}, *answers]))
        elif kind in ("answer", "remove"):
            out.append((kind, draw(st.integers(0, 30))))
        elif kind == "update":
            metadata = draw(st.none() | st.dictionaries(st.sampled_from("ab"), st.none() | TEXT, max_size=2))
            out.append(("update", {"title": draw(st.none() | TEXT), "metadata": metadata}))
        else:
            out.append((kind, draw(st.booleans()) if kind == "delete" else None))
    return out


async def run_step(ledger: ChatLedger, user: str, cid: str, step: Step) -> None:
    """Run one step; a refused command (or one on a deleted conversation) writes nothing."""
    kind, arg = step
    try:
        page = await ledger.get_messages(cid, user_id=user, limit=100)
        if kind == "add":
            await ledger.add_messages(cid, user_id=user, messages=arg)
        elif kind == "answer":
            calls = [c.id for m in page.data for c in m.tool_calls or ()]
            if calls:
                answer = {"role": "tool", "content": "late", "tool_call_id": calls[arg % len(calls)]}
                await ledger.add_messages(cid, user_id=user, messages=[answer])
        elif kind == "remove" and page.data:
            await ledger.remove_message(cid, page.data[arg % len(page.data)].id, user_id=user)
        elif kind == "update":
            await ledger.update_conversation(cid, user_id=user, title=arg["title"], metadata=arg["metadata"])
        elif kind == "clear":
            await ledger.clear_messages(cid, user_id=user)
        elif kind == "delete" and arg:
            await ledger.delete_conversation(cid, user_id=user)
    except DomainError:
        pass


async def dump(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read table, in primary-key order, JSON as text (so key order counts)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in LIVE.all():
            rows = await conn.execute(sa.select(table).order_by(*table.primary_key.columns))
            out[table.name] = [
                tuple(
                    json.dumps(v) if isinstance(c.type, sa.JSON) else v
                    for c, v in zip(table.columns, r, strict=True)
                )
                for r in rows
            ]
    return out


async def assert_matches_fold(ledger: ChatLedger, user: str, cid: str) -> None:
    """The read model of `cid` equals the state folded from its events by the domain alone."""
    events = await ledger.store.read_stream(cid)
    state = replay((event_from_payload(e.type, dict(e.data)), e.recorded_at) for e in events)
    assert state is not None
    if state.deleted:
        async with ledger.engine.connect() as conn:
            c = LIVE.conversations
            assert (await conn.execute(sa.select(c.c.id).where(c.c.id == cid))).first() is None
        return
    assert await ledger.get_conversation(cid, user_id=user) == view_of_state(state)
    page = await ledger.get_messages(cid, user_id=user, limit=100)
    folded = sorted(state.messages.values(), key=lambda m: m.seq)
    assert [(m.id, m.seq, m.role, m.content, m.tool_call_id, m.created_at) for m in page.data] == [
        (m.message_id, m.seq, m.role, m.content, m.tool_call_id, m.created_at) for m in folded
    ]
    async with ledger.engine.connect() as conn:
        c = LIVE.conversations
        count = (await conn.execute(sa.select(c.c.tool_call_count).where(c.c.id == cid))).scalar_one()
    assert count == len(state.tool_calls)
