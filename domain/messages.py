"""Incoming messages: parsing and the role/field rules and limits of DESIGN section 2."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidMessage, LimitExceeded
from .events import Role, ToolCall
from .limits import Limits


class NewMessage(BaseModel):
    """A message as a client sends it (Chat Completions shape plus chatledger's extras)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None
    token_count: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    raw: Any = None
    id: str | None = None


def parse_message(value: Mapping[str, Any] | NewMessage, limits: Limits, index: int = 0) -> NewMessage:
    """Parse and validate one message; raises `InvalidMessage` naming the offending field."""
    if isinstance(value, NewMessage):
        message = value
    else:
        try:
            message = NewMessage.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join([f"messages[{index}]", *(str(p) for p in first["loc"])])
            raise InvalidMessage(f"{field}: {first['msg']}", field=field) from None
    check_message(message, limits, index)
    return message


def check_message(m: NewMessage, limits: Limits, index: int = 0) -> None:
    at = f"messages[{index}]"
    _check_roles(m, at)
    _check_text(m, limits, at)  # first: the size checks below encode the text
    if m.content is not None and len(m.content.encode("utf-8")) > limits.max_content_bytes:
        raise LimitExceeded(
            f"{at}.content is larger than {limits.max_content_bytes} bytes of UTF-8", field=f"{at}.content"
        )
    if m.name is not None and len(m.name) > limits.max_name_chars:
        raise LimitExceeded(
            f"{at}.name is longer than {limits.max_name_chars} characters", field=f"{at}.name"
        )
    if m.token_count is not None and not 0 <= m.token_count <= limits.max_token_count:
        raise InvalidMessage(
            f"{at}.token_count must be between 0 and {limits.max_token_count}", field=f"{at}.token_count"
        )
    if m.tool_calls is not None and len(m.tool_calls) > limits.max_tool_calls:
        raise LimitExceeded(
            f"{at}.tool_calls has more than {limits.max_tool_calls} calls", field=f"{at}.tool_calls"
        )
    for i, call in enumerate(m.tool_calls or ()):
        if not call.id or len(call.id) > limits.max_id_chars:
            raise InvalidMessage(
                f"{at}.tool_calls[{i}].id must be 1 to {limits.max_id_chars} characters",
                field=f"{at}.tool_calls[{i}].id",
            )
    if m.tool_call_id is not None and (not m.tool_call_id or len(m.tool_call_id) > limits.max_id_chars):
        raise InvalidMessage(
            f"{at}.tool_call_id must be 1 to {limits.max_id_chars} characters", field=f"{at}.tool_call_id"
        )
    if m.id is not None and (not m.id or len(m.id) > limits.max_id_chars):
        raise InvalidMessage(f"{at}.id must be 1 to {limits.max_id_chars} characters", field=f"{at}.id")
    check_metadata(m.metadata, limits, f"{at}.metadata")
    if m.raw is not None:
        try:
            raw_text = json.dumps(m.raw, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidMessage(f"{at}.raw must be a JSON value", field=f"{at}.raw") from None
        if len(raw_text.encode("utf-8")) > limits.max_raw_bytes:
            raise LimitExceeded(f"{at}.raw is larger than {limits.max_raw_bytes} bytes", field=f"{at}.raw")


def _check_text(m: NewMessage, limits: Limits, at: str) -> None:
    # Unstorable text anywhere: the text fields directly, the nested ones walked (metadata is, in
    # check_metadata). Cheaper than walking a dump of the whole message, which a batch of 1000 messages felt.
    for name in ("content", "name", "tool_call_id", "id"):
        text = getattr(m, name)
        if text is not None:
            check_storable(text, f"{at}.{name}")
    if m.tool_calls:
        check_storable([call.model_dump(mode="json") for call in m.tool_calls], f"{at}.tool_calls")
    if m.raw is not None:
        check_storable(m.raw, f"{at}.raw", max_depth=limits.max_json_depth)


def _check_roles(m: NewMessage, at: str) -> None:
    if m.role != "assistant" and m.tool_calls is not None:
        raise InvalidMessage(
            f"{at}.tool_calls is only allowed on assistant messages", field=f"{at}.tool_calls"
        )
    if m.role != "tool" and m.tool_call_id is not None:
        raise InvalidMessage(
            f"{at}.tool_call_id is only allowed on tool messages", field=f"{at}.tool_call_id"
        )
    if m.role == "tool" and m.tool_call_id is None:
        raise InvalidMessage(f"{at}.tool_call_id is required on tool messages", field=f"{at}.tool_call_id")
    if m.role == "assistant" and m.tool_calls is not None and len(m.tool_calls) == 0:
        raise InvalidMessage(f"{at}.tool_calls must not be empty when given", field=f"{at}.tool_calls")
    if m.content is None and not (m.role == "assistant" and m.tool_calls):
        raise InvalidMessage(
            f"{at}.content may be null only on an assistant message that carries tool_calls",
            field=f"{at}.content",
        )
    ids = [c.id for c in m.tool_calls or ()]
    if len(ids) != len(set(ids)):
        raise InvalidMessage(f"{at}.tool_calls has repeated ids", field=f"{at}.tool_calls")


def check_metadata(metadata: Mapping[str, Any], limits: Limits, field: str = "metadata") -> None:
    """OpenAI's metadata limits: at most 16 keys, keys up to 64 chars, values up to 512 chars
    (non-string values are measured by their compact JSON text)."""
    if len(metadata) > limits.max_metadata_keys:
        raise LimitExceeded(f"{field} has more than {limits.max_metadata_keys} keys", field=field)
    for key, value in metadata.items():
        if len(key) > limits.max_metadata_key_chars:
            raise LimitExceeded(
                f"{field} key {key[:20]!r}… is longer than {limits.max_metadata_key_chars} characters",
                field=f"{field}.{key}",
            )
        text = value if isinstance(value, str) else _json_text(value, f"{field}.{key}")
        if len(text) > limits.max_metadata_value_chars:
            raise LimitExceeded(
                f"{field}.{key} is longer than {limits.max_metadata_value_chars} characters",
                field=f"{field}.{key}",
            )
    if metadata:
        check_storable(dict(metadata), field, max_depth=limits.max_json_depth + 1)


def _json_text(value: Any, field: str) -> str:
    """Compact JSON; NaN and Infinity are refused, since the stored JSON would turn them into null."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidMessage(f"{field} must be a JSON value", field=field) from None


# NUL: PostgreSQL cannot store U+0000 in text. Lone surrogates (U+D800-U+DFFF, which JSON's \ud800
# escapes can carry) are not Unicode scalar values: they have no UTF-8 form, so nothing could hash or
# store them faithfully.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_storable(value: Any, field: str, *, max_depth: int | None = None) -> None:
    """Text that cannot be stored as it was sent (NUL, lone surrogates) is refused everywhere, with a
    clear error: strings directly, mappings (keys too) and lists walked, at most `max_depth` deep."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is not None:
            raise InvalidMessage(_unstorable_reason(field, found.group()), field=field)
        return
    if not isinstance(value, Mapping | list | tuple):
        return
    if max_depth is not None and max_depth < 1:
        raise LimitExceeded(f"{field} is nested too deeply", field=field)
    deeper = None if max_depth is None else max_depth - 1
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_storable(key, field)
            check_storable(item, f"{field}.{key}", max_depth=deeper)
    else:
        for i, item in enumerate(value):
            check_storable(item, f"{field}[{i}]", max_depth=deeper)


MAX_USER_ID_CHARS = 255  # the width of every user_id and partition column


def check_user_id(user_id: object) -> str:
    """`user_id`, if it can be the acting user id: it is stored on every row the user writes and
    compared in every read."""
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID_CHARS:
        raise InvalidMessage(f"user_id must be 1 to {MAX_USER_ID_CHARS} characters", field="user_id")
    check_storable(user_id, "user_id")
    return user_id


def _unstorable_reason(field: str, char: str) -> str:
    if char == "\x00":
        return f"{field} contains a NUL character (U+0000), which cannot be stored"
    return f"{field} contains a lone surrogate (U+{ord(char):04X}), which is not valid Unicode text"
