"""Segment-spec messages, as Customer.io's mobile SDKs send them, turned into Workspace calls.

This is the ingest hot path (millions of lines), so a line is decoded once, by one reused typed
msgspec ``Decoder``, straight into Structs: no ``json`` module, no dict walk, no regex. Only the
fields the mapping reads are declared; msgspec skips the rest of the message unparsed.

The mapping (api.md, "Bulk") is a pure function from a :class:`Message` to :class:`Call` values.
A ``Call`` names a Workspace method and holds exactly its arguments, so this module never imports
the front door (adapters must not): it means
``getattr(ws, call.method)(call.device_id, *call.args, **call.kwargs)`` (ingest runs the same
validation without the public method's own append). Traits, properties and ids are passed
through unchecked: the Workspace validates them with its own rules, naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from idstitch.domain.errors import InvalidCommand

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


class SegmentDevice(msgspec.Struct, frozen=True, gc=False):
    """``context.device``: the installation id, its push token and its platform."""

    id: str | None = None
    token: str | None = None
    type: str | None = None


class SegmentContext(msgspec.Struct, frozen=True):
    """``context``: only the device is read."""

    device: SegmentDevice | None = None


class Message(msgspec.Struct, frozen=True, rename="camel"):
    """The subset of a Segment message that the mapping reads (JSON names are camelCase)."""

    type: MessageType
    user_id: str | None = None
    anonymous_id: str | None = None
    message_id: str | None = None
    timestamp: AwareTime | None = None
    sent_at: AwareTime | None = None
    event: str | None = None
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    context: SegmentContext | None = None


class Call(msgspec.Struct, frozen=True):
    """One Workspace command: ``getattr(ws, method)(device_id, *args, **kwargs)``."""

    method: str
    device_id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
_MISSING = "Object missing required field "
_UNKNOWN_VALUE = "Invalid enum value "
_TYPES = ", ".join(get_args(MessageType))


def decode(raw: dict[str, Any] | str | bytes) -> Message:
    """A message from a JSON line (str or bytes) or an already parsed dict.

    Raises :class:`InvalidCommand` naming the field (JSON path without ``$.``, e.g.
    ``context.device.id``; ``message`` for the line as a whole) for input that is not JSON,
    not an object, has a missing or unknown ``type``, a field of the wrong type, or a timestamp
    without timezone.
    """
    try:
        if isinstance(raw, (str, bytes)):
            return _decoder.decode(raw)
        return msgspec.convert(raw, Message)
    # ValidationError subclasses DecodeError, so it must be caught first.
    except msgspec.ValidationError as e:
        raise _invalid(str(e)) from e
    except msgspec.DecodeError as e:
        raise InvalidCommand("message", f"is not JSON: {e}") from e


def _invalid(text: str) -> InvalidCommand:
    # msgspec says "<reason> - at `$.a.b`" (or "... - at `key` in `$.a`"); no path: the root.
    reason, sep, where = text.partition(" - at ")
    path = where.rsplit("`", 2)[-2] if sep else "$"
    field = path[2:] if path.startswith("$.") else ""
    if reason.startswith(_MISSING):
        name = reason[len(_MISSING):].strip("`")
        field = f"{field}.{name}" if field else name
        reason = "is required"
    elif field == "type" and reason.startswith(_UNKNOWN_VALUE):
        reason = f"{reason[len(_UNKNOWN_VALUE):]} is not a message type; expected one of {_TYPES}"
    else:
        reason = reason[:1].lower() + reason[1:]
    return InvalidCommand(field or "message", reason)


def to_calls(msg: Message) -> list[Call] | None:
    """The Workspace calls a message maps to, or None when the message is ignored.

    - ``identify`` with a ``userId``: ``identify``; with only an ``anonymousId``:
      ``set_profile_attributes`` on the device's (anonymous) current person.
    - ``track`` "Device Created or Updated": ``register_device_token`` (token from
      ``context.device.token``, else ``properties.token``; platform from ``context.device.type``),
      then ``collect_device_attributes`` with the auto-collected properties and
      ``set_device_attributes`` with the others, each only when it has keys.
    - ``track`` "Device Deleted": ``remove_device_token`` (reason ``deleted``).
    - Any other ``track``, and ``screen``, ``page``, ``group``, ``alias``: ignored (None).

    The device is ``context.device.id``, else the ``anonymousId``. A device de-duplicates by
    message id, so the attribute calls split off one "Device Created or Updated" carry derived ids,
    ``<messageId>#collected`` and ``<messageId>#custom``: all parts are recorded, and ingesting
    the same message again still de-duplicates each part.

    Raises :class:`InvalidCommand` for an identify with neither ``userId`` nor ``anonymousId``
    (field ``userId``), a message with no device (``context.device.id``), and a device message
    without a token (``context.device.token``).
    """
    if msg.type == "identify":
        if msg.user_id is None and msg.anonymous_id is None:
            raise InvalidCommand("userId", "an identify needs a userId or an anonymousId")
        device_id = _device_id(msg)
        if msg.user_id is not None:
            return [Call("identify", device_id, (msg.user_id, msg.traits), _common(msg))]
        return [Call("set_profile_attributes", device_id, (msg.traits,), _common(msg))]
    if msg.type != "track":
        return None
    if msg.event == DEVICE_UPDATED:
        return _device_updated(msg)
    if msg.event == DEVICE_DELETED:
        device_id = _device_id(msg)
        token = _token(msg, msg.properties or {})
        # remove_device_token takes no sent_at: the Workspace corrects no skew for it.
        kwargs = {"reason": "deleted", "message_id": msg.message_id, "timestamp": msg.timestamp}
        return [Call("remove_device_token", device_id, (token,), kwargs)]
    return None


def _device_updated(msg: Message) -> list[Call]:
    device_id = _device_id(msg)
    properties = msg.properties or {}
    token = _token(msg, properties)
    device = msg.context.device if msg.context is not None else None
    platform = device.type if device is not None else None
    calls = [Call("register_device_token", device_id, (token,),
                  {"platform": platform, **_common(msg)})]
    collected: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in properties.items():
        if key in COLLECTED_KEYS:
            collected[key] = value
        elif key != "token":
            custom[key] = value
    if collected:
        calls.append(Call("collect_device_attributes", device_id, (collected,),
                          _common(msg, COLLECTED_SUFFIX)))
    if custom:
        calls.append(Call("set_device_attributes", device_id, (custom,), _common(msg, CUSTOM_SUFFIX)))
    return calls


def _device_id(msg: Message) -> str:
    context = msg.context
    if context is not None and context.device is not None and context.device.id is not None:
        return context.device.id
    if msg.anonymous_id is not None:
        return msg.anonymous_id
    raise InvalidCommand("context.device.id", "no device: neither context.device.id nor anonymousId")


def _token(msg: Message, properties: dict[str, Any]) -> Any:
    context = msg.context
    if context is not None and context.device is not None and context.device.token is not None:
        return context.device.token
    # Returned unchecked (may be a non-string): the Workspace's own rule names the bad token.
    token = properties.get("token")
    if token is None:
        raise InvalidCommand("context.device.token",
                             f"a {msg.event!r} message needs a push token (or properties.token)")
    return token


def _common(msg: Message, suffix: str = "") -> dict[str, Any]:
    message_id = msg.message_id
    return {
        "message_id": None if message_id is None else message_id + suffix,
        "timestamp": msg.timestamp,
        "sent_at": msg.sent_at,
    }


__all__ = ["COLLECTED_KEYS", "Call", "Message", "decode", "to_calls"]
