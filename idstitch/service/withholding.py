"""What a file of refused messages keeps of a message that names a forgotten person.

``idstitch serve`` appends every message it refuses to its rejects log, and ``idstitch ingest
--rejects`` writes the lines it rejected, both as they were sent, for an operator to fix and
replay. A forget erases a person from everything the workspace keeps; neither file may then
take the person's values in again, whatever the message was refused for (a forgotten user id
is refused as such, but a message of the person with a bad timestamp is refused for that).
So a refused message in which any string (or an integer in an id's field), a value or a key
at any depth, is an identifier of a forgotten person (a user id, an email, its person id)
keeps only its ``messageId`` and ``type``. Nothing else of it is looked at: a message naming
the person only by an anonymous id or a device id is kept whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

ID_FIELDS = frozenset({"userId", "user_id", "previousId", "id"})
"""The fields whose integer value is read as a user id (see _names)."""
KEPT = ("messageId", "type")
"""The fields kept of a withheld message: they name no one, and tell the operator which
message it was."""


class ForgottenIdentifiers(Protocol):
    """The forgotten identifiers as the store holds them (the workspace's cipher:
    :class:`~idstitch.adapters.suppressed_digests.Suppression`)."""

    def suppressed_count(self) -> int:
        """How many identifiers are forgotten, read from the store now."""
        ...

    def is_suppressed(self, identifier: str) -> bool:
        """Whether an identifier belongs to a forgotten person."""
        ...


def forgotten_check(forgotten: ForgottenIdentifiers | None) -> Callable[[str], bool] | None:
    """The check of a string against the forgotten identifiers, read from the store now (a
    forget that another process finished a moment ago counts); None when nobody is forgotten
    (a store without encryption forgets nobody)."""
    if forgotten is None or forgotten.suppressed_count() == 0:
        return None
    return forgotten.is_suppressed


def withheld(message: Any, forgotten: Callable[[str], bool]) -> dict[str, str] | None:
    """What may be kept of a refused message (parsed JSON, or its text) that names a forgotten
    person: its ``messageId`` and ``type`` where they are strings; None when it names nobody
    forgotten (it is kept whole). A text that is not JSON cannot be told: nothing of it."""
    if isinstance(message, (msgspec.Raw, bytes, bytearray, memoryview)):
        try:
            message = msgspec.json.decode(bytes(message))
        except (msgspec.DecodeError, RecursionError):
            return {}
    if not _names(message, forgotten):
        return None
    if not isinstance(message, dict):
        return {}
    return {key: value for key in KEPT
            if isinstance(value := message.get(key), str) and not forgotten(value)}


def _names(message: Any, forgotten: Callable[[str], bool]) -> bool:
    # A loop, not a recursion: a refused message may be nested deeper than the stack allows.
    pending = [message]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if forgotten(item):
                return True
        elif isinstance(item, dict):
            for key, value in item.items():
                # A client that sends its user ids as JSON numbers (`"userId": 12345`, refused
                # for its type) names the person all the same; only in an id's field (a count
                # of 1 elsewhere is no user id "1").
                if type(value) is int and key in ID_FIELDS and forgotten(str(value)):
                    return True
                pending += (key, value)
        elif isinstance(item, list):
            pending += item
    return False


__all__ = ["ID_FIELDS", "KEPT", "ForgottenIdentifiers", "forgotten_check", "withheld"]
