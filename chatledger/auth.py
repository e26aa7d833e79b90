"""JWT bearer tokens, shared by the HTTP API (verification) and the CLI (`chatledger token`).

HS256 with `CHATLEDGER_JWT_SECRET`, or RS256 with `CHATLEDGER_JWT_PUBLIC_KEY` (PEM text or a path).
With neither configured, a secret is generated once into `data_dir/jwt_secret` (mode 0600), so a fresh
checkout can mint and verify tokens without any setup. Exactly one algorithm is accepted per
deployment, which rules out `alg: none` and HS/RS algorithm confusion.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from chatledger.domain import InvalidMessage, check_user_id
from chatledger.settings import Settings

ADMIN_SCOPE = "chatledger:admin"
SECRET_FILE = "jwt_secret"


class InvalidToken(Exception):
    """The bearer token is missing, malformed, expired or not signed by our key."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def secret_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / SECRET_FILE


def ensure_secret(settings: Settings) -> str | None:
    """The HS256 secret in use: configured, or read from (created once into) the data directory.
    None when an RS256 public key is configured instead."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.jwt_public_key:
        return None
    path = secret_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: several workers starting at once agree on whichever secret was written first.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    for _ in range(50):  # another process may have created the file but not yet written it
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.02)
    raise RuntimeError(f"JWT secret file {path} is empty")


def _public_key(value: str) -> str:
    return value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()


class TokenVerifier:
    """Verifies bearer tokens: HS256 with the secret, RS256 with the public key, or, when both are
    configured, each with its own key (the header's `alg` picks the key, never the other way round, so
    an HS256 token signed with the public key's text is refused)."""

    def __init__(self, settings: Settings) -> None:
        self._keys: dict[str, Any] = {}
        if settings.jwt_public_key:
            self._keys["RS256"] = _public_key(settings.jwt_public_key)
        secret = ensure_secret(settings)
        if secret is not None:
            self._keys["HS256"] = secret
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway_seconds

    def verify(self, token: str) -> Principal:
        try:
            algorithm = str(jwt.get_unverified_header(token).get("alg"))
            key = self._keys.get(algorithm)
            if key is None:
                raise InvalidToken(f"tokens signed with {algorithm!r} are not accepted")
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        try:
            user_id = check_user_id(claims.get("sub"))
        except InvalidMessage as exc:
            raise InvalidToken(f"the token's sub: {exc}") from None
        return Principal(user_id=user_id, scopes=_scopes(claims.get("scope")))


def _scopes(claim: Any) -> frozenset[str]:
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list):
        return frozenset(s for s in claim if isinstance(s, str))
    return frozenset()


def mint_token(settings: Settings, user_id: str, *, admin: bool = False, ttl_seconds: int = 3600) -> str:
    """An HS256 token for `user_id` (the CLI's `token` command). RS256 deployments mint tokens with
    their identity provider: we hold only the public key."""
    secret = ensure_secret(settings)
    if secret is None:
        raise InvalidToken("RS256 is configured (public key only): tokens come from your identity provider")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if admin:
        claims["scope"] = ADMIN_SCOPE
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, secret, algorithm="HS256")
