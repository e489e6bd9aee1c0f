"""Input rules (identity-model.md §3, §7): every call is checked before anything is recorded."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from idstitch.domain.errors import InvalidCommand
from idstitch.domain.times import check_time as check_time
from idstitch.domain.times import client_time as client_time

MAX_ID_BYTES = 150
MAX_ATTRIBUTES = 300
MAX_VALUE_BYTES = 1000
MAX_DEPTH = 16

PLACEHOLDER_IDS = frozenset(
    {"null", "undefined", "anonymous", "0", "-1", "none", "nan", "[object object]"}
)
"""Ids that SDKs send by mistake; accepting them builds one mega-person of strangers."""
_LONGEST_PLACEHOLDER = max(map(len, PLACEHOLDER_IDS))

PUSH_STATUSES = frozenset({"sent", "bounced", "suppressed"})
PERSON_PREFIX = "cio_"

IdentifierKind = Literal["id", "email", "cio"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
MIN_INT, MAX_INT = -(2**63), 2**64 - 1
"""Integers the event codec (msgpack) can store."""
_JSON_NUL = b"\\u0000"
"""How the JSON encoder writes NUL: one search of an object's encoding finds any NUL in it."""
_short = reprlib.Repr()  # keyword arguments need Python 3.12
_short.maxlevel, _short.maxstring, _short.maxother = 2, 40, 40


def _brief(value: object) -> str:
    """A short, printable picture of a bad value for an error message: plain ``repr`` of a value
    nested thousands deep raises RecursionError, and of a megabyte string makes a megabyte
    message. A str subclass is shown as its characters (an enum member's repr is not)."""
    if isinstance(value, str) and type(value) is not str:
        value = str.__str__(value)
    return _short.repr(value)


def plain_str(value: str) -> str:
    """A string of exactly type ``str`` with the characters of ``value`` (itself if it is one).

    Strings of a ``str`` subclass (``enum.StrEnum`` members, ``markupsafe.Markup``, numpy's
    ``str_``) are text like any other, but the event encoders know only ``str``, and a recorded
    value must not depend on the caller's class: they are recorded as their plain value.
    ``str.__str__`` copies the characters whatever the subclass overrides (``__str__``,
    ``__getitem__``)."""
    return value if type(value) is str else str.__str__(value)


def plain_json(value: object) -> object:
    """A JSON value with plain strings: ``str`` subclasses (values and keys, at any depth)
    become ``str``, dicts and lists are copied. Only for values the encoder or the decoder
    refused (the fast paths never copy); it recurses as deep as the value goes, so walk the
    value first (or catch RecursionError). Any other object stays as it is, for the encoder to
    refuse (a Mapping that is no dict, nested in a value, is not JSON)."""
    if isinstance(value, str):
        return plain_str(value)
    if isinstance(value, dict):
        return {plain_str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    return value


def _json(field: str, value: object) -> bytes:
    """JSON bytes of a value that passed the walk; an encoder refusal is still bad input."""
    try:
        return _encode(value)
    except (TypeError, ValueError, OverflowError) as e:
        # e.g. a mapping type the encoder does not know: never a crash, always InvalidCommand.
        raise InvalidCommand(field, f"is not JSON-encodable: {e}") from e


def _utf8_len(field: str, value: str) -> int:
    # isascii() is O(1) on CPython's compact strings; ids and tokens are almost always ASCII.
    if value.isascii():
        return len(value)
    try:
        return len(value.encode())
    except UnicodeEncodeError as e:
        raise InvalidCommand(field, f"is not valid text ({e.reason})") from e


def check_id(field: str, value: object) -> str:
    """An id is a non-blank string of at most 150 bytes that is not a placeholder."""
    # The common case, accepted in one test: ASCII (bytes = characters), no edge whitespace
    # (so not blank) and longer than any placeholder.
    if (type(value) is str and _LONGEST_PLACEHOLDER < len(value) <= MAX_ID_BYTES
            and value.isascii() and not value[0].isspace() and not value[-1].isspace()
            and "\x00" not in value):
        return value
    if not isinstance(value, str):
        raise InvalidCommand(field, f"must be a string, got {type(value).__name__}")
    value = plain_str(value)
    stripped = value.strip()
    if not stripped:
        raise InvalidCommand(field, "must not be blank")
    if len(stripped) <= _LONGEST_PLACEHOLDER and stripped.lower() in PLACEHOLDER_IDS:
        raise InvalidCommand(field, f"{value!r} is a placeholder id, not a real identifier")
    if _utf8_len(field, value) > MAX_ID_BYTES:
        raise InvalidCommand(field, f"is longer than {MAX_ID_BYTES} bytes")
    _no_nul(field, value)
    return value


def _no_nul(field: str, value: str) -> None:
    # PostgreSQL text cannot hold NUL, and any recorded string may become a row key there (an
    # `email` attribute becomes an identifier): accepted on memory and SQLite, it would poison
    # every PostgreSQL catch-up. So no recorded string may hold one, on any store.
    if "\x00" in value:
        raise InvalidCommand(field, "contains a NUL character")


def _check_string(field: str, value: str) -> None:
    """The slow path's text rule for recorded strings: valid UTF-8, no NUL."""
    _utf8_len(field, value)
    _no_nul(field, value)


def check_optional_id(field: str, value: object) -> str | None:
    """Like :func:`check_id`, but None is allowed (absent)."""
    return None if value is None else check_id(field, value)


def check_message_id(value: object) -> str | None:
    """A message id (optional) is non-blank text of at most 150 bytes; any value is fine."""
    if value is None:
        return None
    if (type(value) is str and len(value) <= MAX_ID_BYTES and value.isascii() and value.strip()
            and "\x00" not in value):
        return value
    if isinstance(value, str) and _utf8_len("message_id", value) > MAX_ID_BYTES:
        # Its own limit, before check_text's (1000 bytes, for other text) could name that one.
        raise InvalidCommand("message_id", f"is longer than {MAX_ID_BYTES} bytes")
    return check_text("message_id", value)


def check_anonymous_id(value: object) -> str | None:
    """The SDK's ``anonymousId`` (optional): an id as :func:`check_id` wants one, placeholders
    refused (it becomes an identifier a profile is found by: an ``"null"`` of every app that
    sent one would find one person)."""
    if value is None:
        return None
    if (type(value) is str and _LONGEST_PLACEHOLDER < len(value) <= MAX_ID_BYTES
            and value.isascii() and value.strip() and "\x00" not in value):
        return value
    return check_id("anonymousId", value)


def check_text(field: str, value: object, *, allowed: frozenset[str] | None = None) -> str:
    """A short non-blank string, optionally one of ``allowed``."""
    if (allowed is None and type(value) is str and len(value) <= MAX_VALUE_BYTES
            and value.isascii() and value.strip() and "\x00" not in value):
        return value
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(field, "must be a non-blank string")
    value = plain_str(value)
    if allowed is not None and value not in allowed:
        raise InvalidCommand(field, f"must be one of {sorted(allowed)}, got {value!r}")
    if _utf8_len(field, value) > MAX_VALUE_BYTES:
        raise InvalidCommand(field, f"is longer than {MAX_VALUE_BYTES} bytes")
    _no_nul(field, value)
    return value


def classify(user_id: str) -> IdentifierKind:
    """``cio_...`` is a person id, anything with ``@`` an email, the rest an id."""
    if user_id.startswith(PERSON_PREFIX):
        return "cio"
    if "@" in user_id:
        return "email"
    return "id"


def normalize_email(email: str) -> str:
    """Emails are compared case-insensitively: they are stored lower-cased."""
    return email.strip().lower()


_SHORT_NAME = MAX_ID_BYTES // 4
"""A name of at most this many characters cannot exceed MAX_ID_BYTES in UTF-8."""


def _check_name(field: str, key: str, text_ok: bool) -> None:
    """An attribute name, at any depth: non-blank text of at most MAX_ID_BYTES bytes.
    ``field``: where the object holding it is (the error names ``field.<name>``)."""
    if not key or key.isspace():
        raise InvalidCommand(field, f"attribute name {_brief(key)} must be a non-blank string")
    if not text_ok:
        _check_string(f"{field}.{key[:40]!a}", key)
    # The common case (a short name) checks nothing more.
    if len(key) > _SHORT_NAME:
        # The name's characters, whatever a str subclass's __str__ says.
        where = f"{field}.{str.__getitem__(key, slice(0, 40))}"
        if _utf8_len(where, key) > MAX_ID_BYTES:
            raise InvalidCommand(where, f"name is longer than {MAX_ID_BYTES} bytes")


def _check_json(field: str, value: object, depth: int, text_ok: bool = False) -> None:
    """Walk a JSON value; ``text_ok``: every string is known to be valid text without NUL.

    It stops at MAX_DEPTH, so it never recurses far, however deep the value."""
    if depth > MAX_DEPTH:
        raise InvalidCommand(field, f"is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise InvalidCommand(field, "is an integer too large to store (64 bits at most)")
        return
    if isinstance(value, str):
        if not text_ok:
            _check_string(field, value)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidCommand(field, f"{value!r} is not a JSON number")
        return
    # A dict first: isinstance against the Mapping ABC costs a Python-level call.
    if type(value) is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidCommand(field, f"has a non-string key {_brief(key)}")
            _check_name(field, key, text_ok)
            # A str subclass key is named by its characters, not by what its __str__ says.
            _check_json(f"{field}.{key if type(key) is str else str.__str__(key)}", item,
                        depth + 1, text_ok)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(f"{field}[{i}]", item, depth + 1, text_ok)
        return
    raise InvalidCommand(field, f"{type(value).__name__} is not a JSON value")


def _valid_json(value: object, depth: int) -> bool:
    """Whether a value with valid text passes :func:`_check_json`, without building paths.

    The fast walk for values that encoded: it only says yes or no, and a no goes through
    ``_check_json`` for the field and the reason.
    """
    if depth > MAX_DEPTH:
        return False
    if type(value) is str or type(value) is bool or value is None:
        return True
    if type(value) is int:
        return MIN_INT <= value <= MAX_INT
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is dict:
        for key, item in value.items():
            # A name rule broken (blank, too long): _check_json says which.
            if (type(key) is not str or not key or key.isspace()
                    or (len(key) > _SHORT_NAME and len(key.encode(errors="replace")) > MAX_ID_BYTES)
                    or not _valid_json(item, depth + 1)):
                return False
        return True
    if type(value) is list:
        return all(_valid_json(item, depth + 1) for item in value)
    return False  # other types: _check_json decides


def check_attributes(
    field: str, attributes: object, *, allow_none: bool = True, owned: bool = False
) -> dict[str, Any]:
    """A JSON object of at most 300 keys, each value JSON, at most 1000 bytes, nested <= 16.

    Returns the object the event may hold: a deep copy, so that a caller who later changes its
    dict cannot change what was recorded. ``owned``: the object was just decoded from JSON text
    by the caller and nobody else holds it (ingest of JSON lines): it is returned as it is.
    """
    if attributes is None and allow_none:
        return {}
    if type(attributes) is not dict and not isinstance(attributes, Mapping):
        raise InvalidCommand(field, f"must be a JSON object, got {type(attributes).__name__}")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidCommand(field, f"has {len(attributes)} attributes; at most {MAX_ATTRIBUTES}")
    try:
        encoded: bytes | None = _encode(attributes)
    except (TypeError, ValueError, OverflowError, RecursionError):
        # Not JSON somewhere, or nested past the encoder's recursion limit: the loop below
        # names where (its walk stops at MAX_DEPTH, long before any recursion limit).
        encoded = None
    # When the whole object encoded, every string in it is valid text; and when its encoding
    # holds no \u0000, no string holds NUL. Most encodings hold no escape at all: one memchr
    # for a backslash (0x5C; an int needle, as a bytes one costs ten times more) settles them.
    # The six characters \u0000 typed as text also match: they only send the object through
    # the walk, which accepts them.
    clean = small = False
    if encoded is not None and (0x5C not in encoded or _JSON_NUL not in encoded):
        # Hot path (ingest): when the whole object serializes within one value's limit, no
        # single value can exceed it, so the per-value size check is skipped.
        clean, small = True, len(encoded) <= MAX_VALUE_BYTES
    for key, value in attributes.items():
        # A short, non-blank exact str with valid text (``clean``) is a good name: settled here
        # without a call (this runs for every trait of every message).
        if (not clean or type(key) is not str or not key or len(key) > _SHORT_NAME
                or key.isspace()):
            if not isinstance(key, str):
                raise InvalidCommand(field,
                                     f"attribute name {_brief(key)} must be a non-blank string")
            _check_name(field, key, clean)
        kind = type(value)
        if small and (kind is str or kind is bool or value is None
                      or (kind is int and MIN_INT <= value <= MAX_INT)):
            continue  # the common values, settled here without a call
        if not small or not _valid_json(value, 1):
            where = f"{field}.{key if type(key) is str else str.__str__(key)}"
            _check_json(where, value, 1, clean)
        # (The walk accepted the value: if the whole object did not encode, a str subclass or
        # a Mapping in it may be why, and its plain form is what would be recorded.)
        if not small:
            where = f"{field}.{key if type(key) is str else str.__str__(key)}"
            if len(_json(where, value if encoded is not None
                         else plain_json(value))) > MAX_VALUE_BYTES:
                raise InvalidCommand(where, f"value is over {MAX_VALUE_BYTES} bytes when "
                                            "serialized")
    if owned and type(attributes) is dict:
        return attributes
    if encoded is None:
        # The walk accepted every value: what the encoder refused is a container or string of
        # a class of the caller's (a str subclass, a Mapping that is no dict).
        encoded = _json(field, plain_json(attributes))
    # The event owns its values: a deep copy (through the bytes already made), so a caller who
    # later changes its dict cannot change what was recorded or what the projection holds.
    copy: dict[str, Any] = _decode(encoded)
    return copy


def check_collected(field: str, attributes: dict[str, Any], *, owned: bool = False
                    ) -> dict[str, Any]:
    """Attributes the ingest built from a message's ``context`` (its own, valid names): as
    :func:`check_attributes`, with a fast path for what SDKs send there (short text without
    NUL, booleans, integers in range), checked without encoding anything."""
    for value in attributes.values():
        kind = type(value)
        if kind is str:
            # At most 4 bytes a character: 250 characters cannot exceed 1000 bytes.
            if len(value) > MAX_VALUE_BYTES // 4 or "\x00" in value or not value.isascii():
                break
        elif not (kind is bool or (kind is int and MIN_INT <= value <= MAX_INT)):
            break
    else:
        return attributes
    return check_attributes(field, attributes, allow_none=False, owned=owned)


def check_keys(field: str, keys: object, *, indexed: bool = False) -> list[str]:
    """A list of attribute names (for ``unset``): each as an attribute name that is set.
    ``indexed``: a bad name is named by its place (``unset[1]``), as the public methods name
    an item of a list argument."""
    if keys is None:
        return []
    if isinstance(keys, str) or not isinstance(keys, (list, tuple, set, frozenset)):
        raise InvalidCommand(field, "must be a list of attribute names")
    if len(keys) > MAX_ATTRIBUTES:
        raise InvalidCommand(field, f"has {len(keys)} names; at most {MAX_ATTRIBUTES}")
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not key.strip():
            raise InvalidCommand(f"{field}[{i}]" if indexed else field,
                                 f"attribute name {_brief(key)} must be a non-blank string")
        # The names are recorded in the event: the rules of a name that is set apply.
        if not (key.isascii() and len(key) <= MAX_ID_BYTES and "\x00" not in key):
            where = f"{field}[{i}]" if indexed else field
            if _utf8_len(where, key) > MAX_ID_BYTES:
                raise InvalidCommand(where, f"attribute name {_brief(key)} is longer than "
                                            f"{MAX_ID_BYTES} bytes")
            _no_nul(where, key)
    names = [plain_str(key) for key in keys]
    return sorted(names) if isinstance(keys, (set, frozenset)) else names
