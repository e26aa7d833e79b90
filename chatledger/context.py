"""Per-request facts that travel into event metadata without widening every signature."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("chatledger_request_id", default=None)
