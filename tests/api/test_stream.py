"""Server-sent events on a real server: live events, resume with Last-Event-ID, 404 for strangers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from .conftest import ClientFor
from .support import is_problem


async def _read_events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if current:
                events.append(current)
                current = {}
                if len(events) == count:
                    return events
            continue
        key, _, value = line.partition(": ")
        current[key] = value
    return events


async def test_stream_live_and_resume(client_for: ClientFor, alice: str, bob: str) -> None:
    c = client_for(alice)
    cid = (await c.post("/v1/conversations", json={})).json()["id"]
    url = f"/v1/conversations/{cid}/stream"
    assert is_problem(await client_for(bob).get(url), 404)

    async with c.stream("GET", url) as live:
        assert live.status_code == 200
        assert live.headers["content-type"].startswith("text/event-stream")
        # The stream's starting version was fixed before its headers were sent: an append from here on
        # is delivered, whenever the reader gets to it.
        reader = asyncio.create_task(_read_events(live, 1))
        await c.post(
            f"/v1/conversations/{cid}/messages", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        (event,) = await asyncio.wait_for(reader, 10)
    assert event["id"] == "2" and event["event"] == "MessageAdded"
    assert json.loads(event["data"])["data"]["content"] == "hi"

    async with c.stream("GET", url, headers={"Last-Event-ID": "0"}) as resumed:
        history = await asyncio.wait_for(_read_events(resumed, 2), 10)
    assert [e["id"] for e in history] == ["1", "2"]
    assert json.loads(history[0]["data"])["type"] == "ConversationStarted"
    # SSE data is the full envelope, shaped like an item of /events
    trail = (await c.get(f"/v1/conversations/{cid}/events")).json()["data"]
    assert [json.loads(e["data"]) for e in history] == trail
