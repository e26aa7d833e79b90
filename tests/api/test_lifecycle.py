"""End to end against a real server, on SQLite and PostgreSQL: DESIGN section 5's routes in order."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

import httpx

from .conftest import ClientFor
from .support import is_problem, tool_call

# DESIGN section 2: the envelope of every recorded event; the hash covers all of it.
ENVELOPE = {
    "event_id",
    "stream_id",
    "stream_version",
    "global_position",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
    "prev_hash",
}


def recomputed_hash(item: dict[str, Any]) -> str:
    """`sha256(prev_hash || canonical JSON of the envelope without hash)`, from the item alone."""
    envelope = {k: v for k, v in item.items() if k != "hash"}
    canonical = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((item["prev_hash"] + canonical).encode("utf-8")).hexdigest()


RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def test_full_lifecycle(client_for: ClientFor, alice: str) -> None:
    c = client_for(alice)
    created = await c.post("/v1/conversations", json={"metadata": {"topic": "weather"}})
    assert created.status_code == 201
    conv = created.json()
    cid = conv["id"]
    assert uuid.UUID(cid) and conv["object"] == "conversation"
    assert conv["user_id"] == alice and conv["version"] == 1 and conv["message_count"] == 0
    assert created.headers["etag"] == '"1"'
    assert RFC3339_Z.match(conv["created_at"]) and conv["last_message_at"] is None
    assert created.headers["x-request-id"]

    again = await c.post("/v1/conversations", json={"id": cid})
    assert again.status_code == 200 and again.json()["id"] == cid

    appended = await c.post(
        f"/v1/conversations/{cid}/messages",
        json={
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "What is the weather in Paris today, please?"},
            ]
        },
    )
    assert appended.status_code == 201, appended.text
    body = appended.json()
    assert body["version"] == 3 and appended.headers["etag"] == '"3"'
    assert [m["seq"] for m in body["data"]] == [1, 2]
    first = body["data"][0]
    assert first["id"] == first["message_id"] and first["conversation_id"] == cid

    got = await c.get(f"/v1/conversations/{cid}")
    assert got.status_code == 200 and got.headers["etag"] == '"3"'
    assert got.json()["title"].startswith("What is the weather")
    assert got.json()["message_count"] == 2 and RFC3339_Z.match(got.json()["last_message_at"])

    stale = await c.patch(f"/v1/conversations/{cid}", json={"title": "x"}, headers={"If-Match": '"2"'})
    assert is_problem(stale, 412)
    patched = await c.patch(
        f"/v1/conversations/{cid}",
        json={"title": "Paris", "metadata": {"topic": None, "lang": "fr"}},
        headers={"If-Match": "3"},
    )
    assert patched.status_code == 200
    assert patched.json()["title"] == "Paris" and patched.json()["metadata"] == {"lang": "fr"}
    assert patched.headers["etag"] == '"4"'

    listed = await c.get("/v1/conversations")
    assert listed.status_code == 200
    assert [x["id"] for x in listed.json()["data"]] == [cid]
    assert listed.json()["has_more"] is False and listed.json()["next_cursor"] is None

    page = await c.get(f"/v1/conversations/{cid}/messages", params={"order": "desc", "limit": 1})
    assert page.status_code == 200
    assert [m["seq"] for m in page.json()["data"]] == [2] and page.json()["has_more"] is True

    window = await c.get(f"/v1/conversations/{cid}/context")
    assert window.status_code == 200
    assert window.json()["data"][0] == {"role": "system", "content": "be brief"}
    assert window.json()["version"] == 4

    old = await c.get(f"/v1/conversations/{cid}", params={"at_version": 1})
    assert old.status_code == 200 and old.json()["version"] == 1 and old.json()["message_count"] == 0

    removed = await c.delete(f"/v1/conversations/{cid}/messages/{first['id']}")
    assert removed.status_code == 204
    assert is_problem(await c.delete(f"/v1/conversations/{cid}/messages/{first['id']}"), 404)
    now = await c.get(f"/v1/conversations/{cid}/messages")
    assert [m["seq"] for m in now.json()["data"]] == [2]
    then = await c.get(f"/v1/conversations/{cid}/messages", params={"at_version": 4})
    assert [m["seq"] for m in then.json()["data"]] == [1, 2] and then.json()["version"] == 4

    events = await c.get(f"/v1/conversations/{cid}/events")
    assert events.status_code == 200
    items = events.json()["data"]
    assert [e["stream_version"] for e in items] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in items][-1] == "MessageRemoved"
    assert items[0]["prev_hash"] == "0" * 64 and items[1]["prev_hash"] == items[0]["hash"]
    assert set(items[0]) == {*ENVELOPE, "hash"}
    assert all(recomputed_hash(e) == e["hash"] for e in items)
    assert RFC3339_Z.match(items[0]["recorded_at"])
    after = await c.get(f"/v1/conversations/{cid}/events", params={"after_version": 3})
    assert [e["stream_version"] for e in after.json()["data"]] == [4, 5]

    verified = await c.get(f"/v1/conversations/{cid}/verify")
    assert verified.json() == {"ok": True, "events_checked": 5}

    cleared = await c.delete(f"/v1/conversations/{cid}/messages")
    assert cleared.status_code == 204
    after_clear = (await c.get(f"/v1/conversations/{cid}")).json()
    assert after_clear["message_count"] == 0
    more = await c.post(
        f"/v1/conversations/{cid}/messages", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert more.json()["data"][0]["seq"] == 3  # seq keeps counting after a clear

    assert (await c.delete(f"/v1/conversations/{cid}")).status_code == 204
    assert is_problem(await c.get(f"/v1/conversations/{cid}"), 404)


async def test_pagination_to_the_end_of_500_messages(client_for: ClientFor, alice: str) -> None:
    c = client_for(alice)
    cid = (await c.post("/v1/conversations", json={})).json()["id"]
    for start in range(0, 500, 100):
        batch = [{"role": "user", "content": f"m{i}"} for i in range(start, start + 100)]
        r = await c.post(f"/v1/conversations/{cid}/messages", json={"messages": batch})
        assert r.status_code == 201
    seen: list[int] = []
    params: dict[str, str | int] = {"limit": 100}
    while True:
        page = (await c.get(f"/v1/conversations/{cid}/messages", params=params)).json()
        seen += [m["seq"] for m in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        params = {"limit": 100, "after": page["next_cursor"]}
    assert seen == list(range(1, 501))

    backwards: list[int] = []
    params = {"limit": 37, "order": "desc"}
    while True:
        page = (await c.get(f"/v1/conversations/{cid}/messages", params=params)).json()
        backwards += [m["seq"] for m in page["data"]]
        if not page["has_more"]:
            break
        params = {"limit": 37, "order": "desc", "before": page["next_cursor"]}
    assert backwards == list(range(500, 0, -1))


async def test_context_window_keeps_tool_groups_whole(client_for: ClientFor, alice: str) -> None:
    c = client_for(alice)
    cid = (await c.post("/v1/conversations", json={})).json()["id"]
    history = [
        {"role": "system", "content": "you are terse"},
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("a"), tool_call("b")]},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": "noon"},
        {"role": "assistant", "content": "Sunny, noon."},
        {"role": "user", "content": "and tomorrow?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("c")]},
    ]
    r = await c.post(f"/v1/conversations/{cid}/messages", json={"messages": history})
    assert r.status_code == 201, r.text

    full = (await c.get(f"/v1/conversations/{cid}/context")).json()
    # The trailing group's call is not answered yet: it is left out.
    assert [m["role"] for m in full["data"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
    ]
    assert full["pinned"] == 1

    # 3 messages after the pinned system message would start inside the tool group: shrink to 2.
    small = (await c.get(f"/v1/conversations/{cid}/context", params={"max_messages": 3})).json()
    assert [m.get("content") for m in small["data"]] == ["you are terse", "Sunny, noon.", "and tomorrow?"]

    raw = (
        await c.get(f"/v1/conversations/{cid}/context", params={"max_messages": 4, "format": "raw"})
    ).json()
    assert raw["format"] == "raw"
    # The 4 newest would start on a tool message: shrunk to the group boundary after it.
    assert [m["seq"] for m in raw["data"]] == [1, 6, 7]
    assert raw["data"][1]["message_id"] == raw["data"][1]["id"]


async def test_deleted_conversation_is_404_everywhere(client_for: ClientFor, alice: str) -> None:
    c = client_for(alice)
    cid = (await c.post("/v1/conversations", json={"title": "t"})).json()["id"]
    added = await c.post(
        f"/v1/conversations/{cid}/messages", json={"messages": [{"role": "user", "content": "x"}]}
    )
    mid = added.json()["data"][0]["id"]
    assert (await c.delete(f"/v1/conversations/{cid}")).status_code == 204
    for response in await _every_route(c, cid, mid):
        assert is_problem(response, 404), (response.request.method, response.request.url, response.text)
    assert cid not in [x["id"] for x in (await c.get("/v1/conversations")).json()["data"]]
    reused = await c.post("/v1/conversations", json={"id": cid})
    assert is_problem(reused, 409)
    assert "unavailable" in reused.json()["detail"]

    admin = client_for("root", admin=True)
    assert (await admin.get(f"/v1/conversations/{cid}/events")).status_code == 200
    assert (await admin.get(f"/v1/conversations/{cid}/verify")).json()["ok"] is True
    assert (await admin.get(f"/v1/conversations/{cid}", params={"at_version": 2})).json()["title"] == "t"


async def _every_route(c: httpx.AsyncClient, cid: str, mid: str) -> list[httpx.Response]:
    base = f"/v1/conversations/{cid}"
    one = {"messages": [{"role": "user", "content": "x"}]}
    return [
        await c.get(base),
        await c.get(base, params={"at_version": 1}),
        await c.patch(base, json={"title": "y"}),
        await c.delete(base),
        await c.post(f"{base}/messages", json=one),
        await c.post(f"{base}/messages", json=one, headers={"Idempotency-Key": uuid.uuid4().hex}),
        await c.get(f"{base}/messages"),
        await c.delete(f"{base}/messages"),
        await c.delete(f"{base}/messages/{mid}"),
        await c.get(f"{base}/context"),
        await c.get(f"{base}/events"),
        await c.get(f"{base}/verify"),
    ]
