"""Segment batch envelopes: ``{"batch": [...], "sentAt": ..., "context"?: ...}``, unwrapped.

The clients (Segment's and Customer.io's libraries) POST their queue as one envelope to
``/v1/batch``; a file of captured bodies holds one envelope a line. An envelope is one input
item holding many messages: :func:`messages_of` turns an item into the messages it holds, each
decoded on its own (a bad message is an error of its own, its neighbours go on), with the
envelope's ``sentAt`` given to every message that has none (the whole batch left the device at
that moment, so it is what corrects the device's clock) and the envelope's ``context`` merged
under each message's own (Segment's rule: the message's fields win).

Telling an envelope from a message costs a JSON line one substring search (``"batch"``); only
lines that contain it are parsed as envelopes, the rest go straight to the message decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from idstitch.adapters.segment import AwareTime, Message, SegmentContext, decode, invalid
from idstitch.domain.errors import InvalidCommand


class Envelope(msgspec.Struct, frozen=True, rename="camel"):
    """A batch envelope: its messages are left undecoded until each is decoded alone."""

    batch: list[msgspec.Raw]
    sent_at: AwareTime | None = None
    context: SegmentContext | None = None
    write_key: str | None = None


class _Probe(msgspec.Struct, frozen=True):
    """Whether a line's top level has a ``batch`` key (and nothing else is read)."""

    batch: msgspec.Raw = msgspec.Raw()


_envelope = msgspec.json.Decoder(Envelope)
_probe = msgspec.json.Decoder(_Probe)
_BATCH_STR = '"batch"'
_BATCH_BYTES = b'"batch"'

Item = dict[str, Any] | str | bytes
"""One input item: a message or a batch envelope, as a dict or a JSON line."""


def envelope(item: Item) -> list[Message | InvalidCommand] | None:
    """The messages of a batch envelope (each decoded, or the error that refused it), or None
    when ``item`` is not an envelope (it is then one message, for :func:`decode`).

    Raises :class:`InvalidCommand` for an envelope that cannot be read as a whole (``batch``
    not a list, a bad ``sentAt``): none of its messages can be trusted with its clock."""
    if isinstance(item, str):
        if _BATCH_STR not in item:
            return None
    elif isinstance(item, bytes):
        if _BATCH_BYTES not in item:
            return None
    else:
        if not isinstance(item, Mapping) or "batch" not in item:
            return None  # not a mapping: the message decoder refuses it, naming what it is
        return _unwrap_dict(item)
    try:
        if not _probe.decode(item).batch:
            return None  # "batch" appeared inside the message, not as its key
        env = _envelope.decode(item)
    except msgspec.ValidationError as e:
        raise invalid(str(e)) from e
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError):
        return None  # not JSON at all: the message decoder says why, as for any line
    return [_apply(env.sent_at, env.context, raw) for raw in env.batch]


def unwrap(body: Mapping[str, Any]) -> list[Any]:
    """The messages of a batch envelope given as a dict, each a dict with the envelope's rule
    applied: its ``sentAt`` when the message has none (absent or null), its ``context``
    merged under the message's own (a field the message has, not null, wins). A message whose
    own ``context`` is not an object is left as it is (its decoder refuses it). Items that are
    not objects are passed through, for the caller to refuse. The envelope's own fields are
    not checked here (:func:`envelope` refuses a bad ``sentAt`` for the whole envelope);
    ``idstitch serve`` and ingest both unwrap a parsed envelope with this.

    Raises :class:`InvalidCommand` (``batch``) when ``batch`` is not a list."""
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise InvalidCommand("batch", f"must be a list of messages, got {type(batch).__name__}")
    sent_at = body.get("sentAt")
    context = body.get("context")
    if not isinstance(context, Mapping):
        context = None
    if sent_at is None and context is None:
        return list(batch)
    messages: list[Any] = []
    for message in batch:
        if isinstance(message, Mapping):
            changes: dict[str, Any] = {}
            if sent_at is not None and message.get("sentAt") is None:
                changes["sentAt"] = sent_at
            if context is not None:
                own = message.get("context")
                if own is None:
                    changes["context"] = context
                elif isinstance(own, Mapping):
                    changes["context"] = {**context, **{k: v for k, v in own.items() if v is not None}}
            if changes:
                message = {**message, **changes}
        messages.append(message)
    return messages


def check_head(item: Mapping[str, Any]) -> None:
    """Refuse an envelope whose own fields (``sentAt``, ``context``, ``writeKey``) are not
    what they must be, as ingest refuses it whole (:class:`InvalidCommand` naming the field);
    its ``batch`` is not looked at. ``idstitch serve`` checks a posted envelope with this."""
    try:
        msgspec.convert({k: v for k, v in item.items() if k != "batch"}, _Head)
    except msgspec.ValidationError as e:
        raise invalid(str(e)) from e


def _unwrap_dict(item: Mapping[str, Any]) -> list[Message | InvalidCommand]:
    check_head(item)
    # The envelope as a whole is sound: each message takes its sentAt and context as the
    # endpoint gives them (one rule, :func:`unwrap`), then is decoded alone. An item that is
    # not an object is refused as in a JSON line's envelope: a string there is a string, not
    # a message's text to decode.
    return [_apply(None, None, message if isinstance(message, Mapping) else _as_json(message))
            for message in unwrap(item)]


def _as_json(item: Any) -> Any:
    """A batch item that is not an object, as the JSON a line would hold (its decoder then
    names its JSON type as for a line); as it is when it is no JSON value at all."""
    try:
        return msgspec.Raw(msgspec.json.encode(item))
    except (TypeError, ValueError, OverflowError):
        return item


class _Head(msgspec.Struct, frozen=True, rename="camel"):
    """An envelope dict's own fields (its batch is read message by message)."""

    sent_at: AwareTime | None = None
    context: SegmentContext | None = None
    write_key: str | None = None


def _apply(sent_at: Any, context: SegmentContext | None, raw: Any) -> Message | InvalidCommand:
    try:
        msg = decode(raw if not isinstance(raw, msgspec.Raw) else bytes(raw))
    except InvalidCommand as e:
        return e
    if sent_at is not None and msg.sent_at is None:
        msg = msgspec.structs.replace(msg, sent_at=sent_at)
    if context is not None:
        msg = msgspec.structs.replace(msg, context=_merged(context, msg.context))
    return msg


def _merged(outer: SegmentContext, inner: SegmentContext | None) -> SegmentContext:
    """The envelope's context under the message's: a field the message has wins."""
    if inner is None:
        return outer
    changes = {name: getattr(outer, name) for name in outer.__struct_fields__
               if getattr(inner, name) is None and getattr(outer, name) is not None}
    return msgspec.structs.replace(inner, **changes) if changes else inner


def messages_of(item: Item) -> list[Message | InvalidCommand]:
    """The messages one input item holds, in order: a message is one, a batch envelope holds
    its ``batch``; each decoded (a :class:`Message`), or the :class:`InvalidCommand` that says
    why it cannot be. A blank line holds none."""
    if isinstance(item, (str, bytes)) and (not item or item.isspace()):
        return []
    try:
        inside = envelope(item)
        return [decode(item)] if inside is None else inside
    except InvalidCommand as e:
        return [e]


__all__ = ["Envelope", "check_head", "envelope", "messages_of", "unwrap"]
