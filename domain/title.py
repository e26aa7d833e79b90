"""Titles derived from the first user message, and RFC 7396 JSON Merge Patch for metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TITLE_CHARS = 60


def derive_title(content: str | None, limit: int = TITLE_CHARS) -> str | None:
    """The first ~`limit` characters of `content`, whitespace collapsed, cut on a word boundary."""
    text = " ".join((content or "").split())
    if not text:
        return None
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    space = cut.rfind(" ")
    # A single very long word has no boundary to cut on; a hard cut beats an empty title.
    return cut[:space].rstrip() if space > limit // 3 else text[:limit]


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 (https://www.rfc-editor.org/rfc/rfc7396): null removes a key, objects merge."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            current = result.get(key)
            result[key] = merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            result[key] = value
    return result
