"""Concurrent writers against a real server: idempotent retries and one-stream serialisation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import ClientFor, Server, start_server
from .support import auth, is_problem


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


@pytest.fixture
def two_pg_servers(pg_server: Server, pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    second = start_server(pg_url, tmp_path)
    try:
        yield pg_server, second
    finally:
        second.stop()


@pytest.mark.postgres
async def test_keyed_duplicates_across_two_processes(
    two_pg_servers: tuple[Server, Server], alice: str
) -> None:
    # The key is claimed before the request runs, so wherever a duplicate lands it never runs the
    # request again: it waits for the first answer, or is refused when its route or body differ.
    one, two = (httpx.AsyncClient(base_url=s.url, headers=auth(alice), timeout=30) for s in two_pg_servers)
    clients = (one, two)
    try:
        for round_ in range(4):
            created = await asyncio.gather(
                *(
                    clients[i % 2].post(
                        "/v1/conversations", json={"title": "t"}, headers={"Idempotency-Key": f"c{round_}"}
                    )
                    for i in range(8)
                )
            )
            assert {r.status_code for r in created} == {201} and len({r.content for r in created}) == 1
            cid = created[0].json()["id"]

            body = {"messages": [{"role": "user", "content": "once"}]}
            keyed = {"Idempotency-Key": f"m{round_}", "If-Match": '"1"'}
            appended = await asyncio.gather(
                *(
                    clients[i % 2].post(f"/v1/conversations/{cid}/messages", json=body, headers=keyed)
                    for i in range(8)
                )
            )
            assert {r.status_code for r in appended} == {201} and len({r.content for r in appended}) == 1

            other = (await one.post("/v1/conversations", json={})).json()["id"]
            reused = {"Idempotency-Key": f"r{round_}"}
            both = await asyncio.gather(
                one.post(f"/v1/conversations/{cid}/messages", json=body, headers=reused),
                two.post(f"/v1/conversations/{other}/messages", json=body, headers=reused),
            )
            assert sorted(r.status_code for r in both) == [201, 409], [r.text for r in both]
            versions = [(await one.get(f"/v1/conversations/{c}")).json()["version"] for c in (cid, other)]
            assert sum(versions) == 2 + 1 + 1  # from versions 2 and 1: exactly one of the two writes happened
    finally:
        for c in clients:
            await c.aclose()
