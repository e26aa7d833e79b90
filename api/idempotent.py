"""`Idempotency-Key` on POST routes (DESIGN section 9)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from chatledger.auth import Principal
from chatledger.service import ChatLedger

MAX_ROUTE_CHARS = 512  # the keys table's route column

Produce = Callable[[], Awaitable[tuple[int, Any]]]


async def respond(
    request: Request,
    ledger: ChatLedger,
    user: Principal,
    key: str | None,
    produce: Produce,
) -> JSONResponse:
    """Run `produce` (status, JSON body) once per key; replays and concurrent duplicates get the
    original answer. The ETag header is rebuilt from the body's `version`."""
    route = f"{request.method} {request.url.path}"
    if key is None or len(route) > MAX_ROUTE_CHARS:  # no such path names a conversation: it 404s
        status, body = await produce()
    else:
        parsed = await request.json()
        status, body = await ledger.idempotency.run(user.user_id, key, route, parsed, produce)
    headers = {"ETag": f'"{body["version"]}"'} if isinstance(body, dict) and "version" in body else {}
    return JSONResponse(body, status_code=status, headers=headers)
