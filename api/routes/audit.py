"""The audit trail of one conversation: raw events and the hash-chain check."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import CurrentUser, LedgerDep
from ..openapi import problems
from ..schemas import EventPublic, EventsPublic, VerifyPublic

router = APIRouter(prefix="/v1/conversations/{conversation_id}", tags=["audit"])


@router.get("/events", response_model=EventsPublic, responses=problems(404))
async def list_events(
    conversation_id: str,
    ledger: LedgerDep,
    user: CurrentUser,
    after_version: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventsPublic:
    """Raw events with version, global position, time and hashes (admins: any conversation)."""
    page = await ledger.get_events(
        conversation_id, user_id=user.user_id, after_version=after_version, limit=limit, admin=user.admin
    )
    return EventsPublic(
        data=[EventPublic.of(e) for e in page.data], has_more=page.has_more, version=page.version
    )


@router.get(
    "/verify",
    response_model=VerifyPublic,
    responses=problems(404),
)
async def verify(conversation_id: str, ledger: LedgerDep, user: CurrentUser) -> VerifyPublic:
    """Recompute this conversation's hash chain; `first_broken` names the first bad event."""
    result = await ledger.verify(conversation_id, user_id=user.user_id, admin=user.admin)
    return VerifyPublic.of(result)
