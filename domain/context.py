"""The agent-ready context window (DESIGN sections 4 and 9), as a pure function.

Pinned = the leading run of system messages: always returned, not counted against `max_messages`,
counted against `max_tokens`. First a trailing tool group whose calls are not all answered is set
aside; then the longest suffix of the rest within both limits is taken and shrunk from its front until
it starts on a tool-group boundary. Finally any group that a removal left incomplete earlier in the
window is dropped, so the window is always valid model input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from .conversation import Message

MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(message: Message) -> int:
    """The stored `token_count`, else ~4 characters per token plus a per-message overhead
    (OpenAI's rule of thumb; exact counts need the model's tokenizer, which the client has)."""
    if message.token_count is not None:
        return message.token_count
    chars = len(message.content or "") + len(message.name or "")
    for call in message.tool_calls or ():
        chars += len(call.function.name) + len(call.function.arguments)
    return math.ceil(chars / 4) + MESSAGE_OVERHEAD_TOKENS


def split_pinned(history: Sequence[Message]) -> tuple[list[Message], list[Message]]:
    n = 0
    while n < len(history) and history[n].role == "system":
        n += 1
    return list(history[:n]), list(history[n:])


def context_window(
    history: Sequence[Message], *, max_messages: int | None = None, max_tokens: int | None = None
) -> list[Message]:
    """The window over a whole visible history in chronological order."""
    pinned, rest = split_pinned(history)
    window = window_from_suffix(pinned, rest, complete=True, max_messages=max_messages, max_tokens=max_tokens)
    assert window is not None
    return window


def window_from_suffix(
    pinned: Sequence[Message],
    suffix: Sequence[Message],
    *,
    complete: bool,
    max_messages: int | None = None,
    max_tokens: int | None = None,
) -> list[Message] | None:
    """The window given the pinned messages and a chronological suffix of the rest of the history.

    When `complete` is False (older messages exist before `suffix`), returns None if the answer
    could depend on them, so the caller can load a longer suffix; the answer never differs from
    the one over the whole history.
    """
    body = _without_trailing_open_group(list(suffix))
    if body is None:
        return None if not complete else list(pinned)
    budget = None if max_tokens is None else max_tokens - sum(estimate_tokens(m) for m in pinned)
    if budget is not None and budget < 0:
        return list(pinned)
    start, used = len(body), 0
    while start > 0:
        if max_messages is not None and len(body) - start >= max_messages:
            break
        cost = estimate_tokens(body[start - 1])
        if budget is not None and used + cost > budget:
            break
        used += cost
        start -= 1
    if start == 0 and not complete:
        return None  # the limits were not reached inside the suffix: older messages might fit too
    chosen = body[start:]
    while chosen and chosen[0].role == "tool":
        chosen.pop(0)
    return list(pinned) + _drop_incomplete_groups(chosen)


def _without_trailing_open_group(body: list[Message]) -> list[Message] | None:
    """`body` minus a trailing assistant tool-call group that still waits for answers; None when the
    group's assistant message is not inside `body` (the caller must look further back)."""
    while True:
        i = len(body)
        while i > 0 and body[i - 1].role == "tool":
            i -= 1
        if i == 0:
            return None if body else []
        head = body[i - 1]
        if not head.tool_calls:
            return body
        answered = {m.tool_call_id for m in body[i:]}
        if all(c.id in answered for c in head.tool_calls):
            return body
        # A pending group may span several assistant messages (one call each, as Responses API items
        # come), so what is left may end in another pending call: set that aside too.
        body = body[: i - 1]


def _drop_incomplete_groups(window: list[Message]) -> list[Message]:
    calls_in = {c.id for m in window for c in m.tool_calls or ()}
    answers = {m.tool_call_id for m in window if m.role == "tool"}
    broken = {m.message_id for m in window if m.tool_calls and any(c.id not in answers for c in m.tool_calls)}
    broken_calls = {c.id for m in window if m.message_id in broken for c in m.tool_calls or ()}
    return [
        m
        for m in window
        if m.message_id not in broken
        and not (m.role == "tool" and (m.tool_call_id not in calls_in or m.tool_call_id in broken_calls))
    ]


def to_chat_format(message: Message) -> dict[str, Any]:
    """A Chat Completions message: only the fields the API accepts, omitting empty ones."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [json.loads(c.model_dump_json()) for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out
