"""The context window read from the tables (a few bounded queries) equals the window the domain computes
over the whole history folded from the log, for any history and any limits."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatledger.domain import context_window, event_from_payload, replay
from chatledger.projections.queries import HEAD, message_view
from chatledger.service import ChatLedger

from ..projections.support import run_step, steps


@st.composite
def histories(draw: st.DrawFn) -> list[Any]:
    # Pinned runs on both sides of the first statement's HEAD rows, a filler long enough to outrun its
    # tail rows (max_messages + 16), then any commands but clears (tool-call groups, answered or not,
    # removals), which would leave too short a history to read in parts.
    pinned = draw(st.integers(0, HEAD + 3))
    prompt = [("add", [{"role": "system", "content": f"rule {i}"}]) for i in range(pinned)]
    filler = [
        {"role": "user" if i % 2 else "assistant", "content": f"m{i}", "token_count": draw(st.integers(1, 9))}
        for i in range(draw(st.sampled_from([0, 5, 20, 40, 90])))
    ]
    rest = [step for step in draw(steps(max_steps=15, deletes=False)) if step[0] != "clear"]
    return prompt + ([("add", filler)] if filler else []) + rest


def _chat(count: int, pinned: int = 0) -> list[Any]:
    system = [{"role": "system", "content": f"rule {i}"} for i in range(pinned)]
    rest = [{"role": "user" if i % 2 else "assistant", "content": f"m{i}"} for i in range(count)]
    return [("add", system + rest)]


# Edges that random drawing rarely hits: the tail rows (max_messages + 16 = 80 here) one short of the
# history, and exactly the history after the pinned run.
@example(script=_chat(90), max_messages=None, max_tokens=None)
@example(script=_chat(80, pinned=1), max_messages=None, max_tokens=None)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    script=histories(),
    max_messages=st.none() | st.integers(1, 12),
    max_tokens=st.none() | st.integers(1, 200),
)
async def test_context_window_equals_the_domain_window_over_the_fold(
    ledger: ChatLedger, alice: str, script: list[Any], max_messages: int | None, max_tokens: int | None
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    for step in script:
        await run_step(ledger, alice, conv.id, step)

    events = await ledger.store.read_stream(conv.id)
    state = replay((event_from_payload(e.type, dict(e.data)), e.recorded_at) for e in events)
    assert state is not None
    history = sorted(state.messages.values(), key=lambda m: m.seq)
    expected = context_window(history, max_messages=max_messages, max_tokens=max_tokens)
    leading = next((i for i, m in enumerate(history) if m.role != "system"), len(history))

    got = await ledger.get_context(
        conv.id, user_id=alice, max_messages=max_messages, max_tokens=max_tokens, format="raw"
    )
    assert got.data == [message_view(conv.id, m).model_dump(mode="json") for m in expected]
    assert got.pinned == leading
    assert got.version == state.version
