"""The FastAPI application: `create_app(settings)`; `uvicorn --factory chatledger.api.app:create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from chatledger.auth import TokenVerifier
from chatledger.eventstore import StoreUnavailable
from chatledger.service import ChatLedger
from chatledger.settings import Settings, get_settings

from . import errors
from .errors import PROBLEM
from .metrics import AppendCounter, Metrics
from .middleware import BodyLimitMiddleware, RequestContextMiddleware, configure_access_log
from .routes import audit, conversations, health, messages, stream
from .schemas import Problem

log = logging.getLogger("chatledger.api")

DESCRIPTION = """Event-sourced chat history. Authenticate with `Authorization: Bearer <JWT>` (`sub` is the
user id). Errors are `application/problem+json`. Every response carries `X-Request-ID`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    configure_access_log(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.verifier = TokenVerifier(settings)
        ledger = ChatLedger.open(settings=settings)
        ledger.store.append_listeners.append(AppendCounter(metrics))
        app.state.ledger = ledger
        # A database that is down at startup does not keep the process from starting: /healthz
        # answers, /readyz and every route that needs the database say 503 until it is reachable
        # and migrated, then the service is ready by itself.
        starting: asyncio.Task[None] | None = None
        try:
            await ledger.start()
        except StoreUnavailable as exc:
            log.warning("database unavailable at startup, serving 503 until it is back: %s", exc)
            starting = asyncio.create_task(ledger.start_when_reachable(settings.retry_after_seconds))
        try:
            yield
        finally:
            if starting is not None:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
            await ledger.close()

    app = FastAPI(title="chatledger", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    for module in (conversations, messages, audit, stream, health):
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with error responses as `application/problem+json` only."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if code[0] in "45" and PROBLEM in content:
                    content.pop("application/json", None)
                elif code == "422":
                    # FastAPI's default validation response: ours is a problem too.
                    response["content"] = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
                    response["description"] = "Invalid input."
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    app.openapi_schema = schema
    return schema
