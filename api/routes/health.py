"""Liveness, readiness and metrics: unauthenticated."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from chatledger.eventstore import EventStoreError
from chatledger.service import ChatLedger

from ..schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database does not answer."}},
)
async def readyz(request: Request) -> JSONResponse:
    """The database answers (and the schema is migrated)."""
    ledger: ChatLedger = request.app.state.ledger
    ready = ledger.started and await ledger.ready()
    return JSONResponse({"status": "ok" if ready else "unavailable"}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    ledger: ChatLedger = request.app.state.ledger
    with contextlib.suppress(EventStoreError):  # metrics still render while the database is down
        for name, lag in (await ledger.projection_lag()).items():
            registry.projection_lag.labels(projection=name).set(lag)
    body = registry.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
