"""For every n, `get_conversation(id, at_version=n)` (and the history at n) equals what the read model
showed right after the n-th event, appending one event at a time."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.domain import DomainError
from chatledger.projections.views import ConversationView, MessageView
from chatledger.service import ChatLedger

Step = tuple[str, Any]
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)


@st.composite
def single_event_steps(draw: st.DrawFn) -> list[Step]:
    out: list[Step] = []
    for i in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["message", "call", "answer", "remove", "update"]))
        if kind == "message":
            role = draw(st.sampled_from(["user", "system", "assistant"]))
            out.append(("add", {"role": role, "content": draw(TEXT), "token_count": draw(st.integers(0, 9))}))
        elif kind == "call":
            call = {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            out.append(("add", {"role": "assistant", "content": None, "tool_calls": [call]}))
        elif kind == "update":
            out.append(
                (
                    "update",
                    (
                        draw(st.none() | TEXT),
                        draw(st.none() | st.dictionaries(st.sampled_from("ab"), TEXT, max_size=2)),
                    ),
                )
            )
        else:
            out.append((kind, draw(st.integers(0, 20))))
    return out


async def _step(ledger: ChatLedger, user: str, cid: str, step: Step, page: list[MessageView]) -> None:
    kind, arg = step
    if kind == "add":
        await ledger.add_messages(cid, user_id=user, messages=[arg])
    elif kind == "answer":
        calls = [c.id for m in page for c in m.tool_calls or ()]
        if calls:
            answer = {"role": "tool", "content": "ok", "tool_call_id": calls[arg % len(calls)]}
            await ledger.add_messages(cid, user_id=user, messages=[answer])
    elif kind == "remove" and page:
        await ledger.remove_message(cid, page[arg % len(page)].id, user_id=user)
    elif kind == "update" and (arg[0] is not None or arg[1] is not None):
        await ledger.update_conversation(cid, user_id=user, title=arg[0], metadata=arg[1])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=single_event_steps())
async def test_replay_at_every_version_equals_the_read_model_then(
    ledger: ChatLedger, user: str, script: list[Step]
) -> None:
    conv = await ledger.start_conversation(user_id=user)
    observed: dict[int, tuple[ConversationView, list[MessageView]]] = {}

    async def observe() -> list[MessageView]:
        view = await ledger.get_conversation(conv.id, user_id=user)
        page = (await ledger.get_messages(conv.id, user_id=user, limit=100)).data
        observed[view.version] = (view, page)
        return page

    page = await observe()
    for step in script:
        with contextlib.suppress(DomainError):
            await _step(ledger, user, conv.id, step, page)
        page = await observe()

    head = max(observed)
    assert sorted(observed) == list(range(1, head + 1))  # one event per step: every version was seen
    for n, (view, messages) in observed.items():
        assert await ledger.get_conversation(conv.id, user_id=user, at_version=n) == view
        replayed = await ledger.get_messages(conv.id, user_id=user, limit=100, at_version=n)
        assert replayed.data == messages and replayed.version == n
