"""Role/field rules and limits of incoming messages (DESIGN section 2)."""

from __future__ import annotations

from typing import Any

import pytest

from chatledger.domain import (
    DEFAULT_LIMITS,
    InvalidMessage,
    LimitExceeded,
    Limits,
    NewMessage,
    check_metadata,
    parse_message,
)

SMALL = Limits(max_content_bytes=10, max_name_chars=8, max_tool_calls=2, max_id_chars=8, max_raw_bytes=20)
CALL: dict[str, Any] = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def rejects(
    value: Any, field: str, *, limits: Limits = DEFAULT_LIMITS, limit: bool = False
) -> InvalidMessage:
    """Parsing `value` fails with the given `field`; `limit` says whether it must be a LimitExceeded."""
    with pytest.raises(InvalidMessage) as info:
        parse_message(value, limits)
    assert info.value.field == field, info.value
    assert isinstance(info.value, LimitExceeded) is limit, info.value
    assert str(info.value)
    return info.value


# --- valid shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi", "name": "alice", "metadata": {"k": "v"}},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "hello"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "assistant", "content": "let me look", "tool_calls": [CALL]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "user", "content": "x", "raw": {"type": "message", "content": [{"text": "x"}]}},
        {"role": "user", "content": "x", "token_count": 0, "id": "m-1"},
    ],
)
def test_valid_messages_parse(value: dict[str, Any]) -> None:
    message = parse_message(value, DEFAULT_LIMITS)
    assert message.role == value["role"]
    assert message.content == value["content"]


def test_tool_calls_parse_to_the_openai_shape() -> None:
    message = parse_message({"role": "assistant", "content": None, "tool_calls": [CALL]}, DEFAULT_LIMITS)
    assert message.tool_calls is not None
    assert message.tool_calls[0].model_dump() == CALL


def test_a_new_message_instance_is_checked_too() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_message(NewMessage(role="user"), DEFAULT_LIMITS)
    assert info.value.field == "messages[0].content"


def test_field_names_carry_the_index_in_the_batch() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_message({"role": "user", "content": None}, DEFAULT_LIMITS, index=3)
    assert info.value.field == "messages[3].content"


# --- role/field combinations ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["system", "user", "tool"])
def test_content_may_not_be_null_outside_assistant_tool_calls(role: str) -> None:
    value: dict[str, Any] = {"role": role, "content": None}
    if role == "tool":
        value["tool_call_id"] = "c1"
    rejects(value, "messages[0].content")


def test_assistant_content_may_not_be_null_without_tool_calls() -> None:
    rejects({"role": "assistant", "content": None}, "messages[0].content")
    rejects({"role": "assistant"}, "messages[0].content")


@pytest.mark.parametrize("role", ["system", "user", "tool"])
def test_tool_calls_only_on_assistant(role: str) -> None:
    value: dict[str, Any] = {"role": role, "content": "x", "tool_calls": [CALL]}
    if role == "tool":
        value["tool_call_id"] = "c1"
    rejects(value, "messages[0].tool_calls")


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_tool_call_id_only_on_tool(role: str) -> None:
    rejects({"role": role, "content": "x", "tool_call_id": "c1"}, "messages[0].tool_call_id")


def test_tool_call_id_required_on_tool() -> None:
    rejects({"role": "tool", "content": "42"}, "messages[0].tool_call_id")
    rejects({"role": "tool", "content": "42", "tool_call_id": ""}, "messages[0].tool_call_id")


def test_empty_tool_calls_list_is_rejected() -> None:
    rejects({"role": "assistant", "content": "x", "tool_calls": []}, "messages[0].tool_calls")
    rejects({"role": "assistant", "content": None, "tool_calls": []}, "messages[0].tool_calls")


def test_repeated_call_ids_in_one_message_are_rejected() -> None:
    rejects({"role": "assistant", "content": None, "tool_calls": [CALL, CALL]}, "messages[0].tool_calls")


def test_call_ids_must_not_be_empty() -> None:
    bad = {**CALL, "id": ""}
    rejects({"role": "assistant", "content": None, "tool_calls": [bad]}, "messages[0].tool_calls[0].id")


# --- limits ---------------------------------------------------------------------------------------------


def test_content_limit_is_inclusive() -> None:
    assert parse_message({"role": "user", "content": "x" * 10}, SMALL).content == "x" * 10
    rejects({"role": "user", "content": "x" * 11}, "messages[0].content", limits=SMALL, limit=True)


@pytest.mark.parametrize(
    ("content", "fits"),
    [
        ("é" * 5, True),
        ("é" * 6, False),
        ("€" * 3, True),
        ("€" * 4, False),
        ("😀" * 2, True),
        ("😀" * 3, False),
    ],
)
def test_content_is_measured_in_utf8_bytes(content: str, fits: bool) -> None:
    assert len(content) <= 10  # every case fits in characters: only the byte count can reject it
    value = {"role": "user", "content": content}
    if fits:
        parse_message(value, SMALL)
    else:
        rejects(value, "messages[0].content", limits=SMALL, limit=True)


def test_default_content_limit_is_one_mebibyte() -> None:
    parse_message({"role": "user", "content": "x" * 1024 * 1024}, DEFAULT_LIMITS)
    rejects({"role": "user", "content": "x" * (1024 * 1024 + 1)}, "messages[0].content", limit=True)


def test_name_tool_calls_and_raw_limits() -> None:
    rejects({"role": "user", "content": "x", "name": "n" * 9}, "messages[0].name", limits=SMALL, limit=True)
    calls = [{**CALL, "id": f"c{i}"} for i in range(3)]
    rejects(
        {"role": "assistant", "content": None, "tool_calls": calls},
        "messages[0].tool_calls",
        limits=SMALL,
        limit=True,
    )
    rejects({"role": "user", "content": "x", "raw": "r" * 30}, "messages[0].raw", limits=SMALL, limit=True)


def test_json_nesting_is_bounded() -> None:
    def nested(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = {"k": value}
        return value

    limits = Limits(max_json_depth=3)
    parse_message({"role": "user", "content": "x", "raw": nested(3)}, limits)
    rejects(
        {"role": "user", "content": "x", "raw": nested(4)}, "messages[0].raw.k.k.k", limits=limits, limit=True
    )
    # metadata values count from the value, as raw does from itself
    parse_message({"role": "user", "content": "x", "metadata": {"m": nested(3)}}, limits)
    rejects(
        {"role": "user", "content": "x", "metadata": {"m": nested(4)}},
        "messages[0].metadata.m.k.k.k",
        limits=limits,
        limit=True,
    )


def test_token_count_fits_the_stored_integer() -> None:
    parse_message({"role": "user", "content": "x", "token_count": 2**31 - 1}, DEFAULT_LIMITS)
    rejects({"role": "user", "content": "x", "token_count": 2**31}, "messages[0].token_count")


def test_ids_are_bounded() -> None:
    long_call = {**CALL, "id": "c" * 9}
    rejects(
        {"role": "assistant", "content": None, "tool_calls": [long_call]},
        "messages[0].tool_calls[0].id",
        limits=SMALL,
    )
    rejects(
        {"role": "tool", "content": "x", "tool_call_id": "c" * 9}, "messages[0].tool_call_id", limits=SMALL
    )
    rejects({"role": "user", "content": "x", "id": "m" * 9}, "messages[0].id", limits=SMALL)
    rejects({"role": "user", "content": "x", "id": ""}, "messages[0].id")


@pytest.mark.parametrize("raw", [{"blob": b"\x01"}, {"n": float("nan")}, [float("inf")], {1, 2}])
def test_raw_must_be_json(raw: Any) -> None:
    # NaN and Infinity are not JSON: the stored payload would silently turn them into null
    rejects({"role": "user", "content": "x", "raw": raw}, "messages[0].raw")


@pytest.mark.parametrize("value", [float("nan"), float("-inf"), [float("inf")], {"b": b"x"}])
def test_metadata_values_must_be_json(value: Any) -> None:
    rejects({"role": "user", "content": "x", "metadata": {"k": value}}, "messages[0].metadata.k")


def test_negative_token_count_is_rejected() -> None:
    rejects({"role": "user", "content": "x", "token_count": -1}, "messages[0].token_count")


def test_metadata_key_count() -> None:
    sixteen = {f"k{i}": "v" for i in range(16)}
    parse_message({"role": "user", "content": "x", "metadata": sixteen}, DEFAULT_LIMITS)
    seventeen = {**sixteen, "k16": "v"}
    rejects({"role": "user", "content": "x", "metadata": seventeen}, "messages[0].metadata", limit=True)


def test_metadata_key_length() -> None:
    parse_message({"role": "user", "content": "x", "metadata": {"k" * 64: "v"}}, DEFAULT_LIMITS)
    key = "k" * 65
    rejects(
        {"role": "user", "content": "x", "metadata": {key: "v"}}, f"messages[0].metadata.{key}", limit=True
    )


@pytest.mark.parametrize(
    ("fits", "too_long"),
    [
        ("v" * 512, "v" * 513),
        ("é" * 512, "é" * 513),  # characters, not bytes
        (int("9" * 512), int("9" * 513)),
        (["x" * 508], ["x" * 509]),  # compact JSON: ["...."] is 4 characters more
        ({"a": "x" * 504}, {"a": "x" * 505}),  # {"a":"..."} is 8 characters more
        (["é" * 508], ["é" * 509]),  # non-ASCII in a non-string value counts as characters, not \\u escapes
    ],
)
def test_metadata_value_length(fits: Any, too_long: Any) -> None:
    parse_message({"role": "user", "content": "x", "metadata": {"k": fits}}, DEFAULT_LIMITS)
    rejects(
        {"role": "user", "content": "x", "metadata": {"k": too_long}}, "messages[0].metadata.k", limit=True
    )


def test_metadata_limits_are_configurable() -> None:
    limits = Limits(max_metadata_keys=1, max_metadata_key_chars=2, max_metadata_value_chars=3)
    check_metadata({"ab": "xyz"}, limits)
    for metadata in ({"a": "x", "b": "y"}, {"abc": "x"}, {"a": "wxyz"}, {"a": 1234}):
        with pytest.raises(LimitExceeded):
            check_metadata(metadata, limits)


def test_check_metadata_names_its_field() -> None:
    with pytest.raises(LimitExceeded) as info:
        check_metadata({"k": "v" * 513}, DEFAULT_LIMITS)
    assert info.value.field == "metadata.k"
    with pytest.raises(LimitExceeded) as info:
        check_metadata({"k": "v" * 513}, DEFAULT_LIMITS, "conversation.metadata")
    assert info.value.field == "conversation.metadata.k"


# --- NUL and lone surrogates ------------------------------------------------------------------------

NUL_CASES: list[tuple[dict[str, Any], str]] = [
    ({"role": "user", "content": "a\x00b"}, "messages[0].content"),
    ({"role": "user", "content": "x", "name": "a\x00"}, "messages[0].name"),
    ({"role": "user", "content": "x", "metadata": {"k\x00": "v"}}, "messages[0].metadata"),
    ({"role": "user", "content": "x", "metadata": {"k": "\x00"}}, "messages[0].metadata.k"),
    (
        {"role": "user", "content": "x", "metadata": {"k": {"deep": ["\x00"]}}},
        "messages[0].metadata.k.deep[0]",
    ),
    (
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "\x00"}}],
        },
        "messages[0].tool_calls[0].function.arguments",
    ),
    (
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**CALL, "function": {"name": "f\x00", "arguments": ""}}],
        },
        "messages[0].tool_calls[0].function.name",
    ),
    ({"role": "user", "content": "x", "raw": "\x00"}, "messages[0].raw"),
    (
        {"role": "user", "content": "x", "raw": {"items": [{"text": "a\x00"}]}},
        "messages[0].raw.items[0].text",
    ),
    ({"role": "user", "content": "x", "raw": {"k\x00": 1}}, "messages[0].raw"),
    ({"role": "tool", "content": "x", "tool_call_id": "c\x00"}, "messages[0].tool_call_id"),
    ({"role": "user", "content": "x", "id": "m\x00"}, "messages[0].id"),
]


@pytest.mark.parametrize(("value", "field"), NUL_CASES)
def test_nul_is_rejected_everywhere(value: dict[str, Any], field: str) -> None:
    error = rejects(value, field)
    assert "NUL" in str(error)


def _nul_to(value: Any, char: str) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", char)
    if isinstance(value, dict):
        return {_nul_to(k, char): _nul_to(v, char) for k, v in value.items()}
    if isinstance(value, list):
        return [_nul_to(v, char) for v in value]
    return value


@pytest.mark.parametrize("char", ["\ud800", "\udfff"])
@pytest.mark.parametrize(("value", "field"), NUL_CASES)
def test_lone_surrogates_are_rejected_everywhere(value: dict[str, Any], field: str, char: str) -> None:
    # JSON can carry them as escapes; they have no UTF-8 form, so nothing could store or hash them.
    error = rejects(_nul_to(value, char), field)
    assert "surrogate" in str(error)


def test_paired_surrogates_are_ordinary_text() -> None:
    # Decoded JSON joins a pair into one character: an emoji is a single code point, not a surrogate.
    parsed = parse_message({"role": "user", "content": "hi \U0001f600"}, DEFAULT_LIMITS)
    assert parsed.content == "hi \U0001f600"


# --- wrong types and shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"role": "developer", "content": "x"}, "messages[0].role"),
        ({"content": "x"}, "messages[0].role"),
        ({"role": "user", "content": 5}, "messages[0].content"),
        ({"role": "user", "content": ["a"]}, "messages[0].content"),
        ({"role": "user", "content": "x", "token_count": "many"}, "messages[0].token_count"),
        ({"role": "user", "content": "x", "metadata": ["k"]}, "messages[0].metadata"),
        ({"role": "assistant", "content": None, "tool_calls": "f()"}, "messages[0].tool_calls"),
        ({"role": "assistant", "content": None, "tool_calls": {"id": "c1"}}, "messages[0].tool_calls"),
        (
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
            "messages[0].tool_calls.0.function",
        ),
        (
            {"role": "assistant", "content": None, "tool_calls": [{**CALL, "type": "code"}]},
            "messages[0].tool_calls.0.type",
        ),
        (
            {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {"name": "f"}}]},
            "messages[0].tool_calls.0.function.arguments",
        ),
        ({"role": "user", "content": "x", "colour": "red"}, "messages[0].colour"),
        (
            {"role": "assistant", "content": None, "tool_calls": [{**CALL, "extra": 1}]},
            "messages[0].tool_calls.0.extra",
        ),
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "", "x": 1}}],
            },
            "messages[0].tool_calls.0.function.x",
        ),
    ],
)
def test_wrong_types_and_unknown_fields(value: dict[str, Any], field: str) -> None:
    rejects(value, field)


@pytest.mark.parametrize("value", [5, "hello", ["role", "user"], None])
def test_a_message_must_be_an_object(value: Any) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_message(value, DEFAULT_LIMITS)
    assert info.value.field is not None and info.value.field.startswith("messages[0]")
