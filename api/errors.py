"""Every error the API answers, as RFC 9457 `application/problem+json`, mapped in one place.

Domain and store errors keep their meaning across the edge: missing and foreign conversations share
one 404 body (existence is never revealed), a stale `If-Match` is 412, a database outage is 503 with
`Retry-After` and never a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from chatledger.auth import InvalidToken
from chatledger.domain import (
    ConversationIdUnavailable,
    ConversationNotFound,
    InvalidMessage,
    MessageNotFound,
    ToolCallsStillAnswered,
)
from chatledger.eventstore import DuplicateEvent, EventStoreError, StoreUnavailable, WrongExpectedVersion
from chatledger.idempotency import IdempotencyConflict
from chatledger.projections.queries import InvalidCursor

from .metrics import Metrics

PROBLEM = "application/problem+json"
log = logging.getLogger("chatledger.api")

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM)


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    # One body for missing, foreign and deleted conversations: never reveal that an id exists.
    if isinstance(exc, MessageNotFound):
        return problem(404, "message not found")
    return problem(404, "conversation not found")


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    metrics: Metrics = request.app.state.metrics
    metrics.store_errors.labels(kind=type(exc).__name__).inc()
    log.warning("database unavailable: %s", exc)
    retry = str(request.app.state.settings.retry_after_seconds)
    return problem(503, "the database is unavailable; retry later", headers={"Retry-After": retry})


def _version_conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WrongExpectedVersion)
    detail = f"the conversation is at version {exc.actual}, not {exc.expected}"
    if request.headers.get("if-match") is not None:
        return problem(412, detail)
    return problem(409, detail)


def _invalid(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidMessage):
        return problem(422, exc.detail, field=exc.field)
    if isinstance(exc, ToolCallsStillAnswered):
        return problem(422, str(exc), field="message_id")
    return problem(422, str(exc), field="after" if isinstance(exc, InvalidCursor) else None)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_clean(e) for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in errors) or _unparsable(exc.body):
        return problem(400, "the request body is not valid JSON")
    first: dict[str, Any] = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    loc = list(first["loc"])
    where = ".".join(str(p) for p in (loc[1:] if loc and loc[0] in _LOCATIONS else loc))
    return problem(
        422, f"{where}: {first['msg']}" if where else first["msg"], field=where or None, errors=errors
    )


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _unparsable(body: Any) -> bool:
    """A body sent without a JSON content type reaches validation as raw bytes (with one, as the
    decoded value: a JSON string is a str, and valid)."""
    if not isinstance(body, bytes):
        return False
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return True
    return False


def _clean(error: Mapping[str, Any]) -> dict[str, Any]:
    # Pydantic errors may carry the offending input and exception objects: keep them JSON-safe.
    return {"type": error["type"], "loc": list(error["loc"]), "msg": error["msg"]}


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "error")
    return problem(exc.status_code, detail, headers=exc.headers)


def _unauthorized(request: Request, exc: Exception) -> JSONResponse:
    headers = (
        {"WWW-Authenticate": 'Bearer error="invalid_token"'} if str(exc) else {"WWW-Authenticate": "Bearer"}
    )
    return problem(
        401, f"invalid bearer token: {exc}" if str(exc) else "a bearer token is required", headers=headers
    )


def _database(request: Request, exc: Exception) -> JSONResponse:
    if is_unavailable(exc):
        return _unavailable(request, exc)
    return _internal(request, exc)


def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return problem(500, "internal error")


def is_unavailable(exc: BaseException) -> bool:
    """A connectivity failure: the store translates driver errors at its edge into
    `StoreUnavailable`; a bare socket error or timeout can still surface from the pool."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreUnavailable | OSError | TimeoutError):
            return True
        current = current.__cause__ or current.__context__
    return False


Handler = Callable[[Request, Exception], JSONResponse]

HANDLERS: dict[type[Exception], Handler] = {
    ConversationNotFound: _not_found,  # also ConversationDeleted and VersionNotFound
    MessageNotFound: _not_found,
    ConversationIdUnavailable: lambda r, e: problem(409, "the conversation id is unavailable", field="id"),
    IdempotencyConflict: lambda r, e: problem(409, str(e), field="Idempotency-Key"),
    DuplicateEvent: lambda r, e: problem(
        409, "this Idempotency-Key was already used with a different request"
    ),
    WrongExpectedVersion: _version_conflict,
    InvalidMessage: _invalid,  # also LimitExceeded
    ToolCallsStillAnswered: _invalid,
    InvalidCursor: _invalid,
    RequestValidationError: _validation,
    HTTPException: _http,
    InvalidToken: _unauthorized,
    StoreUnavailable: _unavailable,
    EventStoreError: _database,
    OSError: _database,
    Exception: _database,
}


def install(app: FastAPI) -> None:
    for cls, handler in HANDLERS.items():
        app.add_exception_handler(cls, handler)
