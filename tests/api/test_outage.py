"""A database that stops answering: writes get 503 + Retry-After, and the same server process recovers
by itself once the database is back, without losing an acknowledged write."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from .conftest import Server, start_server
from .proxy import CuttableProxy
from .support import auth, is_problem

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxied(pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, CuttableProxy]]:
    url = make_url(pg_url)
    with CuttableProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        server = start_server(through, tmp_path)
        try:
            yield server, proxy
        finally:
            server.stop()


def test_outage_then_recovery(proxied: tuple[Server, CuttableProxy], alice: str) -> None:
    server, proxy = proxied
    one = {"messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(base_url=server.url, headers=auth(alice), timeout=30) as c:
        cid = c.post("/v1/conversations", json={}).json()["id"]
        acknowledged = 1 if c.post(f"/v1/conversations/{cid}/messages", json=one).status_code == 201 else 0
        with ThreadPoolExecutor(8) as pool:  # several pooled connections, all of which the cut kills
            warm = list(
                pool.map(
                    lambda _: httpx.get(f"{server.url}/v1/conversations", headers=auth(alice)), range(16)
                )
            )
        assert all(r.status_code == 200 for r in warm)

        proxy.cut()
        requests: list[Callable[[], httpx.Response]] = [
            lambda: c.post(f"/v1/conversations/{cid}/messages", json=one),
            lambda: c.post(f"/v1/conversations/{cid}/messages", json=one, headers={"Idempotency-Key": "k"}),
            lambda: c.post("/v1/conversations", json={}),
            lambda: c.patch(f"/v1/conversations/{cid}", json={"title": "t"}),
            lambda: c.get(f"/v1/conversations/{cid}"),
            lambda: c.get(f"/v1/conversations/{cid}/events"),
        ]
        for request in requests:
            started = time.monotonic()
            r = request()
            assert is_problem(r, 503), r.text
            assert r.headers["retry-after"] == "3"
            assert time.monotonic() - started < 15
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200

        proxy.restore()
        # Every connection pooled before the outage is dead; the first one met makes the pool recycle
        # the rest, so the service is back after at most one more 503, not one per pooled connection.
        statuses = []
        for _ in range(5):
            r = c.post(f"/v1/conversations/{cid}/messages", json=one)
            statuses.append(r.status_code)
            if r.status_code == 201:
                acknowledged += 1
                break
        assert statuses[-1] == 201 and statuses.count(503) <= 1, statuses
        assert c.get("/readyz").status_code == 200
        conv = c.get(f"/v1/conversations/{cid}").json()
        assert conv["message_count"] == acknowledged
        metrics = c.get("/metrics").text
        assert "chatledger_store_errors_total{" in metrics


def test_a_database_down_at_startup(pg_url: str, tmp_path: Path, alice: str) -> None:
    url = make_url(pg_url)
    with CuttableProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxy.cut()
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        server = start_server(through, tmp_path, CHATLEDGER_RETRY_AFTER_SECONDS="1")  # waits for /healthz
        try:
            with httpx.Client(base_url=server.url, headers=auth(alice), timeout=30) as c:
                assert c.get("/readyz").status_code == 503
                r = c.post("/v1/conversations", json={})
                assert is_problem(r, 503) and r.headers["retry-after"] == "1"
                assert c.get("/metrics").status_code == 200

                proxy.restore()
                deadline = time.monotonic() + 30
                while c.get("/readyz").status_code != 200:  # it migrates and gets ready by itself
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                assert c.post("/v1/conversations", json={}).status_code == 201
        finally:
            server.stop()
