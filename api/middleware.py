"""Pure ASGI middleware: request ids, access logs and metrics; the request body size limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatledger.context import request_id_var

from .errors import problem
from .metrics import Metrics

access_log = logging.getLogger("chatledger.access")

request_user_var: ContextVar[dict[str, str] | None] = ContextVar("chatledger_request_user", default=None)
"""A per-request holder the auth dependency fills in, so the access log can name the caller."""

_REQUEST_ID = re.compile(r"^[\w.:@/+=-]{1,128}$")


class RequestContextMiddleware:
    """Accepts (or makes) `X-Request-ID`, echoes it, exposes it to event metadata through
    `request_id_var`, then logs one JSON line and records metrics per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        rid_token = request_id_var.set(request_id)
        holder: dict[str, str] = {}
        user_token = request_user_var.set(holder)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(rid_token)
            request_user_var.reset(user_token)
            self._record(scope, request_id, holder.get("user_id"), status, time.perf_counter() - started)

    def _record(self, scope: Scope, request_id: str, user: str | None, status: int, seconds: float) -> None:
        # Templates keep label cardinality bounded; plain Starlette routes (docs) have fixed paths.
        route = getattr(scope.get("route"), "path", None)
        route = route or (scope["path"] if scope.get("endpoint") else "<unmatched>")
        method = scope["method"]
        self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
        self.metrics.latency.labels(method=method, route=route).observe(seconds)
        line = {
            "request_id": request_id,
            "user": user,
            "method": method,
            "route": route,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        access_log.info(json.dumps(line))


class BodyLimitMiddleware:
    """Answers 413 for a body over `max_bytes`: from `Content-Length` when given, else by counting
    the streamed chunks. The body (at most `max_bytes`) is buffered, then replayed to the app, so the
    app never sees a truncated body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, f"the request body is larger than {self.max_bytes} bytes")
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def configure_access_log(level: str) -> None:
    """One JSON line per request on stderr; added once, whatever the number of apps built."""
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.propagate = False
    access_log.setLevel(level.upper())
