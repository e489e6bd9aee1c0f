"""msgspec's validation errors as idstitch's: the field named by its JSON path, the reason in
the library's words (:mod:`idstitch.adapters.segment` and :mod:`idstitch.adapters.batches`
decode input lines with msgspec)."""

from __future__ import annotations

import json
import math

from idstitch.domain.errors import InvalidCommand

_MISSING = "Object missing required field "
_UNKNOWN_VALUE = "Invalid enum value "
_OUT_OF_RANGE = "Number out of range"


def invalid(text: str, raw: object = None, types: str = "") -> InvalidCommand:
    """The InvalidCommand of a msgspec validation error, naming the field by its JSON path
    (``raw``, the line, finds a number too large for a float, which msgspec's path hides)."""
    # msgspec says "<reason> - at `$.a.b`" (or "... - at `key` in `$.a`"); no path: the root.
    reason, sep, where = text.partition(" - at ")
    path = where.rsplit("`", 2)[-2] if sep else "$"
    field = path[2:] if path.startswith("$.") else ""
    if reason == _OUT_OF_RANGE and isinstance(raw, (str, bytes)):
        # Inside an object msgspec's path says `[...]` for the key: find the number itself.
        field = _overflowing(raw) or field
        reason = "number out of range (a float holds at most about 1.8e308)"
    elif reason.startswith(_MISSING):
        name = reason[len(_MISSING):].strip("`")
        field = f"{field}.{name}" if field else name
        reason = "is required"
    elif field == "type" and reason.startswith(_UNKNOWN_VALUE):
        reason = f"{reason[len(_UNKNOWN_VALUE):]} is not a message type; expected one of {types}"
    else:
        reason = reason[:1].lower() + reason[1:]
    return InvalidCommand(field or "message", reason)


def _overflowing(line: str | bytes) -> str | None:
    """The path (``traits.x``, ``properties.list[2]``) of the line's first number too large
    for a float, in document order as msgspec reads it; None if the line cannot tell."""
    try:
        # Python's parser reads such a number as an infinite float (and refuses nothing
        # msgspec accepted before it).
        document = json.loads(line, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[object, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path or None
        if isinstance(value, dict):
            stack.extend(reversed([(v, f"{path}.{k}" if path else str(k))
                                   for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(v, f"{path}[{i}]") for i, v in enumerate(value)]))
    return None


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")
