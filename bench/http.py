"""Scenario 8: `chatledger serve` (a subprocess) under wrk, loopback only, bounded in time.

POST one message (8 connections spread over 8 conversations) and GET the last 50 of a conversation;
req/s and p50/p99 from wrk's own latency distribution, beside the library-level figures of this run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt

from .env import BenchEnv
from .stats import Report

SECRET = "bench-secret-bench-secret-bench-secret"
USER = "http-user"
POST_LUA = """
local paths = {%s}
local body = '{"messages":[{"role":"user","content":"hello from wrk, one short chat message"}]}'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  return wrk.format("POST", paths[math.random(#paths)], nil, body)
end
"""
GET_LUA = """
wrk.headers["Authorization"] = "Bearer %s"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(env: BenchEnv) -> Iterator[str]:
    port = _free_port()
    environ = os.environ | {
        "CHATLEDGER_DATABASE_URL": env.pg_url,
        "CHATLEDGER_JWT_SECRET": SECRET,
        "CHATLEDGER_LOG_LEVEL": "WARNING",
    }
    exe = Path(sys.executable).with_name("chatledger")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=environ)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("chatledger serve did not come up") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _call(base: str, token: str, method: str, path: str, body: object) -> dict[str, object]:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


def _wrk(script: str, url: str, seconds: float) -> tuple[float, float, float]:
    """req/s, p50 ms and p99 ms from `wrk --latency`; non-2xx responses make it fail loudly."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t2", "-c8", f"-d{max(1, round(seconds))}s", "--latency", "-s", f.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        os.unlink(f.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, _ms(out, "50%"), _ms(out, "99%")


def _ms(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def http_scenario(env: BenchEnv, report: Report, *, seconds: float) -> None:
    if shutil.which("wrk") is None:
        report.notes.append("HTTP scenario skipped: wrk not installed (apt-get install -y wrk)")
        return
    await asyncio.to_thread(_run, env, report, seconds)


def _run(env: BenchEnv, report: Report, seconds: float) -> None:
    token = jwt.encode({"sub": USER, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    with serve(env) as base:
        ids = [
            str(_call(base, token, "POST", "/v1/conversations", {"title": "bench"})["id"]) for _ in range(8)
        ]
        paths = ", ".join(f'"/v1/conversations/{i}/messages"' for i in ids)
        rate, p50, p99 = _wrk(POST_LUA % (paths, token), base, seconds)
        scenario = "8 HTTP, wrk 8 connections"
        report.add(scenario, "POST 1 message req/s", "req/s", rate)
        report.add(scenario, "POST 1 message p50", "ms", p50)
        report.add(scenario, "POST 1 message p99", "ms", p99)
        url = f"{base}/v1/conversations/{ids[0]}/messages?limit=50&order=desc"
        rate, p50, p99 = _wrk(GET_LUA % token, url, seconds)
        report.add(scenario, "GET last 50 req/s", "req/s", rate)
        report.add(scenario, "GET last 50 p50", "ms", p50)
        report.add(scenario, "GET last 50 p99", "ms", p99)
