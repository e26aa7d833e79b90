"""/v1/conversations: start, list, read (also as it stood at a version), update, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from ..deps import CurrentUser, IdempotencyKey, IfMatch, LedgerDep
from ..idempotent import respond
from ..openapi import problems, with_etag
from ..schemas import (
    ConversationIn,
    ConversationPatch,
    ConversationPublic,
    ConversationsPublic,
    json_response,
)

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


def _etag(conversation: ConversationPublic) -> dict[str, str]:
    return {"ETag": f'"{conversation.version}"'}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ConversationPublic,
    responses={
        201: with_etag("The new conversation."),
        200: with_etag("The caller's existing conversation with this id.", ConversationPublic),
        **problems(400, 409, 413),
    },
)
async def start_conversation(
    body: ConversationIn,
    request: Request,
    ledger: LedgerDep,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Start a conversation (201). With the `id` of one of the caller's conversations, return it (200);
    an id used by anyone else, or by a deleted conversation, is 409."""

    async def produce() -> tuple[int, object]:
        view, created = await ledger.start_or_get(
            user_id=user.user_id,
            title=body.title,
            metadata=body.metadata,
            conversation_id=body.id,
            idempotency_key=idempotency_key,
        )
        return (201 if created else 200), ConversationPublic.of(view).model_dump(mode="json")

    return await respond(request, ledger, user, idempotency_key, produce)


@router.get("", response_model=ConversationsPublic, responses=problems())
async def list_conversations(
    ledger: LedgerDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> Response:
    """The caller's conversations, most recent activity first."""
    page = await ledger.list_conversations(user_id=user.user_id, limit=limit, after=after)
    return json_response(ConversationsPublic.of(page))


@router.get(
    "/{conversation_id}",
    response_model=ConversationPublic,
    responses={200: with_etag("The conversation."), **problems(404)},
)
async def get_conversation(
    conversation_id: str,
    response: Response,
    ledger: LedgerDep,
    user: CurrentUser,
    at_version: Annotated[int | None, Query(ge=1, description="Replay it as it stood then.")] = None,
) -> ConversationPublic:
    """One conversation; `at_version=n` replays it from the log as it stood after its n-th event."""
    view = await ledger.get_conversation(
        conversation_id, user_id=user.user_id, at_version=at_version, admin=user.admin
    )
    public = ConversationPublic.of(view)
    response.headers.update(_etag(public))
    return public


@router.patch(
    "/{conversation_id}",
    response_model=ConversationPublic,
    responses={200: with_etag("The updated conversation."), **problems(400, 404, 409, 412, 413)},
)
async def update_conversation(
    conversation_id: str,
    body: ConversationPatch,
    response: Response,
    ledger: LedgerDep,
    user: CurrentUser,
    expected_version: IfMatch,
) -> ConversationPublic:
    """`title` replaces; `metadata` merges (RFC 7396: a key set to null is removed)."""
    view = await ledger.update_conversation(
        conversation_id,
        user_id=user.user_id,
        title=body.title,
        metadata=body.metadata,
        expected_version=expected_version,
    )
    public = ConversationPublic.of(view)
    response.headers.update(_etag(public))
    return public


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404, 409, 412),
)
async def delete_conversation(
    conversation_id: str, ledger: LedgerDep, user: CurrentUser, expected_version: IfMatch
) -> Response:
    """Tombstone the conversation: it disappears from every read model; the log keeps it."""
    await ledger.delete_conversation(conversation_id, user_id=user.user_id, expected_version=expected_version)
    return Response(status_code=204)
