"""Property: requests generated from the OpenAPI document never get a 500 (hypothesis; real server).

Each example picks an operation from `/openapi.json`, fills its path parameters (an id the caller owns,
a random UUID or arbitrary text), its query parameters (per their schema types, or junk) and, for
POST/PATCH, a body that is either shaped like the schema or arbitrary JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Server
from .support import auth, tool_call

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "robot"])
messages = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": st.none() | st.text(max_size=50),
        "tool_calls": st.lists(st.just(tool_call("c1")) | json_values, max_size=2),
        "tool_call_id": st.sampled_from(["c1", "c2", ""]),
        "name": st.text(max_size=10),
        "token_count": st.integers(-5, 10**6) | st.text(max_size=3),
        "metadata": st.dictionaries(st.text(max_size=70), json_values, max_size=18),
        "raw": json_values,
        "id": st.uuids().map(str) | st.text(max_size=10),
    },
)
bodies = {
    "/v1/conversations": st.fixed_dictionaries(
        {},
        optional={
            "id": st.uuids().map(str) | st.text(max_size=10),
            "title": st.none() | st.text(max_size=80) | st.integers(),
            "metadata": st.dictionaries(st.text(max_size=70), json_values, max_size=18),
        },
    ),
    "/v1/conversations/{conversation_id}": st.fixed_dictionaries(
        {},
        optional={
            "title": st.none() | st.text(max_size=80),
            "metadata": st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=4),
        },
    ),
    "/v1/conversations/{conversation_id}/messages": st.fixed_dictionaries(
        {"messages": st.lists(messages, max_size=3)}
    ),
}


@pytest.fixture(scope="module")
def world(sqlite_server: Server) -> Iterator[tuple[httpx.Client, dict[str, Any], str, str]]:
    user = f"prop-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=sqlite_server.url, headers=auth(user), timeout=30) as client:
        doc = client.get("/openapi.json").json()
        cid = client.post("/v1/conversations", json={"title": "p"}).json()["id"]
        added = client.post(
            f"/v1/conversations/{cid}/messages", json={"messages": [{"role": "user", "content": "x"}]}
        )
        yield client, doc, cid, added.json()["data"][0]["id"]


def _query_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    kinds = {s.get("type") for s in schema.get("anyOf", [schema])}
    junk = st.text(max_size=8)
    if "integer" in kinds:
        return st.integers(-(2**63), 2**63) | junk
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | junk
    return junk


@st.composite
def requests(draw: st.DrawFn, doc: dict[str, Any], cid: str, mid: str) -> tuple[str, str, dict[str, Any]]:
    # The SSE stream never ends by design: it has its own tests (test_stream.py).
    operations = [
        (m, p, op) for p, ops in doc["paths"].items() for m, op in ops.items() if not p.endswith("/stream")
    ]
    method, template, op = draw(st.sampled_from(operations))
    ids = {
        "conversation_id": st.just(cid) | st.uuids().map(str) | st.text(min_size=1, max_size=20),
        "message_id": st.just(mid) | st.uuids().map(str) | st.text(min_size=1, max_size=20),
    }
    path = template
    params: dict[str, Any] = {}
    for p in op.get("parameters", []):
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", quote(draw(ids[p["name"]]), safe=""))
        elif p["in"] == "query" and draw(st.booleans()):
            params[p["name"]] = draw(_query_value(p["schema"]))
    kwargs: dict[str, Any] = {"params": params}
    if method in ("post", "patch"):
        body = draw(bodies.get(template, st.nothing()) | json_values)
        kwargs["json"] = body
        if method == "post" and draw(st.booleans()):
            kwargs["headers"] = {"Idempotency-Key": draw(st.text("abc", min_size=1, max_size=3))}
    if method in ("patch", "delete") and draw(st.booleans()):
        kwargs.setdefault("headers", {})["If-Match"] = draw(st.sampled_from(['"1"', "2", "x", "*"]))
    return method.upper(), path, kwargs


def test_no_request_gets_a_500(world: tuple[httpx.Client, dict[str, Any], str, str]) -> None:
    client, doc, cid, mid = world

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(requests(doc, cid, mid))
    def check(request: tuple[str, str, dict[str, Any]]) -> None:
        method, path, kwargs = request
        response = client.request(method, path, **kwargs)
        assert response.status_code < 500, (method, path, kwargs, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")

    check()
