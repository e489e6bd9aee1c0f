"""Segment-spec messages, as Customer.io's mobile SDKs send them, turned into commands.

This is the ingest hot path (millions of lines), so a line is decoded once, by one reused typed
msgspec ``Decoder``, straight into Structs: no ``json`` module, no dict walk, no regex. Only the
fields the mapping reads are declared; msgspec skips the rest of the message unparsed.

The mapping (api.md, "Bulk") is a pure function from a :class:`Message` to the domain's
commands (:mod:`idstitch.domain.commands`), the same ones the Workspace's methods build.
Traits, properties and ids are passed through unchecked: the command handlers validate them
with the workspace's own rules, naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from idstitch.adapters import json_errors
from idstitch.adapters.context import (
    CONTEXT_ATTRIBUTES,
    SegmentContext,
    context_attributes,
    context_of,
)
from idstitch.domain.commands import (
    CollectDeviceAttributes,
    Command,
    Identify,
    RegisterDeviceToken,
    RemoveDeviceToken,
    SetDeviceAttributes,
    SetProfileAttributes,
)
from idstitch.domain.device import server_stream_id
from idstitch.domain.errors import InvalidCommand
from idstitch.domain.rules import MAX_ID_BYTES, plain_json, plain_str

AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timestamp with its timezone: a naive client time is ambiguous across devices."""

MessageType = Literal["identify", "track", "screen", "page", "group", "alias"]

DEVICE_UPDATED: Final = "Device Created or Updated"
DEVICE_DELETED: Final = "Device Deleted"

COLLECTED_KEYS: Final = frozenset({
    "device_os", "device_model", "device_manufacturer", "app_version", "cio_sdk_version",
    "device_locale", "push_enabled", "timezone", "screen_width", "screen_height",
    "network_wifi", "network_cellular", "network_bluetooth", "ip",
})
"""The properties the SDK collects by itself; every other property is a custom device attribute."""

COLLECTED_SUFFIX: Final = "#collected"
CUSTOM_SUFFIX: Final = "#custom"
CONTEXT_SUFFIX: Final = "#context"
_NO_ONE = "an identify needs a userId or an anonymousId"


class _Fields(msgspec.Struct, frozen=True, rename="camel"):
    """The fields of a Segment message that the mapping reads, but its context (JSON names
    are camelCase)."""

    type: MessageType
    user_id: str | None = None
    anonymous_id: str | None = None
    message_id: str | None = None
    timestamp: AwareTime | None = None
    sent_at: AwareTime | None = None
    received_at: AwareTime | None = None
    event: str | None = None
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None


class Message(_Fields, frozen=True, rename="camel"):
    """The subset of a Segment message that the mapping reads."""

    context: SegmentContext | None = None


class Line(_Fields, frozen=True, rename="camel"):
    """A message as ingest decodes a JSON line: a :class:`Message` whose ``context`` is left as
    its JSON text, decoded once per distinct text (:func:`~idstitch.adapters.context.context_of`:
    an SDK sends the same context on every message of a device). :func:`to_commands` reads
    either."""

    context: msgspec.Raw = msgspec.Raw()
    """The context's JSON text (empty: the line has none)."""


_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
_line_decoder: msgspec.json.Decoder[Line] = msgspec.json.Decoder(Line)
_TYPES = ", ".join(get_args(MessageType))


def invalid(text: str, raw: object = None) -> InvalidCommand:
    """The InvalidCommand of a msgspec validation error, naming the field by its JSON path
    (see :func:`idstitch.adapters.json_errors.invalid`; an unknown ``type`` lists the message
    types)."""
    return json_errors.invalid(text, raw, _TYPES)


def decode(raw: dict[str, Any] | str | bytes) -> Message:
    """A message from a JSON line (str or bytes) or an already parsed dict.

    Raises :class:`InvalidCommand` naming the field (JSON path without ``$.``, e.g.
    ``context.device.id``; ``message`` for the line as a whole) for input that is not JSON,
    not an object, has a missing or unknown ``type``, a field of the wrong type, a timestamp
    without timezone, text that is not valid Unicode (a lone surrogate in a str line), or
    nesting deeper than the decoder can follow (about a thousand levels, anywhere in the line,
    read or not).
    """
    if not isinstance(raw, (str, bytes, Mapping)):
        raise InvalidCommand("message", f"must be a JSON object or a JSON line, got "
                                        f"{type(raw).__name__}")
    message: Message = _decoded(_decoder, raw)
    return message


def decode_line(raw: dict[str, Any] | str | bytes) -> Message | Line:
    """:func:`decode` as ingest uses it: a JSON line (exact str or bytes) becomes a
    :class:`Line`, its context decoded by :func:`to_commands` through the shared cache; the
    same messages, the same errors (a context's own, naming its field, come from
    :func:`to_commands`)."""
    if type(raw) is bytes or type(raw) is str:
        try:
            line: Line = _decoded(_line_decoder, raw)
            return line
        except InvalidCommand:
            pass  # refused: by decode, whose first error in the line may be in its context
    return decode(raw)


def _decoded(decoder: msgspec.json.Decoder[Any], raw: dict[str, Any] | str | bytes) -> Any:
    """``raw`` decoded by ``decoder`` (a Mapping converted to a Message); the errors as
    :func:`decode` says."""
    try:
        if isinstance(raw, (str, bytes)):
            # The decoder takes only exact str: a subclass's line is decoded as its text.
            return decoder.decode(plain_str(raw) if isinstance(raw, str) else raw)
        try:
            return msgspec.convert(raw, Message)
        except msgspec.ValidationError:
            # A str subclass where the message wants one of its words (``type``): judged
            # again as plain JSON, which fails the same way when that was not the reason.
            return msgspec.convert(plain_json(raw), Message)
    # ValidationError subclasses DecodeError, so it must be caught first.
    except msgspec.ValidationError as e:
        raise invalid(str(e), raw) from e
    except msgspec.DecodeError as e:
        raise InvalidCommand("message", f"is not JSON: {e}") from e
    except RecursionError as e:
        # msgspec follows nesting by recursion, even through the fields it skips unread: past
        # the interpreter's recursion limit the line cannot be decoded at all.
        raise InvalidCommand("message", "is nested too deeply to decode") from e
    except UnicodeEncodeError as e:
        # A str line (or a dict's enum field) is encoded to UTF-8 first: a lone surrogate
        # cannot be, and a line is never a reason to stop the ingest of the others.
        raise InvalidCommand("message", f"is not valid text ({e.reason} at character {e.start})") from e
    except (TypeError, ValueError) as e:
        # A mapping whose own methods fail (a hostile or broken Mapping subclass): its line.
        raise InvalidCommand("message", f"cannot be read: {type(e).__name__}") from e


def to_commands(msg: Message | Line) -> list[Command] | None:
    """The commands a message maps to, or None when the message is ignored.

    - ``identify`` with a ``userId``: Identify; without: SetProfileAttributes on the device's
      current person; with the ``traits``, else ``context.traits`` (RudderStack sends them
      there). Beside a ``context.device.id``, the ``anonymousId`` is passed on as
      ``sdk_anonymous_id``: the SDK's session, from which the device tells a reset from a late
      message. With only a ``userId`` (a backend's identify): Identify on the user's
      server-side stream (:func:`~idstitch.domain.device.server_stream_id`, ``server=True``).
    - ``track`` "Device Created or Updated": RegisterDeviceToken (token from
      ``context.device.token``, else ``properties.token``; platform from ``context.device.type``),
      then CollectDeviceAttributes with the auto-collected properties and SetDeviceAttributes
      with the others, each only when it has keys.
    - ``track`` "Device Deleted": RemoveDeviceToken (reason ``deleted``).
    - Any other ``track``, and ``screen``, ``page``, ``group``, ``alias``: ignored (None).
    - After the commands of an ``identify`` on a device or a device ``track``: a
      CollectDeviceAttributes (``changes_only``) with the attributes its ``context`` holds
      (:func:`~idstitch.adapters.context.context_attributes`), when it holds any.

    The device is ``context.device.id``, else the ``anonymousId``. A device de-duplicates by
    message id, so the commands after the first carry derived ids, ``<messageId>#collected``,
    ``<messageId>#custom`` and ``<messageId>#context``: all parts are recorded, and ingesting
    the same message again still de-duplicates each part. Where that would pass the 150-byte
    limit of an id (a message id of 141 bytes or more), the message id is replaced by its
    SHA-256 (``<64 hex digits>#collected``): still one id per message, the same every time.
    ``timestamp``, ``sentAt`` and ``receivedAt`` become each command's timestamp, sent_at and
    received_at.

    Raises :class:`InvalidCommand` for an identify with neither ``userId`` nor ``anonymousId``
    (field ``userId``), a device message with no device (``context.device.id``), and a device
    message without a token (``context.device.token``).
    """
    context, collected = _context(msg)
    if msg.type == "identify":
        user_id, anonymous_id = msg.user_id, msg.anonymous_id
        traits = msg.traits
        if traits is None and context is not None:
            traits = context.traits  # RudderStack's identify sends them only there
        device = context.device.id if context is not None and context.device is not None else None
        if device is None:
            if anonymous_id is not None:
                device, sdk = anonymous_id, None  # the anonymousId names the device itself
            elif user_id is not None:
                # A backend's identify (Segment's / Customer.io's server libraries): only a
                # userId. It lands on the user's server-side stream.
                return [Identify(device_id=server_stream_id(user_id), user_id=user_id,
                                 traits=traits, server=True, message_id=msg.message_id,
                                 timestamp=msg.timestamp, sent_at=msg.sent_at,
                                 received_at=msg.received_at)]
            else:
                raise InvalidCommand("userId", _NO_ONE)
        elif user_id is None and anonymous_id is None:
            raise InvalidCommand("userId", _NO_ONE)
        else:
            # The SDK's session on the device (an empty one is none).
            sdk = anonymous_id if anonymous_id and anonymous_id != device else None
        first: Command
        if user_id is not None:
            first = Identify(device_id=device, user_id=user_id, traits=traits,
                             message_id=msg.message_id, timestamp=msg.timestamp,
                             sent_at=msg.sent_at, received_at=msg.received_at,
                             sdk_anonymous_id=sdk)
        else:
            first = SetProfileAttributes(device_id=device, traits=traits,
                                         message_id=msg.message_id, timestamp=msg.timestamp,
                                         sent_at=msg.sent_at, received_at=msg.received_at,
                                         sdk_anonymous_id=sdk)
        return ([first] if context is None
                else _with_context(msg, context, collected, device, [first]))
    if msg.type != "track":
        return None
    if msg.event == DEVICE_UPDATED:
        return _device_updated(msg, context, collected)
    if msg.event == DEVICE_DELETED:
        device_id = _device_id(msg, context)
        return _with_context(msg, context, collected, device_id, [RemoveDeviceToken(
            device_id=device_id, token=_token(msg, context, msg.properties or {}),
            reason="deleted", message_id=msg.message_id, timestamp=msg.timestamp,
            sent_at=msg.sent_at, received_at=msg.received_at)])
    return None


def _context(msg: Message | Line) -> tuple[SegmentContext | None, dict[str, Any] | None]:
    """A message's context and its collected attributes (a Line's decoded from its text, once
    per distinct text: :func:`~idstitch.adapters.context.context_of`; None: not computed yet).
    InvalidCommand naming the field for a context that does not decode, as :func:`decode`
    words it."""
    context = msg.context
    if type(context) is not msgspec.Raw:
        return context, None
    if not context:
        return None, {}
    text = bytes(context)
    try:
        return context_of(text)
    except msgspec.ValidationError as e:
        error = invalid(str(e), text)
        field = "context" if error.field == "message" else f"context.{error.field}"
        raise InvalidCommand(field, error.reason) from e
    except msgspec.DecodeError as e:
        raise InvalidCommand("message", f"is not JSON: {e}") from e
    except RecursionError as e:
        raise InvalidCommand("message", "is nested too deeply to decode") from e


def _device_updated(msg: Message | Line, context: SegmentContext | None,
                    collected_context: dict[str, Any] | None) -> list[Command]:
    device_id = _device_id(msg, context)
    properties = msg.properties or {}
    token = _token(msg, context, properties)
    device = context.device if context is not None else None
    platform = device.type if device is not None else None
    message_id, timestamp, sent_at, received_at = (
        msg.message_id, msg.timestamp, msg.sent_at, msg.received_at)
    commands: list[Command] = [RegisterDeviceToken(
        device_id=device_id, token=token, platform=platform, message_id=message_id,
        timestamp=timestamp, sent_at=sent_at, received_at=received_at)]
    collected: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in properties.items():
        if key in COLLECTED_KEYS:
            collected[key] = value
        elif key != "token":
            custom[key] = value
    if collected:
        commands.append(CollectDeviceAttributes(
            device_id=device_id, context=collected, message_id=_derived(message_id, COLLECTED_SUFFIX),
            timestamp=timestamp, sent_at=sent_at, received_at=received_at))
    if custom:
        commands.append(SetDeviceAttributes(
            device_id=device_id, attributes=custom, message_id=_derived(message_id, CUSTOM_SUFFIX),
            timestamp=timestamp, sent_at=sent_at, received_at=received_at))
    return _with_context(msg, context, collected_context, device_id, commands, collected)


def _with_context(msg: Message | Line, context: SegmentContext | None,
                  collected: dict[str, Any] | None, device_id: str, commands: list[Command],
                  collected_here: dict[str, Any] | None = None) -> list[Command]:
    """``commands``, then the collection of the message's context attributes (``collected``,
    None: from ``context``), if it has any (recorded only where they changed for the device,
    and only while auto-tracking is on). ``collected_here``: what the message's properties
    collect just before; the context's equal values are left out (they cannot have changed:
    a call less for most device messages)."""
    if collected is None:
        collected = context_attributes(context)
    if collected_here:
        collected = {k: v for k, v in collected.items()
                     if k not in collected_here or collected_here[k] != v
                     or type(collected_here[k]) is not type(v)}
    if collected:
        commands.append(CollectDeviceAttributes(
            device_id=device_id, context=collected,
            message_id=_derived(msg.message_id, CONTEXT_SUFFIX), timestamp=msg.timestamp,
            sent_at=msg.sent_at, received_at=msg.received_at, changes_only=True))
    return commands


def _derived(message_id: str | None, suffix: str) -> str | None:
    """The id of a part split off a message: within the id limit whenever the message's is."""
    if message_id is None:
        return None
    if type(message_id) is not str:  # (no call for the usual exact str: once per message)
        message_id = plain_str(message_id)
    derived = message_id + suffix
    if len(derived) <= MAX_ID_BYTES and derived.isascii():
        return derived
    raw = message_id.encode(errors="surrogatepass")
    if len(raw) > MAX_ID_BYTES or len(derived.encode(errors="surrogatepass")) <= MAX_ID_BYTES:
        return derived  # fits; or the message's own id is too long, and its check says so
    return hashlib.sha256(raw).hexdigest() + suffix


def _device_id(msg: Message | Line, context: SegmentContext | None) -> str:
    if context is not None and context.device is not None and context.device.id is not None:
        return context.device.id
    if msg.anonymous_id is not None:
        return msg.anonymous_id
    raise InvalidCommand("context.device.id", "no device: neither context.device.id nor anonymousId")


def _token(msg: Message | Line, context: SegmentContext | None, properties: dict[str, Any]
           ) -> Any:
    if context is not None and context.device is not None and context.device.token is not None:
        return context.device.token
    # Returned unchecked (may be a non-string): the handler's own rule names the bad token.
    token = properties.get("token")
    if token is None:
        raise InvalidCommand("context.device.token",
                             f"a {msg.event!r} message needs a push token (or properties.token)")
    return token



def messages_of(item: dict[str, Any] | str | bytes) -> list[Any]:
    """The messages one input item holds (a message, or each message of a batch envelope),
    each a :class:`Message` or the :class:`InvalidCommand` refusing it: see
    :func:`idstitch.adapters.batches.messages_of`, which this is."""
    from idstitch.adapters import batches  # it builds on this module's decoder

    return list(batches.messages_of(item))


__all__ = [
    "COLLECTED_KEYS", "CONTEXT_ATTRIBUTES", "Line", "Message", "SegmentContext",
    "context_attributes", "decode", "decode_line", "messages_of", "to_commands",
]
