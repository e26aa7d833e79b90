"""Helpers shared by the API tests: tokens, problem checks, message builders."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt

SECRET = "test-secret-" + "x" * 60
Json = Any


def make_token(
    user: str,
    *,
    admin: bool = False,
    secret: str = SECRET,
    ttl: int = 600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user, "iat": now, "exp": now + ttl, **claims}
    if admin:
        payload["scope"] = "chatledger:admin"
    return jwt.encode(payload, secret, algorithm=algorithm)


def auth(user: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user, **kwargs)}"}


def is_problem(response: httpx.Response, status: int) -> bool:
    body = response.json()
    return (
        response.status_code == status
        and response.headers["content-type"].startswith("application/problem+json")
        and body["status"] == status
        and all(k in body for k in ("type", "title", "detail"))
    )


def tool_call(call_id: str, name: str = "lookup") -> dict[str, Json]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}
