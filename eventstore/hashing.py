"""Tamper evidence: `hash = sha256(prev_hash || canonical JSON of the envelope without hash)`.

Canonical JSON is `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` in UTF-8,
with `event_id` as a lowercase hyphenated UUID and `recorded_at` as RFC 3339 UTC with microseconds
(`2026-01-02T03:04:05.000006Z`). The hash covers the payload exactly as stored, before upcasting.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds; naive datetimes are taken as UTC (SQLite returns them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def envelope_for_hash(
    *,
    event_id: uuid.UUID,
    stream_id: str,
    stream_version: int,
    global_position: int,
    type: str,
    schema_version: int,
    data: Mapping[str, Any],
    metadata: Mapping[str, Any],
    recorded_at: datetime,
    prev_hash: str,
) -> dict[str, Any]:
    return {
        "event_id": str(event_id),
        "stream_id": stream_id,
        "stream_version": stream_version,
        "global_position": global_position,
        "type": type,
        "schema_version": schema_version,
        "data": data,
        "metadata": metadata,
        "recorded_at": format_time(recorded_at),
        "prev_hash": prev_hash,
    }


def chain_hash(prev_hash: str, envelope: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical_json(envelope).encode("utf-8"))
    return digest.hexdigest()
