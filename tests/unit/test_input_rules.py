"""identity-model.md §7 rules without a store: what every store can hold, and typed errors only.

The rules run before anything is recorded, so a value refused here never reaches a store; one
that passes must be storable by all three (no NUL, valid text, 64-bit integers, times whose
conversion to UTC stays in range) and must never raise anything but ``InvalidCommand``.
"""

from __future__ import annotations

from typing import Any

import pytest
from idstitch.adapters.segment import decode
from idstitch.domain import rules

from idstitch.errors import InvalidCommand


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"x": value}
    return value


def invalid(call: Any, *args: Any, **kwargs: Any) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as caught:
        call(*args, **kwargs)
    return caught.value


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


def test_an_unset_entry_of_any_depth_is_invalid_not_a_recursion_error() -> None:
    error = invalid(rules.check_keys, "unset", [deep(10_000)])
    assert error.field == "unset" and "must be a non-blank string" in error.reason


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
