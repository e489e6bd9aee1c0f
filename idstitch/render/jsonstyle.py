"""The one JSON style of everything idstitch prints or writes for a reader.

Compact (no spaces after ``,`` and ``:``), keys in sorted order at every depth, UTF-8 text as
it is (no ``\\u`` escapes), times as ISO-8601 strings in UTC with a ``Z``; a stream of
documents (``export``, a rejects file) is one document a line (NDJSON). The same value always
prints the same bytes, so outputs can be diffed, hashed and compared.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder(order="sorted", enc_hook=str)


def to_json_bytes(value: Any) -> bytes:
    """``value`` as JSON in the house style (see the module), as bytes."""
    return _ENCODER.encode(value)


def to_json(value: Any) -> str:
    """``value`` as JSON in the house style (see the module)."""
    return _ENCODER.encode(value).decode()


_OVERRIDES = r"\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(rf"[\x00-\x1f{_OVERRIDES}]")
_CONTROL_IN_LINES = re.compile(rf"[\x00-\x08\x0b-\x1f{_OVERRIDES}]")


def _escaped(found: re.Match[str]) -> str:
    return found.group().encode("unicode_escape").decode("ascii")


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` safe to show on a terminal: a control character (an escape sequence that SDK
    traffic carried into a value, a line break that would start a line of its own, a
    bidirectional override) shown as its escape, ``\x1b``, ``\n``, ``\u202e``, as Python
    writes them. ``lines``: line breaks and tabs kept (text laid out already)."""
    pattern = _CONTROL_IN_LINES if lines else _CONTROL
    if not pattern.search(text):
        return text
    return pattern.sub(_escaped, text)


__all__ = ["printable", "to_json", "to_json_bytes"]
