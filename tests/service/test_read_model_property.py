"""For any command sequence, the inline read models equal the state folded from the log by the domain
alone, and a replay at every version equals what the read model showed right after that event."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.domain import DomainError, event_from_payload, replay
from chatledger.replaying import view_of_state
from chatledger.service import ChatLedger

TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=80)


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for i in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["user", "assistant", "tools", "answer", "remove", "update", "clear"]))
        if kind == "user":
            out.append(("add", [{"role": draw(st.sampled_from(["user", "system"])), "content": draw(TEXT)}]))
        elif kind == "assistant":
            out.append(
                (
                    "add",
                    [{"role": "assistant", "content": draw(TEXT), "token_count": draw(st.integers(0, 50))}],
                )
            )
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
        elif kind == "answer":
            out.append(("answer", draw(st.integers(0, 30))))
        elif kind == "remove":
            out.append(("remove", draw(st.integers(0, 30))))
        elif kind == "update":
            out.append(
                (
                    "update",
                    {
                        "title": draw(st.none() | TEXT),
                        "metadata": draw(
                            st.none() | st.dictionaries(st.sampled_from("abc"), st.none() | TEXT, max_size=3)
                        ),
                    },
                )
            )
        else:
            out.append(("clear", None))
    return out


async def _run(ledger: ChatLedger, user: str, cid: str, step: tuple[str, Any]) -> None:
    kind, arg = step
    page = await ledger.get_messages(cid, user_id=user, limit=100)
    try:
        if kind == "add":
            await ledger.add_messages(cid, user_id=user, messages=arg)
        elif kind == "answer":
            open_calls = [c.id for m in page.data for c in m.tool_calls or ()]
            if open_calls:
                call = open_calls[arg % len(open_calls)]
                await ledger.add_messages(
                    cid, user_id=user, messages=[{"role": "tool", "content": "late", "tool_call_id": call}]
                )
        elif kind == "remove" and page.data:
            await ledger.remove_message(cid, page.data[arg % len(page.data)].id, user_id=user)
        elif kind == "update":
            await ledger.update_conversation(cid, user_id=user, title=arg["title"], metadata=arg["metadata"])
        elif kind == "clear":
            await ledger.clear_messages(cid, user_id=user)
    except DomainError:
        pass  # refused commands write nothing; the comparison below still has to hold


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps())
async def test_inline_read_models_equal_the_domain_fold(
    ledger: ChatLedger, alice: str, script: list[Any]
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    observed = {1: await ledger.get_conversation(conv.id, user_id=alice)}
    for step in script:
        await _run(ledger, alice, conv.id, step)
        now = await ledger.get_conversation(conv.id, user_id=alice)
        observed[now.version] = now

    events = await ledger.store.read_stream(conv.id)
    state = replay((event_from_payload(e.type, dict(e.data)), e.recorded_at) for e in events)
    assert state is not None
    assert view_of_state(state) == await ledger.get_conversation(conv.id, user_id=alice)
    page = await ledger.get_messages(conv.id, user_id=alice, limit=100)
    folded = sorted(state.messages.values(), key=lambda m: m.seq)
    assert [(m.id, m.seq, m.role, m.content, m.tool_call_id) for m in page.data] == [
        (m.message_id, m.seq, m.role, m.content, m.tool_call_id) for m in folded
    ]
    for version, view in observed.items():
        assert await ledger.get_conversation(conv.id, user_id=alice, at_version=version) == view
