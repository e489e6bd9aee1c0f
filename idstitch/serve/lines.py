"""A batch body to the JSON lines ``ws.ingest`` reads, without building its messages as objects.

Decoding a 100-message body into dicts (to add two stamps, then encode each message again) was
the largest cost of a request outside the writer, and it holds the interpreter lock the writer
needs. Here msgspec validates the body and hands each message over as its raw JSON text; the
stamps a message lacks (the batch's ``sentAt``, the server's ``receivedAt``) are spliced in
front of its first key. A message that carries a ``writeKey`` (to be taken out), and a batch
with a ``context`` (to be merged into each message), take the dict path instead
(:func:`idstitch.serve.envelope.unwrap_batch`); the result is the same.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from idstitch.domain.rules import classify
from idstitch.serve.envelope import too_large


class Envelope(msgspec.Struct, rename="camel"):
    """The parts of a ``/v1/batch`` body read here; each message stays raw JSON (an empty
    Raw: the field is absent)."""

    batch: list[msgspec.Raw]
    sent_at: msgspec.Raw = msgspec.Raw()
    context: msgspec.Raw = msgspec.Raw()
    write_key: Any = None


class _Stamps(msgspec.Struct, rename="camel"):
    """Which stamps a message already has (an empty Raw: absent), and its ``userId`` (see
    :func:`names_person`); nothing else is decoded."""

    sent_at: msgspec.Raw = msgspec.Raw()
    received_at: msgspec.Raw = msgspec.Raw()
    write_key: msgspec.Raw = msgspec.Raw()
    batch: msgspec.Raw = msgspec.Raw()
    user_id: Any = None


NESTED = ("message: a batch envelope inside a batch (a message is one call: type: is "
          "required), refused as ws.ingest refuses it")
"""Why a message of a batch that is itself a ``{"batch": [...]}`` is refused: ``ws.ingest``
reads an envelope where a line holds one, and the endpoint hands it the messages as lines."""


def names_person(user_id: object) -> bool:
    """Whether a message's ``userId`` names a person by id (``cio_<person id>``): ingest then
    checks it against the projections, which must be caught up first (the writer does not
    defer their catch-up for a group holding one)."""
    return isinstance(user_id, str) and classify(user_id) == "cio"


_envelope = msgspec.json.Decoder(Envelope)
_stamps = msgspec.json.Decoder(_Stamps)
_NULL = msgspec.Raw(b"null")
_JSON_TYPES = {ord("["): "list", ord('"'): "str", ord("t"): "bool", ord("f"): "bool", ord("n"): "null"}


class BadBody(ValueError):
    """The body is not a batch envelope; the message says why, for a 400."""


def envelope(body: bytes) -> Envelope:
    """The batch envelope of a body; BadBody when it is not JSON, not an object, or its
    ``batch`` is missing or not a list."""
    try:
        return _envelope.decode(body)
    except msgspec.ValidationError as e:
        text = str(e)
        if "batch`" in text:  # "at `$.batch`", or "missing required field `batch`"
            raise BadBody("batch: must be a list of messages") from None
        raise BadBody("the body must be a JSON object with a batch") from None
    except msgspec.DecodeError as e:
        if "surrogate" in str(e):
            return _with_lone_surrogates(body)
        raise BadBody(f"the body is not JSON: {e}") from None
    except RecursionError as e:
        raise BadBody(f"the body is not JSON: {e}") from None


def _with_lone_surrogates(body: bytes) -> Envelope:
    """The envelope of a body that escapes a lone UTF-16 surrogate (``"\\udce9"``, no
    character: Python's clients send one from a string that held an undecodable byte), read
    by Python's json, which takes it. Each item is handed on as JSON text again, so that the
    items holding one are refused alone (:func:`line` cannot decode them) and the rest are
    recorded, as for any other message that is not JSON. A rare path: not a fast one."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise BadBody(f"the body is not JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise BadBody("the body must be a JSON object with a batch")
    if not isinstance(parsed.get("batch"), list):
        raise BadBody("batch: must be a list of messages")

    def raw(value: Any) -> msgspec.Raw:
        # As UTF-8, not escaped to ASCII (a message's size is checked on this text: CJK text
        # escaped would be twice its size); a lone surrogate encoded as it is makes bytes
        # that are not UTF-8, which refuse its message alone.
        return msgspec.Raw(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))

    return Envelope(batch=[raw(item) for item in parsed["batch"]],
                    sent_at=raw(parsed["sentAt"]) if "sentAt" in parsed else msgspec.Raw(),
                    context=raw(parsed["context"]) if "context" in parsed else msgspec.Raw(),
                    write_key=parsed.get("writeKey"))


def fast(envelope: Envelope) -> bool:
    """Whether the raw path applies: no batch ``context`` to merge into the messages."""
    return not envelope.context


def line(raw: msgspec.Raw, sent_at: bytes, received_at: bytes
         ) -> tuple[bytes | None, str | None, bool]:
    """One message as a stamped JSON line, or why it is refused here (not an object, over
    MESSAGE_LIMIT as it was sent: the stamps spliced in do not count); (None, None) when it
    carries a ``writeKey`` (the dict path takes it out) or a null ``sentAt`` the batch's
    replaces (the dict path splices nothing into a key it has).
    The third part: whether it :func:`names_person`."""
    text = bytes(raw)
    try:
        stamps = _stamps.decode(text)
    except msgspec.ValidationError:
        kind = _JSON_TYPES.get(text[0], "number") if text else "nothing"
        return None, f"message: must be a JSON object, got {kind}", False
    except (msgspec.DecodeError, RecursionError) as e:
        # The envelope reads its items as raw text: a byte that is not UTF-8 inside a string
        # is found here, and refuses this message alone.
        return None, f"message: is not JSON: {e}", False
    if stamps.write_key or (stamps.sent_at == _NULL and sent_at and sent_at != b"null"):
        # A writeKey to take out (before anything of the message is logged, a refusal too);
        # a null sentAt that the batch's replaces: the dict path.
        return None, None, False
    if stamps.batch:
        return None, NESTED, False
    oversized = too_large(len(text))
    if oversized is not None:
        return None, oversized, False
    adds = []
    if not stamps.sent_at and sent_at and sent_at != b"null":
        adds.append(b'"sentAt":' + sent_at)
    if not stamps.received_at:
        adds.append(b'"receivedAt":' + received_at)
    if adds:
        inner = text[1:].lstrip()  # a valid JSON object's text starts with "{"
        text = b"{" + b",".join(adds) + (b"" if inner.startswith(b"}") else b",") + inner
    return text, None, names_person(stamps.user_id)


__all__ = ["NESTED", "BadBody", "Envelope", "envelope", "fast", "line", "names_person"]
