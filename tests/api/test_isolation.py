"""A second user tries every route on the first user's conversation: only 404s, nothing changes."""

from __future__ import annotations

import uuid

from .conftest import ClientFor
from .support import is_problem


async def test_another_users_conversation_is_invisible(client_for: ClientFor, alice: str, bob: str) -> None:
    a, b = client_for(alice), client_for(bob)
    cid = (await a.post("/v1/conversations", json={"title": "private"})).json()["id"]
    added = await a.post(
        f"/v1/conversations/{cid}/messages", json={"messages": [{"role": "user", "content": "x"}]}
    )
    mid = added.json()["data"][0]["id"]
    before_conv = (await a.get(f"/v1/conversations/{cid}")).json()
    before_events = (await a.get(f"/v1/conversations/{cid}/events")).json()
    missing = (await b.get(f"/v1/conversations/{uuid.uuid4()}")).json()

    base = f"/v1/conversations/{cid}"
    one = {"messages": [{"role": "user", "content": "intrusion"}]}
    attempts = [
        await b.get(base),
        await b.get(base, params={"at_version": 1}),
        await b.patch(base, json={"title": "mine"}),
        await b.patch(base, json={"title": "mine"}, headers={"If-Match": '"1"'}),
        await b.delete(base),
        await b.delete(base, headers={"If-Match": "2"}),
        await b.post(f"{base}/messages", json=one),
        await b.post(f"{base}/messages", json=one, headers={"If-Match": '"1"'}),
        await b.post(f"{base}/messages", json=one, headers={"Idempotency-Key": "k1"}),
        await b.get(f"{base}/messages"),
        await b.delete(f"{base}/messages"),
        await b.delete(f"{base}/messages/{mid}"),
        await b.get(f"{base}/context"),
        await b.get(f"{base}/events"),
        await b.get(f"{base}/verify"),
    ]
    for r in attempts:
        assert is_problem(r, 404), (r.request.method, r.request.url, r.status_code, r.text)
        assert r.json() == missing  # the same body as a conversation that does not exist

    taken = await b.post("/v1/conversations", json={"id": cid})
    assert is_problem(taken, 409) and "unavailable" in taken.json()["detail"]
    assert cid not in str(taken.json())
    assert (await b.get("/v1/conversations")).json()["data"] == []

    assert (await a.get(f"/v1/conversations/{cid}")).json() == before_conv
    assert (await a.get(f"/v1/conversations/{cid}/events")).json() == before_events
