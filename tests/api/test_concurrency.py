"""Concurrent writers against a real server: idempotent retries and one-stream serialisation."""

from __future__ import annotations

import asyncio

from .conftest import ClientFor
from .support import is_problem


async def test_same_keyed_post_20_times_at_once_writes_once(client_for: ClientFor, alice: str) -> None:
    c = client_for(alice)
    cid = (await c.post("/v1/conversations", json={})).json()["id"]
    body = {"messages": [{"role": "user", "content": "once"}, {"role": "assistant", "content": "only once"}]}
    headers = {"Idempotency-Key": "retry-me"}
    responses = await asyncio.gather(
        *(c.post(f"/v1/conversations/{cid}/messages", json=body, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert len({r.headers["etag"] for r in responses}) == 1
    events = (await c.get(f"/v1/conversations/{cid}/events")).json()["data"]
    assert [e["type"] for e in events] == ["ConversationStarted", "MessageAdded", "MessageAdded"]

    other = await c.post(
        f"/v1/conversations/{cid}/messages",
        json={"messages": [{"role": "user", "content": "x"}]},
        headers=headers,
    )
    assert is_problem(other, 409)
    elsewhere = await c.post("/v1/conversations", json={}, headers=headers)
    assert is_problem(elsewhere, 409)
    assert len((await c.get(f"/v1/conversations/{cid}/events")).json()["data"]) == 3


async def test_keyed_create_is_idempotent(client_for: ClientFor, alice: str) -> None:
    c = client_for(alice)
    headers = {"Idempotency-Key": "create-1"}
    responses = await asyncio.gather(
        *(c.post("/v1/conversations", json={"title": "t"}, headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert len((await c.get("/v1/conversations")).json()["data"]) == 1


async def test_50_concurrent_appends_get_seq_1_to_50(client_for: ClientFor, alice: str) -> None:
    c = client_for(alice)
    cid = (await c.post("/v1/conversations", json={})).json()["id"]
    responses = await asyncio.gather(
        *(
            c.post(
                f"/v1/conversations/{cid}/messages", json={"messages": [{"role": "user", "content": str(i)}]}
            )
            for i in range(50)
        )
    )
    assert [r.status_code for r in responses] == [201] * 50
    assert sorted(r.json()["data"][0]["seq"] for r in responses) == list(range(1, 51))
    page = (await c.get(f"/v1/conversations/{cid}/messages", params={"limit": 100})).json()
    assert [m["seq"] for m in page["data"]] == list(range(1, 51))
    assert sorted(m["content"] for m in page["data"]) == sorted(str(i) for i in range(50))
    assert (await c.get(f"/v1/conversations/{cid}")).json()["version"] == 51
