"""For any command sequence, the inline read models equal the state folded from the log by the domain
alone, and a replay at every version equals what the read model showed right after that event."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from chatledger.domain import event_from_payload, replay
from chatledger.replaying import view_of_state
from chatledger.service import ChatLedger

from ..projections.support import run_step, steps


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps(max_steps=12, deletes=False))
async def test_inline_read_models_equal_the_domain_fold(
    ledger: ChatLedger, alice: str, script: list[Any]
) -> None:
    conv = await ledger.start_conversation(user_id=alice)
    observed = {1: await ledger.get_conversation(conv.id, user_id=alice)}
    for step in script:
        await run_step(ledger, alice, conv.id, step)
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
