"""Bearer JWT: HS256 or RS256, exp required, one algorithm accepted, audience/issuer when set."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chatledger.api.app import create_app
from chatledger.auth import mint_token
from chatledger.settings import Settings

from .conftest import ClientFor
from .support import SECRET, is_problem, make_token


def _unsigned(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def _status(client: httpx.AsyncClient, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await client.get("/v1/conversations", headers=headers)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="none"),
        pytest.param("not.a.jwt", id="malformed"),
        pytest.param("garbage", id="garbage"),
        pytest.param(make_token("alice", secret="wrong-" + "y" * 40), id="wrong-signature"),
        pytest.param(make_token("alice", ttl=-600), id="expired"),
        pytest.param(make_token("alice", ttl=-2), id="expired-seconds-ago"),
        pytest.param(_unsigned({"sub": "alice", "exp": 9999999999}), id="alg-none"),
        pytest.param(jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), id="no-exp"),
        pytest.param(jwt.encode({"sub": "", "exp": 9999999999}, SECRET, algorithm="HS256"), id="empty-sub"),
        pytest.param(make_token("alice", algorithm="HS512"), id="other-algorithm"),
        pytest.param(jwt.encode({"sub": "a\u0000", "exp": 9999999999}, SECRET), id="NUL-in-sub"),
        pytest.param(make_token("u" * 256), id="sub-wider-than-its-column"),
    ],
)
async def test_bad_tokens_are_401(inproc: ClientFor, token: str | None) -> None:
    r = await _status(inproc(None), token)
    assert is_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_basic_scheme_is_401(inproc: ClientFor) -> None:
    r = await inproc(None).get("/v1/conversations", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert is_problem(r, 401)


async def test_unauthenticated_routes(inproc: ClientFor) -> None:
    c = inproc(None)
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert (await c.get(path)).status_code == 200, path


@pytest.fixture
async def strict_app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        jwt_secret=SECRET,
        jwt_audience="chatledger-api",
        jwt_issuer="https://issuer.example",
        data_dir=tmp_path,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_audience_and_issuer_when_configured(strict_app: httpx.AsyncClient) -> None:
    good = make_token("alice", aud="chatledger-api", iss="https://issuer.example")
    assert (await _status(strict_app, good)).status_code == 200
    for token in (
        make_token("alice", aud="other", iss="https://issuer.example"),
        make_token("alice", aud="chatledger-api", iss="https://evil.example"),
        make_token("alice"),
    ):
        assert is_problem(await _status(strict_app, token), 401)


async def test_rs256_and_algorithm_confusion(tmp_path: Path) -> None:
    key, public_pem = _rsa_key_pair()
    (tmp_path / "pub.pem").write_bytes(public_pem)
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}",
        jwt_public_key=str(tmp_path / "pub.pem"),
        data_dir=tmp_path,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            good = jwt.encode({"sub": "alice", "exp": 9999999999}, key, algorithm="RS256")
            assert (await _status(c, good)).status_code == 200
            # HS256 signed with the public key as the secret: the classic confusion attack.
            forged = _hs256_with_key(public_pem)
            assert is_problem(await _status(c, forged), 401)
            assert is_problem(await _status(c, make_token("alice")), 401)
    assert not (tmp_path / "jwt_secret").exists()  # RS256: no secret generated


async def test_secret_and_public_key_together_each_verify_their_own_algorithm(tmp_path: Path) -> None:
    key, public_pem = _rsa_key_pair()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
        jwt_secret=SECRET,
        jwt_public_key=public_pem.decode(),
        data_dir=tmp_path,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs256 = jwt.encode({"sub": "alice", "exp": 9999999999}, key, algorithm="RS256")
            assert (await _status(c, rs256)).status_code == 200
            assert (await _status(c, make_token("alice"))).status_code == 200
            assert is_problem(await _status(c, _hs256_with_key(public_pem)), 401)
            wrong_rsa, _ = _rsa_key_pair()
            forged = jwt.encode({"sub": "alice", "exp": 9999999999}, wrong_rsa, algorithm="RS256")
            assert is_problem(await _status(c, forged), 401)


def _rsa_key_pair() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public_pem


def _hs256_with_key(secret: bytes) -> str:
    import hashlib
    import hmac

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': 'alice', 'exp': 9999999999})}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


async def test_generated_secret_when_none_configured(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", data_dir=tmp_path / "data")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        secret_file = tmp_path / "data" / "jwt_secret"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        token = mint_token(settings, "alice", admin=True, ttl_seconds=60)
        assert jwt.decode(token, secret_file.read_text(), algorithms=["HS256"])["scope"] == "chatledger:admin"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await _status(c, token)).status_code == 200


async def test_admin_reads_any_audit_trail_but_not_current_state(inproc: ClientFor, alice: str) -> None:
    cid = (await inproc(alice).post("/v1/conversations", json={"title": "t"})).json()["id"]
    admin = inproc("ops", admin=True)
    assert (await admin.get(f"/v1/conversations/{cid}/events")).status_code == 200
    assert (await admin.get(f"/v1/conversations/{cid}/verify")).json()["ok"] is True
    assert (await admin.get(f"/v1/conversations/{cid}", params={"at_version": 1})).json()["title"] == "t"
    assert is_problem(await admin.get(f"/v1/conversations/{cid}", params={"at_version": 2}), 404)
    assert is_problem(await admin.get(f"/v1/conversations/{cid}/messages"), 404)
    assert is_problem(await inproc("ops").get(f"/v1/conversations/{cid}/events"), 404)
