"""Liveness, readiness and metrics: unauthenticated."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from chatledger.eventstore import EventStoreError

from ..deps import LedgerDep
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
async def readyz(ledger: LedgerDep) -> JSONResponse:
    """The database answers."""
    ready = await ledger.ready()
    return JSONResponse({"status": "ok" if ready else "unavailable"}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, ledger: LedgerDep) -> Response:
    registry = request.app.state.metrics
    with contextlib.suppress(EventStoreError):  # metrics still render while the database is down
        for name, lag in (await ledger.projection_lag()).items():
            registry.projection_lag.labels(projection=name).set(lag)
    body = registry.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
