"""/events and /verify over HTTP: the shapes DESIGN section 9 gives, for a sound and a broken chain."""

from __future__ import annotations

import sqlite3

from chatledger.settings import Settings

from .conftest import ClientFor


async def test_verify_names_a_deleted_row_with_every_key(
    inproc: ClientFor, test_settings: Settings, alice: str
) -> None:
    c = inproc(alice)
    cid = (await c.post("/v1/conversations", json={})).json()["id"]
    for text in ("one", "two", "three"):
        await c.post(
            f"/v1/conversations/{cid}/messages", json={"messages": [{"role": "user", "content": text}]}
        )
    assert (await c.get(f"/v1/conversations/{cid}/verify")).json() == {"ok": True, "events_checked": 4}

    path = test_settings.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        assert (
            db.execute("DELETE FROM events WHERE stream_id = ? AND stream_version = 3", (cid,)).rowcount == 1
        )

    report = (await c.get(f"/v1/conversations/{cid}/verify")).json()
    # a deleted row has no position or hashes of its own: the keys are there, null
    assert report == {
        "ok": False,
        "events_checked": 2,
        "first_broken": {
            "stream_id": cid,
            "version": 3,
            "position": None,
            "expected_hash": None,
            "stored_hash": None,
            "reason": "missing event",
        },
    }
