"""identity-model.md §7 rules without a store: what every store can hold, and typed errors only.

The rules run before anything is recorded, so a value refused here never reaches a store; one
that passes must be storable by all three (no NUL, valid text, 64-bit integers, times whose
conversion to UTC stays in range) and must never raise anything but ``InvalidCommand``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from idstitch.adapters.segment import decode, to_commands
from idstitch.domain import rules

from idstitch.errors import InvalidCommand

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"x": value}
    return value


def invalid(call: Any, *args: Any, **kwargs: Any) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize(("value", "where"), [
    ({"email": "a\x00@x.com"}, "traits.email"),
    ({"a": {"b": [1, "\x00"]}}, "traits.a"),
    ({"a\x00": 1}, "traits."),
    ({"a": {"\x00b": 1}}, "traits.a"),
    ({"bio": "x" * 2000 + "\x00"}, "traits.bio"),
])
def test_a_nul_anywhere_in_attributes_is_invalid(value: dict[str, Any], where: str) -> None:
    error = invalid(rules.check_attributes, "traits", value)
    assert error.field.startswith(where) and "NUL" in error.reason


def test_the_text_backslash_u0000_is_not_a_nul() -> None:
    # JSON writes NUL as \u0000: the quick search for it must not refuse the six characters.
    value = {"a": "\\u0000", "b": ["\\\\u0000"], "\\u0000": 1}
    assert rules.check_attributes("traits", value) == value


@pytest.mark.parametrize("levels", [1000, 10_000])
def test_nesting_of_any_depth_is_invalid_not_a_recursion_error(levels: int) -> None:
    error = invalid(rules.check_attributes, "traits", {"a": deep(levels)})
    assert error.field.startswith("traits.a") and "nested" in error.reason
    assert invalid(rules.check_attributes, "sdk", deep(levels)).field.startswith("sdk")


def test_a_deeply_nested_non_string_key_is_invalid_not_a_recursion_error() -> None:
    key: Any = ()
    for _ in range(10_000):
        key = (key,)
    assert invalid(rules.check_attributes, "traits", {key: 1}).field == "traits"


@pytest.mark.parametrize(("names", "why"), [
    (["a\x00"], "NUL"),
    (["\ud800"], "not valid text"),
    (["n" * 151], "150 bytes"),
    (["\u20ac" * 51], "150 bytes"),
])
def test_unset_names_follow_the_attribute_name_rules(names: list[Any], why: str) -> None:
    error = invalid(rules.check_keys, "unset", names)
    assert error.field == "unset" and why in error.reason


def test_an_unset_entry_of_any_depth_is_invalid_not_a_recursion_error() -> None:
    error = invalid(rules.check_keys, "unset", [deep(10_000)])
    assert error.field == "unset" and "must be a non-blank string" in error.reason


def test_unset_names_at_the_limit_are_accepted() -> None:
    assert rules.check_keys("unset", ["n" * 150, "\u20ac" * 50]) == ["n" * 150, "\u20ac" * 50]


@pytest.mark.parametrize("value", [
    datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
])
def test_a_time_that_leaves_the_range_in_utc_is_invalid(value: datetime) -> None:
    error = invalid(rules.check_time, "sent_at", value)
    assert error.field == "sent_at" and "range" in error.reason


def test_the_edges_of_the_range_are_valid_times() -> None:
    assert rules.check_time("timestamp", EARLIEST) == EARLIEST
    assert rules.check_time("timestamp", LATEST) == LATEST
    edge = datetime(9999, 12, 31, 18, 59, tzinfo=timezone(timedelta(hours=-5)))
    assert rules.check_time("timestamp", edge) == datetime(9999, 12, 31, 23, 59, tzinfo=UTC)


@pytest.mark.parametrize(("timestamp", "sent_at"), [(LATEST, EARLIEST), (EARLIEST, LATEST)])
def test_a_skew_correction_that_leaves_the_range_is_invalid(
    timestamp: datetime, sent_at: datetime
) -> None:
    error = invalid(rules.client_time, timestamp, sent_at, NOW)
    assert error.field == "sent_at" and "range" in error.reason


def test_a_skew_correction_inside_the_range_is_applied() -> None:
    assert rules.client_time(LATEST, LATEST, NOW) == NOW
    assert rules.client_time(NOW - timedelta(hours=1), NOW, NOW + timedelta(seconds=5)) == (
        NOW - timedelta(hours=1) + timedelta(seconds=5))


@pytest.mark.parametrize("levels", [1000, 100_000])
def test_a_line_nested_too_deep_for_the_decoder_is_invalid(levels: int) -> None:
    head = '{"type": "identify", "userId": "u1", "integrations": '
    line = head + "[" * levels + "]" * levels + "}"
    for raw in (line, line.encode()):
        error = invalid(decode, raw)
        assert error.field == "message" and "nested" in error.reason


@pytest.mark.parametrize("raw", [
    '{"type": "identify", "userId": "u\ud800"}',
    {"type": "identify\ud800", "userId": "u1"},
], ids=["str line", "dict"])
def test_a_lone_surrogate_the_decoder_must_encode_is_invalid(raw: str | dict[str, Any]) -> None:
    error = invalid(decode, raw)
    assert error.field == "message" and "not valid text" in error.reason


@pytest.mark.parametrize(("value", "field", "why"), [
    ({"a": {"": 1}}, "traits.a", "non-blank"),
    ({"a": {" \t": 1}}, "traits.a", "non-blank"),
    ({"a": [1, {"b": {"\n": 1}}]}, "traits.a[1].b", "non-blank"),
    ({"a": {"n" * 151: 1}}, "traits.a.nnn", "longer than 150 bytes"),
    ({"a": {"\u00e9" * 76: 1}}, "traits.a.\u00e9", "longer than 150 bytes"),
])
def test_nested_names_follow_the_name_rules_at_any_depth(
    value: dict[str, Any], field: str, why: str
) -> None:
    # Both paths: an object small enough for the fast walk, and one past the value limit.
    for padded in (value, {**value, "pad": "x" * 990}):
        error = invalid(rules.check_attributes, "traits", padded)
        assert error.field.startswith(field) and why in error.reason, error


def test_nested_names_at_the_limit_are_valid() -> None:
    value = {"a": {"n" * 150: {"\u00e9" * 75: [{"k": 1}]}}}
    assert rules.check_attributes("traits", value) == value


@pytest.mark.parametrize("length", [151, 1000, 1001, 10_000])
def test_a_message_id_over_150_bytes_is_refused_with_that_limit(length: int) -> None:
    error = invalid(rules.check_message_id, "m" * length)
    assert (error.field, error.reason) == ("message_id", "is longer than 150 bytes")
    error = invalid(rules.check_message_id, "\u00e9" * (length // 2 + 1))
    assert (error.field, error.reason) == ("message_id", "is longer than 150 bytes")


@pytest.mark.parametrize("message_id", ["m" * 140, "m" * 141, "m" * 150, "\u00e9" * 75])
def test_the_ids_of_a_device_message_s_parts_stay_within_the_limit(message_id: str) -> None:
    raw = {"type": "track", "event": "Device Created or Updated", "messageId": message_id,
           "properties": {"device_os": "18", "prefs": "dark"},
           "context": {"device": {"id": "d", "token": "t"}}}
    commands = to_commands(decode(raw))
    assert commands is not None and len(commands) == 3
    ids = [c.message_id for c in commands]
    assert ids[0] == message_id and len(set(ids)) == 3
    for derived in ids:
        assert rules.check_message_id(derived) == derived
    # The same message gives the same ids: re-ingesting it de-duplicates every part.
    assert [c.message_id for c in to_commands(decode(raw)) or []] == ids
    if len(message_id) + len("#collected") <= 150 and message_id.isascii():
        assert ids[1:] == [message_id + "#collected", message_id + "#custom"]


def test_a_number_out_of_a_float_s_range_is_reported_where_it_is() -> None:
    line = '{"type": "identify", "userId": "u", "traits": {"a": {"b": [1, 1e400]}}}'
    error = invalid(decode, line)
    assert error.field == "traits.a.b[1]" and "out of range" in error.reason
    assert invalid(decode, line.encode()).field == "traits.a.b[1]"
