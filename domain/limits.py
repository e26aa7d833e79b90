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


DEFAULT_LIMITS = Limits()
