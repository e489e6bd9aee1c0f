"""What checking the log's hash chain answers: a :class:`Digest` to keep elsewhere, and the
:class:`Verification` of the stored log (``ws.digest()``, ``ws.verify(against=...)``).

The chain itself (how each position's hash is computed, where it is stored) belongs to the
stores: :mod:`idstitch.adapters.chain`.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from idstitch.domain.errors import InvalidCommand

HEX_HASH = r"^[0-9a-f]{64}$"
"""A SHA-256 hash as the chain gives it: 64 lower-case hex digits."""


class Digest(msgspec.Struct, frozen=True):
    """The log's chain at one position: keep it outside the store (a file, a bucket, a
    ticket), and ``ws.verify(against=digest)`` later proves the log up to ``position`` is still
    the log that gave it, even if someone rewrote the rows and recomputed every hash.

    ``position``: the last position the chain covered (0 for an empty log); ``head``: the
    chain's hash there, as 64 lower-case hex digits. Encodes to and decodes from JSON with
    msgspec (``msgspec.json.decode(data, type=Digest)`` checks both fields)."""

    position: Annotated[int, msgspec.Meta(ge=0)]
    head: Annotated[str, msgspec.Meta(pattern=HEX_HASH)]


class Verification(msgspec.Struct, frozen=True):
    """What ``ws.verify()`` found.

    ``ok``: the chain holds over every stored event (and, when verified against a digest,
    matches it). ``checked``: the log positions checked, from the start: all of them when
    ``ok``, else up to and including ``first_break``. ``first_break``: the first position where
    the stored log no longer matches its chain (None when ``ok``). ``reason``: what was found
    there, or, when ``ok``, what was proven (and from which position the chain was computed
    when the events were written)."""

    ok: bool
    checked: int
    first_break: int | None
    reason: str


def check_digest(field: str, digest: Digest) -> Digest:
    """The digest, if its fields are what a digest holds (a Digest built in Python is not
    checked the way a decoded one is); else an InvalidCommand naming ``field``."""
    position = digest.position
    if type(position) is not int or position < 0:
        raise InvalidCommand(field, f"position must be a whole number, 0 or more, got "
                                    f"{position!r}")
    if not isinstance(digest.head, str) or not re.fullmatch(HEX_HASH, digest.head):
        raise InvalidCommand(field, "head must be 64 lower-case hex digits (a SHA-256 hash), "
                                    f"got {digest.head!r:.80}")
    return digest


__all__ = ["HEX_HASH", "Digest", "Verification", "check_digest"]
