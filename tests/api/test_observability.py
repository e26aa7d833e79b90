"""Request ids, metrics, readiness and the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import ClientFor


async def test_request_id_is_echoed_and_lands_in_event_metadata(inproc: ClientFor, alice: str) -> None:
    c = inproc(alice)
    r = await c.post("/v1/conversations", json={}, headers={"X-Request-ID": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    events = (await c.get(f"/v1/conversations/{r.json()['id']}/events")).json()["data"]
    assert events[0]["metadata"]["request_id"] == "req-123"
    assert events[0]["metadata"]["actor"] == alice
    generated = await c.get("/v1/conversations")
    assert len(generated.headers["x-request-id"]) >= 16
    assert (await inproc(None).get("/v1/conversations")).headers["x-request-id"]


async def test_access_log_is_one_json_line(
    inproc: ClientFor, alice: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    logger = logging.getLogger("chatledger.access")
    logger.addHandler(caplog.handler)
    try:
        await inproc(alice).get("/v1/conversations", headers={"X-Request-ID": "log-me"})
    finally:
        logger.removeHandler(caplog.handler)
    line = json.loads(caplog.records[-1].getMessage())
    assert line["request_id"] == "log-me" and line["user"] == alice
    assert line["route"] == "/v1/conversations" and line["status"] == 200
    assert isinstance(line["duration_ms"], float)


async def test_metrics(inproc: ClientFor, alice: str) -> None:
    c = inproc(alice)
    cid = (await c.post("/v1/conversations", json={})).json()["id"]
    await c.post(f"/v1/conversations/{cid}/messages", json={"messages": [{"role": "user", "content": "x"}]})
    text = (await inproc(None).get("/metrics")).text
    assert 'chatledger_http_requests_total{method="POST",route="/v1/conversations",status="201"} 1.0' in text
    assert 'route="/v1/conversations/{conversation_id}/messages"' in text
    assert "chatledger_http_request_duration_seconds_bucket" in text
    assert 'chatledger_events_appended_total{type="MessageAdded"} 1.0' in text
    assert "chatledger_store_errors_total" in text
    assert "# TYPE chatledger_projection_lag_events gauge" in text


async def test_readyz(inproc: ClientFor) -> None:
    r = await inproc(None).get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_openapi_describes_routes_errors_and_headers(inproc: ClientFor) -> None:
    doc: dict[str, Any] = (await inproc(None).get("/openapi.json")).json()
    paths = doc["paths"]
    expected = {
        ("post", "/v1/conversations"),
        ("get", "/v1/conversations"),
        ("get", "/v1/conversations/{conversation_id}"),
        ("patch", "/v1/conversations/{conversation_id}"),
        ("delete", "/v1/conversations/{conversation_id}"),
        ("post", "/v1/conversations/{conversation_id}/messages"),
        ("get", "/v1/conversations/{conversation_id}/messages"),
        ("delete", "/v1/conversations/{conversation_id}/messages"),
        ("delete", "/v1/conversations/{conversation_id}/messages/{message_id}"),
        ("get", "/v1/conversations/{conversation_id}/context"),
        ("get", "/v1/conversations/{conversation_id}/events"),
        ("get", "/v1/conversations/{conversation_id}/verify"),
        ("get", "/v1/conversations/{conversation_id}/stream"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    }
    assert {(m, p) for p, ops in paths.items() for m in ops} == expected
    assert "/metrics" not in paths
    for path, ops in paths.items():
        for method, op in ops.items():
            if path.startswith("/v1"):
                assert op["security"] == [{"HTTPBearer": []}], (method, path)
                for code in ("401", "422", "503"):
                    content = op["responses"][code]["content"]
                    assert list(content) == ["application/problem+json"], (method, path, code)
                assert "Retry-After" in op["responses"]["503"]["headers"]
    post = paths["/v1/conversations/{conversation_id}/messages"]["post"]
    header_params = {p["name"] for p in post["parameters"] if p["in"] == "header"}
    assert header_params == {"If-Match", "Idempotency-Key"}
    assert "ETag" in post["responses"]["201"]["headers"]
    assert "Problem" in doc["components"]["schemas"] and "MessageIn" in doc["components"]["schemas"]
    assert "#/components/schemas/ValidationError" not in json.dumps(doc)


async def test_the_service_keeps_appends_of_one_message_to_one_statement(test_settings: Any) -> None:
    # An inline projection without a write fragment (the append counter once was one) would send
    # every HTTP append down the 4-round-trip locked path on PostgreSQL.
    from chatledger.api.app import create_app

    app = create_app(test_settings)
    async with app.router.lifespan_context(app):
        projections = app.state.ledger.store.inline_projections
        assert projections and all(hasattr(p, "write_fragment") for p in projections)
        assert app.state.ledger.store.append_listeners  # the metrics still hear every append
