"""Server-sent events of one conversation (DESIGN section 9, "SSE")."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from chatledger.eventstore import RecordedEvent
from chatledger.service import ChatLedger, event_view

from ..deps import CurrentUser, LedgerDep
from ..openapi import problems
from ..schemas import EventPublic

router = APIRouter(prefix="/v1/conversations/{conversation_id}", tags=["audit"])

HEARTBEAT_SECONDS = 15.0


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: `id` is the version, `event` the type, `data` the event "
            "envelope (an item of `/events`). A comment line every 15 s keeps the connection alive.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(404),
    },
)
async def stream(
    conversation_id: str,
    ledger: LedgerDep,
    user: CurrentUser,
    after_version: Annotated[int | None, Query(ge=0, description="Replay events after this version.")] = None,
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, description="Resume after this version.")
    ] = None,
) -> StreamingResponse:
    """New events of this conversation, live; resumable with `Last-Event-ID` (or `?after_version=`)."""
    view = await ledger.get_conversation(conversation_id, user_id=user.user_id)  # 404 before streaming
    # Without a resume point the stream starts at the version the client could see now. Reading the
    # stream from that version (rather than from the log head, which may trail on PostgreSQL and is
    # taken later) loses nothing committed in between.
    after = next((v for v in (last_event_id, after_version) if v is not None), view.version)
    body = _sse(ledger, view.id, user.user_id, after)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def _sse(ledger: ChatLedger, cid: str, user_id: str, after: int) -> AsyncIterator[str]:
    queue: asyncio.Queue[RecordedEvent | None] = asyncio.Queue(maxsize=1000)

    async def pump() -> None:
        try:
            async for e in ledger.subscribe_conversation(cid, user_id=user_id, after_version=after):
                await queue.put(e)
        finally:
            await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        yield ": connected\n\n"
        while True:
            try:
                e = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if e is None:
                return
            if e.stream_version <= after:
                continue  # never send a version twice
            after = e.stream_version
            data = json.dumps(EventPublic.of(event_view(e)).model_dump(mode="json"), ensure_ascii=False)
            yield f"id: {e.stream_version}\nevent: {e.type}\ndata: {data}\n\n"
            if e.type == "ConversationDeleted":
                return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
