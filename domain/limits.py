"""Configurable limits, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_content_bytes: int = 1024 * 1024
    max_messages_per_call: int = 100
    max_metadata_keys: int = 16
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    max_title_chars: int = 512
    max_name_chars: int = 256
    max_tool_calls: int = 128
    max_id_chars: int = 256
    max_raw_bytes: int = 1024 * 1024
    max_json_depth: int = 64
    """Nesting of `raw` and metadata values: far beyond any provider item, well within what the JSON
    serialisers on the write path handle."""
    max_token_count: int = 2**31 - 1


DEFAULT_LIMITS = Limits()
