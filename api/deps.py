"""`Annotated` dependencies shared by the routes: settings, the ledger, the caller, request headers."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatledger.auth import InvalidToken, Principal, TokenVerifier
from chatledger.eventstore import StoreUnavailable
from chatledger.service import ChatLedger
from chatledger.settings import Settings

from .middleware import request_user_var

_bearer = HTTPBearer(auto_error=False, description="A JWT whose `sub` is the user id.")


# Dependencies are `async def` even where they do not await: FastAPI runs a plain `def` dependency in
# its thread pool, a thread hop per dependency per request.
async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_ledger(request: Request) -> ChatLedger:
    ledger: ChatLedger = request.app.state.ledger
    if not ledger.started:
        raise StoreUnavailable("the database has not been reachable since the service started")
    return ledger


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise InvalidToken("")
    verifier: TokenVerifier = request.app.state.verifier
    principal = verifier.verify(credentials.credentials)
    holder = request_user_var.get()
    if holder is not None:
        holder["user_id"] = principal.user_id
    return principal


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
LedgerDep = Annotated[ChatLedger, Depends(get_ledger)]
CurrentUser = Annotated[Principal, Depends(get_current_user)]

_VERSION = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: "7"` or `If-Match: 7` -> 7; absent -> None; anything else can never match."""
    if value is None or value.strip() == "*":
        return None
    found = _VERSION.match(value)
    if found is None:
        return -1  # a version no conversation has: the request fails with 412
    return int(found.group(1))


async def get_if_match(
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='The conversation version the change is based on: `"7"` or `7`. Stale: 412.',
        ),
    ] = None,
) -> int | None:
    return parse_if_match(if_match)


IfMatch = Annotated[int | None, Depends(get_if_match)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retries with the same key and body return the original response (per user, 24 h).",
    ),
]
