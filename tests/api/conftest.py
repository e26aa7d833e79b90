"""Fixtures for the HTTP API: real uvicorn processes (one per backend per session) and an in-process
app for the many small cases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatledger.api.app import create_app
from chatledger.settings import Settings

from .support import SECRET, auth

UVICORN = [sys.executable, "-m", "uvicorn", "chatledger.api.app:create_app", "--factory"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A uvicorn process serving `create_app` on a free port."""

    url: str
    database_url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(database_url: str, workdir: Path, *, deadline: float = 60.0, **env: str) -> Server:
    port = free_port()
    environment = {
        **os.environ,
        "CHATLEDGER_DATABASE_URL": database_url,
        "CHATLEDGER_JWT_SECRET": SECRET,
        "CHATLEDGER_DATA_DIR": str(workdir / "data"),
        "CHATLEDGER_RETRY_AFTER_SECONDS": "3",
        "CHATLEDGER_POOL_TIMEOUT": "3",
        **env,
    }
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*UVICORN, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=workdir,
        )
    server = Server(f"http://127.0.0.1:{port}", database_url, process, log, env)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not answer /healthz within {deadline}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("sqlite-server")
    server = start_server(f"sqlite+aiosqlite:///{workdir / 'api.db'}", workdir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(pg_url, tmp_path_factory.mktemp("pg-server"))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest) -> Server:
    """A real server process, once per backend."""
    fixture = "sqlite_server" if request.param == "sqlite" else "pg_server"
    started: Server = request.getfixturevalue(fixture)
    return started


ClientFor = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_for(server: Server) -> AsyncIterator[ClientFor]:
    """`client_for(user, admin=False)`: an AsyncClient on the real server, authenticated as `user`."""
    clients: list[httpx.AsyncClient] = []

    def make(user: str | None, **token: Any) -> httpx.AsyncClient:
        headers = auth(user, **token) if user is not None else {}
        c = httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'inproc.db'}",
        jwt_secret=SECRET,
        data_dir=tmp_path / "data",
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
async def inproc(test_settings: Settings) -> AsyncIterator[ClientFor]:
    """Like `client_for`, on an in-process app (ASGI transport) over a fresh SQLite file."""
    app = create_app(test_settings)
    clients: list[httpx.AsyncClient] = []
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def make(user: str | None, **token: Any) -> httpx.AsyncClient:
        headers = auth(user, **token) if user is not None else {}
        c = httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)
        clients.append(c)
        return c

    async with app.router.lifespan_context(app):
        yield make
        for c in clients:
            await c.aclose()


@pytest.fixture
def alice() -> str:
    return f"alice-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bob() -> str:
    return f"bob-{uuid.uuid4().hex[:8]}"
