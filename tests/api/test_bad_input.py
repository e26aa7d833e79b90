"""Bad input gets the right 4xx problem and writes nothing (in-process app)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from .conftest import ClientFor
from .support import is_problem, tool_call

Case = tuple[str, Any, int]


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


BAD_APPENDS: list[Case] = [
    ("bare list", [{"role": "user", "content": "x"}], 422),
    ("no messages", {"messages": []}, 422),
    ("messages not a list", {"messages": "hi"}, 422),
    ("unknown role", {"messages": [{"role": "wizard", "content": "x"}]}, 422),
    ("content not text", {"messages": [{"role": "user", "content": 5}]}, 422),
    ("token_count as text", {"messages": [{"role": "user", "content": "x", "token_count": "5"}]}, 422),
    ("negative token_count", {"messages": [{"role": "user", "content": "x", "token_count": -1}]}, 422),
    # PostgreSQL's integer column ends at 2**31 - 1: past it is bad input, not a driver error
    ("huge token_count", {"messages": [{"role": "user", "content": "x", "token_count": 2**31}]}, 422),
    ("bare string", "hi", 422),
    ("raw nested too deep", {"messages": [{"role": "user", "content": "x", "raw": _nested(100)}]}, 422),
    (
        "metadata nested too deep",
        {"messages": [{"role": "user", "content": "x", "metadata": {"k": _nested(100)}}]},
        422,
    ),
    ("unknown field", {"messages": [{"role": "user", "content": "x", "colour": "red"}]}, 422),
    ("unknown top-level field", {"messages": [{"role": "user", "content": "x"}], "extra": 1}, 422),
    ("NUL in content", {"messages": [{"role": "user", "content": "a\u0000b"}]}, 422),
    ("NUL in metadata", {"messages": [{"role": "user", "content": "a", "metadata": {"k": "\u0000"}}]}, 422),
    ("huge metadata", {"messages": [{"role": "user", "content": "x", "metadata": {"k": "v" * 600}}]}, 422),
    (
        "too many keys",
        {"messages": [{"role": "user", "content": "x", "metadata": {str(i): i for i in range(17)}}]},
        422,
    ),
    ("tool answering nothing", {"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, 422),
    ("tool without call id", {"messages": [{"role": "tool", "content": "x"}]}, 422),
    ("null content for user", {"messages": [{"role": "user", "content": None}]}, 422),
    (
        "tool_calls on user",
        {"messages": [{"role": "user", "content": "x", "tool_calls": [tool_call("c")]}]},
        422,
    ),
    ("non-UUID message id", {"messages": [{"role": "user", "content": "x", "id": "not-a-uuid"}]}, 422),
    ("101 messages", {"messages": [{"role": "user", "content": "x"}] * 101}, 422),
]


@pytest.fixture
async def conversation(inproc: ClientFor, alice: str) -> str:
    r = await inproc(alice).post("/v1/conversations", json={})
    cid: str = r.json()["id"]
    return cid


@pytest.mark.parametrize(("name", "body", "status"), BAD_APPENDS, ids=[c[0] for c in BAD_APPENDS])
async def test_bad_append_writes_nothing(
    inproc: ClientFor, alice: str, conversation: str, name: str, body: Any, status: int
) -> None:
    c = inproc(alice)
    r = await c.post(f"/v1/conversations/{conversation}/messages", json=body)
    assert is_problem(r, status), r.text
    assert (await c.get(f"/v1/conversations/{conversation}")).json()["version"] == 1


async def test_malformed_json_is_400(inproc: ClientFor, alice: str, conversation: str) -> None:
    c = inproc(alice)
    for headers in ({"Content-Type": "application/json"}, {}):
        r = await c.post(
            f"/v1/conversations/{conversation}/messages", content=b'{"messages": [', headers=headers
        )
        assert is_problem(r, 400), r.text
        r = await c.post("/v1/conversations", content=b"{nope", headers=headers)
        assert is_problem(r, 400), r.text


async def test_oversize_body_is_413(inproc: ClientFor, alice: str, conversation: str) -> None:
    c = inproc(alice)
    big = {"messages": [{"role": "user", "content": "x" * 70_000}]}
    r = await c.post(f"/v1/conversations/{conversation}/messages", json=big)
    assert is_problem(r, 413)

    async def chunks() -> Any:  # no Content-Length: the streamed bytes are counted
        for _ in range(20):
            yield b" " * 4096

    r = await c.post(f"/v1/conversations/{conversation}/messages", content=chunks())
    assert is_problem(r, 413)
    assert (await c.get(f"/v1/conversations/{conversation}")).json()["version"] == 1


async def test_content_over_the_field_limit_is_422(tmp_path: Any, alice: str) -> None:
    import httpx

    from chatledger.api.app import create_app
    from chatledger.settings import Settings

    from .support import auth

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        jwt_secret="s" * 40,
        data_dir=tmp_path,
        max_content_bytes=100,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = auth(alice, secret="s" * 40)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
            cid = (await c.post("/v1/conversations", json={})).json()["id"]
            r = await c.post(
                f"/v1/conversations/{cid}/messages",
                json={"messages": [{"role": "user", "content": "x" * 101}]},
            )
            assert is_problem(r, 422) and r.json()["field"] == "messages[0].content"


def _cursor(stamp: str, conversation_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([stamp, conversation_id]).encode()).decode()


BAD_QUERIES = [
    ("/v1/conversations", {"limit": 0}),
    ("/v1/conversations", {"limit": 101}),
    ("/v1/conversations", {"limit": "ten"}),
    ("/v1/conversations", {"after": "garbage!!"}),
    # Well-formed cursors this service never issued: a time with no UTC value, a NUL, a non-UUID id.
    ("/v1/conversations", {"after": _cursor("0001-01-01T00:00:00+01:00", str(uuid.uuid4()))}),
    ("/v1/conversations", {"after": _cursor("9999-12-31T23:59:59-14:00", str(uuid.uuid4()))}),
    ("/v1/conversations", {"after": _cursor("2026-01-01T00:00:00+00:00", "\u0000")}),
    ("/v1/conversations", {"after": _cursor("2026-01-01T00:00:00+00:00", "x")}),
    ("/v1/conversations", {"after": base64.urlsafe_b64encode(b"[" * 2000).decode()}),
    ("{conv}/messages", {"limit": 101}),
    ("{conv}/messages", {"order": "sideways"}),
    ("{conv}/messages", {"after": "x"}),
    ("{conv}/context", {"max_messages": 0}),
    ("{conv}/context", {"format": "xml"}),
    ("{conv}", {"at_version": 0}),
]


@pytest.mark.parametrize(("path", "params"), BAD_QUERIES)
async def test_bad_queries_are_422(
    inproc: ClientFor, alice: str, conversation: str, path: str, params: dict[str, Any]
) -> None:
    url = path.replace("{conv}", f"/v1/conversations/{conversation}")
    r = await inproc(alice).get(url, params=params)
    assert is_problem(r, 422), r.text


async def test_bad_conversation_bodies(inproc: ClientFor, alice: str, conversation: str) -> None:
    c = inproc(alice)
    assert is_problem(await c.post("/v1/conversations", json={"id": "not-a-uuid"}), 422)
    assert is_problem(await c.post("/v1/conversations", json={"title": 5}), 422)
    assert is_problem(await c.post("/v1/conversations", json={"owner": "x"}), 422)
    assert is_problem(await c.post("/v1/conversations", json={"metadata": {"k": "v" * 513}}), 422)
    url = f"/v1/conversations/{conversation}"
    assert is_problem(await c.patch(url, json={"title": None}), 422)
    assert is_problem(await c.patch(url, json={"metadata": None}), 422)
    assert is_problem(await c.patch(url, json={"nope": 1}), 422)
    assert is_problem(await c.patch(url, json={"metadata": {str(i): i for i in range(17)}}), 422)
    assert (await c.get(url)).json()["version"] == 1


# A lone surrogate travels in JSON as an escape (httpx would refuse to encode one), and has no UTF-8
# form: it must be refused like NUL, not fail while hashing.
SURROGATE_BODIES = [
    ("POST", "", b'{"title": "a\\ud800"}'),
    ("POST", "", b'{"metadata": {"k": "\\udfff"}}'),
    ("POST", "", b'{"metadata": {"\\ud800x": "v"}}'),
    ("PATCH", "{conv}", b'{"title": "\\ud800"}'),
    ("PATCH", "{conv}", b'{"metadata": {"k": "\\ud83d"}}'),
    ("POST", "{conv}/messages", b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}'),
    ("POST", "{conv}/messages", b'{"messages": [{"role": "user", "content": "x", "name": "\\udc00"}]}'),
    (
        "POST",
        "{conv}/messages",
        b'{"messages": [{"role": "user", "content": "x", "raw": {"a": ["\\ud800"]}}]}',
    ),
]


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize(("method", "path", "body"), SURROGATE_BODIES)
async def test_lone_surrogates_are_422(
    inproc: ClientFor, alice: str, conversation: str, method: str, path: str, body: bytes, keyed: bool
) -> None:
    c = inproc(alice)
    url = "/v1/conversations" + path.replace("{conv}", f"/{conversation}")
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": "k"} if keyed else {})}
    r = await c.request(method, url, content=body, headers=headers)
    assert is_problem(r, 422) and "surrogate" in r.json()["detail"], r.text
    assert (await c.get(f"/v1/conversations/{conversation}")).json()["version"] == 1
    assert [x["id"] for x in (await c.get("/v1/conversations")).json()["data"]] == [conversation]


async def test_non_uuid_path_ids_are_404(inproc: ClientFor, alice: str, conversation: str) -> None:
    c = inproc(alice)
    assert is_problem(await c.get("/v1/conversations/not-a-uuid"), 404)
    assert is_problem(
        await c.post("/v1/conversations/123/messages", json={"messages": [{"role": "user", "content": "x"}]}),
        404,
    )
    r = await c.delete(f"/v1/conversations/{conversation}/messages/not-a-uuid")
    assert is_problem(r, 404) and r.json()["detail"] == "message not found"


async def test_removing_an_answered_assistant_message_is_422(
    inproc: ClientFor, alice: str, conversation: str
) -> None:
    c = inproc(alice)
    url = f"/v1/conversations/{conversation}/messages"
    history = [
        {"role": "assistant", "content": None, "tool_calls": [tool_call("t1")]},
        {"role": "tool", "tool_call_id": "t1", "content": "done"},
    ]
    added = (await c.post(url, json={"messages": history})).json()["data"]
    assert is_problem(await c.delete(f"{url}/{added[0]['id']}"), 422)
    assert (await c.delete(f"{url}/{added[1]['id']}")).status_code == 204
    assert (await c.delete(f"{url}/{added[0]['id']}")).status_code == 204


async def test_if_match_forms(inproc: ClientFor, alice: str, conversation: str) -> None:
    c = inproc(alice)
    url = f"/v1/conversations/{conversation}"
    assert is_problem(await c.patch(url, json={"title": "a"}, headers={"If-Match": "banana"}), 412)
    assert (await c.patch(url, json={"title": "a"}, headers={"If-Match": "1"})).status_code == 200
    assert (await c.patch(url, json={"title": "b"}, headers={"If-Match": '"2"'})).status_code == 200
    one = {"messages": [{"role": "user", "content": "x"}]}
    assert is_problem(await c.post(f"{url}/messages", json=one, headers={"If-Match": '"2"'}), 412)
    r = await c.post(f"{url}/messages", json=one, headers={"If-Match": '"3"'})
    assert r.status_code == 201 and r.headers["etag"] == '"4"'
    assert is_problem(await c.delete(url, headers={"If-Match": "3"}), 412)
    assert (await c.delete(url, headers={"If-Match": "4"})).status_code == 204


async def test_bodies_nested_past_the_parsers_are_4xx(
    inproc: ClientFor, alice: str, conversation: str
) -> None:
    c = inproc(alice)
    deep = b"[" * 3000
    for content_type in ("text/plain", "application/json"):
        r = await c.post("/v1/conversations", content=deep, headers={"Content-Type": content_type})
        assert is_problem(r, 400), r.text
    nested = b'{"metadata": {"a": ' + b"[" * 500 + b"]" * 500 + b"}}"
    r = await c.post(
        "/v1/conversations",
        content=nested,
        headers={"Content-Type": "application/json", "Idempotency-Key": "deep"},
    )
    assert is_problem(r, 422), r.text
    assert [x["id"] for x in (await c.get("/v1/conversations")).json()["data"]] == [conversation]
