"""/v1/conversations/{id}/messages and /context: append, page, remove, clear, context window."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from chatledger.projections.views import MessagePage

from ..deps import CurrentUser, IdempotencyKey, IfMatch, LedgerDep
from ..idempotent import respond
from ..openapi import problems, with_etag
from ..schemas import AppendedPublic, ContextPublic, MessagePublic, MessagesIn, MessagesPublic, json_response

router = APIRouter(prefix="/v1/conversations/{conversation_id}", tags=["messages"])


@router.post(
    "/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=AppendedPublic,
    responses={
        201: with_etag("The appended messages and the new version."),
        **problems(400, 404, 409, 412, 413),
    },
)
async def add_messages(
    conversation_id: str,
    body: MessagesIn,
    request: Request,
    ledger: LedgerDep,
    user: CurrentUser,
    expected_version: IfMatch,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Append 1 to 100 messages atomically (all or none)."""
    messages = [m.model_dump(exclude_unset=True) for m in body.messages]

    async def produce() -> tuple[int, object]:
        added = await ledger.add_messages(
            conversation_id,
            user_id=user.user_id,
            messages=messages,
            expected_version=expected_version,
            idempotency_key=idempotency_key,
        )
        public = AppendedPublic(data=[MessagePublic.of(m) for m in added.data], version=added.version)
        return 201, public.model_dump(mode="json")

    return await respond(request, ledger, user, idempotency_key, produce)


@router.get("/messages", response_model=MessagesPublic, responses=problems(404))
async def list_messages(
    conversation_id: str,
    ledger: LedgerDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    before: Annotated[int | None, Query(ge=0, description="Messages with seq < before.")] = None,
    after: Annotated[int | None, Query(ge=0, description="Messages with seq > after.")] = None,
    order: Literal["asc", "desc"] = "asc",
    at_version: Annotated[int | None, Query(ge=1, description="Replay the history as it stood then.")] = None,
) -> Response:
    """An ordered page of the history (DESIGN section 9, "Message pages"); `at_version=n` pages the
    history as it stood after the conversation's n-th event, folded from the log."""
    page = await ledger.get_messages(
        conversation_id,
        user_id=user.user_id,
        limit=limit,
        before=before,
        after=after,
        order=order,
        at_version=at_version,
        admin=user.admin,
    )
    public = MessagesPublic(
        data=[MessagePublic.of(m) for m in page.data],
        has_more=page.has_more,
        next_cursor=_next_cursor(page, ascending=after is not None or (before is None and order == "asc")),
        order=page.order,
        version=page.version,
    )
    return json_response(public)


def _next_cursor(page: MessagePage, *, ascending: bool) -> str | None:
    if not page.has_more or not page.data:
        return None
    seqs = [m.seq for m in page.data]
    return str(max(seqs) if ascending else min(seqs))


@router.delete(
    "/messages",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404, 409, 412),
)
async def clear_messages(
    conversation_id: str, ledger: LedgerDep, user: CurrentUser, expected_version: IfMatch
) -> Response:
    """Clear the whole history in one atomic append; the conversation stays."""
    version = await ledger.clear_messages(
        conversation_id, user_id=user.user_id, expected_version=expected_version
    )
    return Response(status_code=204, headers={"ETag": f'"{version}"'})


@router.delete(
    "/messages/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404, 409, 412),
)
async def remove_message(
    conversation_id: str, message_id: str, ledger: LedgerDep, user: CurrentUser, expected_version: IfMatch
) -> Response:
    """Remove one message from the history (the log keeps it). An assistant message whose tool calls
    still have answers present is 422: remove the answers first."""
    version = await ledger.remove_message(
        conversation_id, message_id, user_id=user.user_id, expected_version=expected_version
    )
    return Response(status_code=204, headers={"ETag": f'"{version}"'})


@router.get("/context", response_model=ContextPublic, responses=problems(404))
async def get_context(
    conversation_id: str,
    ledger: LedgerDep,
    user: CurrentUser,
    max_messages: Annotated[int | None, Query(ge=1)] = None,
    max_tokens: Annotated[int | None, Query(ge=1)] = None,
    format: Literal["chat", "raw"] = "chat",
) -> Response:
    """The most recent messages that fit the limits, never splitting a tool-call group; leading
    system messages are pinned."""
    window = await ledger.get_context(
        conversation_id, user_id=user.user_id, max_messages=max_messages, max_tokens=max_tokens, format=format
    )
    data = window.data if format == "chat" else [{**m, "message_id": m["id"]} for m in window.data]
    public = ContextPublic(
        data=data,
        version=window.version,
        token_estimate=window.token_estimate,
        pinned=window.pinned,
        format=format,
    )
    return json_response(public)
