"""One settings object, read from the environment with the `CHATLEDGER_` prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatledger.domain import Limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATLEDGER_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./chatledger.db"
    pool_size: int = Field(10, ge=1)
    max_overflow: int = Field(10, ge=0)
    pool_timeout: float = Field(5.0, gt=0)

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".chatledger")
    """Where `make run` keeps its generated JWT secret (file mode 0600)."""

    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    """PEM text, or a path to a PEM file, for RS256 tokens."""
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = Field(0, ge=0)
    """Clock skew allowed on `exp`, `nbf` and `iat`; 0: an expired token is refused at once."""

    max_content_bytes: int = 1024 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    max_messages_per_call: int = 100
    max_metadata_keys: int = 16
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    idempotency_ttl_hours: int = 24
    head_cache_size: int = Field(10_000, ge=0)
    """Conversations whose head this process remembers after appending (see chatledger/heads.py);
    0 turns the memory off."""
    upcasters: str | None = None
    """`module:function` called with the store's `UpcasterRegistry` when a ledger opens, so `serve`,
    the CLI (replay, rebuild, verify) and the library all read an old log in its current shape."""
    retry_after_seconds: int = 2
    log_level: str = "INFO"

    @property
    def limits(self) -> Limits:
        return Limits(
            max_content_bytes=self.max_content_bytes,
            max_messages_per_call=self.max_messages_per_call,
            max_metadata_keys=self.max_metadata_keys,
            max_metadata_key_chars=self.max_metadata_key_chars,
            max_metadata_value_chars=self.max_metadata_value_chars,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
