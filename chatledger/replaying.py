"""Views over a state folded from the log (replays at a past version)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from chatledger.domain import ConversationState, Message
from chatledger.projections.views import ConversationView


def view_of_state(state: ConversationState) -> ConversationView:
    assert state.created_at is not None and state.updated_at is not None
    return ConversationView(
        id=state.conversation_id,
        user_id=state.owner,
        title=state.title,
        metadata=dict(state.metadata),
        message_count=state.message_count,
        version=state.version,
        created_at=state.created_at,
        updated_at=state.updated_at,
        last_message_at=state.last_message_at,
        tool_call_count=len(state.tool_calls),
    )


def page_in_memory(
    history: Sequence[Message],
    *,
    limit: int,
    before: int | None,
    after: int | None,
    order: Literal["asc", "desc"],
) -> tuple[list[Message], bool]:
    """The same paging rules as the SQL query (projections/queries.py `message_page`)."""
    chosen = [m for m in history if (after is None or m.seq > after) and (before is None or m.seq < before)]
    ascending = after is not None or (before is None and order == "asc")
    if not ascending:
        chosen.reverse()
    page = chosen[:limit]
    if ascending != (order == "asc"):
        page.reverse()
    return page, len(chosen) > limit
