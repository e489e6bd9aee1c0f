"""What a request body holds: the messages of a batch envelope or of one call, stamped and sized.

Pure functions over parsed JSON (no web framework): the HTTP layer parses and authenticates, these
say which messages go to ``ws.ingest`` and which are refused before it, and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from idstitch.adapters.batches import unwrap

MESSAGE_LIMIT: Final = 32 * 1024
"""Segment's limit for one message, in bytes of its JSON as the client sent it (before the
server's stamps and a batch's ``context``): a larger one is refused alone."""
BATCH_LIMIT: Final = 500 * 1024
"""Segment's limit for a decompressed ``/v1/batch`` body: a larger one is refused whole (413)."""

SINGLE_TYPES: Final = frozenset({"identify", "track", "screen", "page", "alias", "group"})
"""The single-message endpoints, ``/v1/<type>``."""


def unwrap_batch(body: Mapping[str, Any]) -> list[Any]:
    """The messages of a batch envelope ``{"batch": [...], "sentAt": ..., "context": ...}``.

    Each message takes the envelope's ``sentAt`` unless it has its own (the clients stamp the
    envelope, not the messages, when they send it; the skew correction needs it). An envelope
    ``context`` is merged under each message's own (Segment's HTTP API: the message's keys win).
    Items that are not objects are passed through (the caller refuses them with a reason).
    The rule is ingest's own (:func:`idstitch.adapters.batches.unwrap`): this is that function.
    """
    return unwrap(body)


def single(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The message of a single-call endpoint: ``type`` from the path when the body has none."""
    message = dict(body)
    message.setdefault("type", kind)
    return message


def stamp(messages: list[Any], received_at: str) -> None:
    """Give every message the server's receive time unless it carries a ``receivedAt``, in place
    (the messages were parsed from the request: nobody else holds them).

    The ``writeKey`` is taken out: it is a credential, and refused messages are kept in a log."""
    for message in messages:
        if isinstance(message, dict):
            message.setdefault("receivedAt", received_at)
            message.pop("writeKey", None)


def too_large(size: int) -> str | None:
    """Why a message of ``size`` bytes, as the client sent it, is refused (over MESSAGE_LIMIT),
    or None. The size is the client's, never the message's after the server added its stamps
    and the batch's ``context``: a client that keeps its messages within the limit (as
    Segment's clients do) must not have them refused for what the server adds."""
    if size > MESSAGE_LIMIT:
        return f"message: is {size} bytes, more than the {MESSAGE_LIMIT // 1024} KB a message may hold"
    return None


def encoded(message: Any) -> tuple[bytes | None, str | None]:
    """A message as the JSON line ``ws.ingest`` reads fastest, or why it is refused here: it is
    not a JSON object (its size is checked as it was sent, by :func:`too_large`)."""
    if not isinstance(message, dict):
        return None, f"message: must be a JSON object, got {type(message).__name__}"
    return msgspec.json.encode(message), None


__all__ = ["BATCH_LIMIT", "MESSAGE_LIMIT", "SINGLE_TYPES", "encoded", "single", "stamp",
           "too_large", "unwrap_batch"]
