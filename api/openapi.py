"""OpenAPI fragments: problem responses and response headers, declared once."""

from __future__ import annotations

from typing import Any

from .errors import PROBLEM, TITLES
from .schemas import Problem

_PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}

HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {"description": 'The conversation version, quoted: `"7"`.', "schema": {"type": "string"}},
    "X-Request-ID": {"description": "The request id (echoed, or generated).", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}},
}

_DESCRIPTIONS = {
    400: "Malformed JSON.",
    401: "Missing or invalid bearer token.",
    404: "No such conversation (or message) for this user.",
    409: "Conflict: id unavailable, idempotency key reused with another request, or version conflict.",
    412: "`If-Match` names a stale version.",
    413: "Request body over the configured limit.",
    422: "Invalid input.",
    500: "Internal error.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these status codes (401, 422, 500 and 503 are always possible)."""
    result: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, 401, 422, 500, 503}):
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(code, TITLES.get(code, "Error")),
            "model": Problem,
            "content": {PROBLEM: {"schema": _PROBLEM_SCHEMA}},
            "headers": {"X-Request-ID": HEADERS["X-Request-ID"]},
        }
        if code == 503:
            entry["headers"]["Retry-After"] = HEADERS["Retry-After"]
        if code == 401:
            entry["headers"]["WWW-Authenticate"] = HEADERS["WWW-Authenticate"]
        result[code] = entry
    return result


def with_etag(description: str, model: type[Any] | None = None) -> dict[str, Any]:
    """A success response that carries the conversation version in `ETag`."""
    entry: dict[str, Any] = {
        "description": description,
        "headers": {"ETag": HEADERS["ETag"], "X-Request-ID": HEADERS["X-Request-ID"]},
    }
    if model is not None:
        entry["model"] = model
    return entry
