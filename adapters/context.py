"""The ``context`` of a Segment message: the device it names and what the SDK collected.

Mobile SDKs send, with every message, the device (``context.device``: its id, push token,
platform, model) and what they know about it (app version, OS, locale, timezone, network,
screen). :func:`context_attributes` turns the latter into collected device attributes, named as
Customer.io names them where it has a name (:data:`CONTEXT_ATTRIBUTES`).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

CONTEXT_ATTRIBUTES: Final = (
    ("app.version", "app_version"), ("os.name", "device_os_name"), ("os.version", "device_os"),
    ("locale", "device_locale"), ("timezone", "timezone"),
    ("network.wifi", "network_wifi"), ("network.cellular", "network_cellular"),
    ("network.bluetooth", "network_bluetooth"), ("network.carrier", "network_carrier"),
    ("screen.width", "screen_width"), ("screen.height", "screen_height"),
    ("screen.density", "screen_density"),
    ("device.model", "device_model"), ("device.manufacturer", "device_manufacturer"),
)
"""``context`` fields -> the collected device attribute each becomes (Customer.io's names
where it has one; docs/howto/ingest.md has the table)."""


class SegmentDevice(msgspec.Struct, frozen=True, gc=False):
    """``context.device``: the installation id, its push token and its platform, its model."""

    id: str | None = None
    token: str | None = None
    type: str | None = None
    model: Any = None
    manufacturer: Any = None


class SegmentApp(msgspec.Struct, frozen=True, gc=False):
    """``context.app``: only the version is read."""

    version: Any = None


class SegmentOS(msgspec.Struct, frozen=True, gc=False):
    """``context.os``."""

    name: Any = None
    version: Any = None


class SegmentNetwork(msgspec.Struct, frozen=True, gc=False):
    """``context.network``."""

    wifi: Any = None
    cellular: Any = None
    bluetooth: Any = None
    carrier: Any = None


class SegmentScreen(msgspec.Struct, frozen=True, gc=False):
    """``context.screen``."""

    width: Any = None
    height: Any = None
    density: Any = None


class SegmentContext(msgspec.Struct, frozen=True, gc=False):
    """``context``: the device, and what the SDK collected about it (values unchecked: the
    handler checks them as attributes, naming the attribute)."""

    device: SegmentDevice | None = None
    app: SegmentApp | None = None
    os: SegmentOS | None = None
    locale: Any = None
    timezone: Any = None
    network: SegmentNetwork | None = None
    screen: SegmentScreen | None = None
    traits: dict[str, Any] | None = None
    """Where RudderStack's libraries (and Segment's on non-identify calls) carry the user's
    traits: an identify without root ``traits`` takes these."""


def context_attributes(context: SegmentContext | None) -> dict[str, Any]:
    """The collected device attributes a message's ``context`` holds (:data:`CONTEXT_ATTRIBUTES`),
    the fields it does not have left out."""
    out: dict[str, Any] = {}
    if context is None:
        return out
    app, os_, network, screen, device = (context.app, context.os, context.network,
                                         context.screen, context.device)
    if app is not None and app.version is not None:
        out["app_version"] = app.version
    if os_ is not None:
        if os_.name is not None:
            out["device_os_name"] = os_.name
        if os_.version is not None:
            out["device_os"] = os_.version
    if context.locale is not None:
        out["device_locale"] = context.locale
    if context.timezone is not None:
        out["timezone"] = context.timezone
    # Unrolled (no getattr loop): this runs for nearly every message ingest reads.
    if network is not None:
        if network.wifi is not None:
            out["network_wifi"] = network.wifi
        if network.cellular is not None:
            out["network_cellular"] = network.cellular
        if network.bluetooth is not None:
            out["network_bluetooth"] = network.bluetooth
        if network.carrier is not None:
            out["network_carrier"] = network.carrier
    if screen is not None:
        if screen.width is not None:
            out["screen_width"] = screen.width
        if screen.height is not None:
            out["screen_height"] = screen.height
        if screen.density is not None:
            out["screen_density"] = screen.density
    if device is not None:
        if device.model is not None:
            out["device_model"] = device.model
        if device.manufacturer is not None:
            out["device_manufacturer"] = device.manufacturer
    return out


CONTEXT_CACHE = 4096
"""How many distinct context texts a process keeps decoded (see :func:`context_of`)."""

_context_decoder: msgspec.json.Decoder[SegmentContext | None] = msgspec.json.Decoder(
    SegmentContext | None)
_contexts: dict[bytes, tuple[SegmentContext | None, dict[str, Any]]] = {}


def context_of(text: bytes) -> tuple[SegmentContext | None, dict[str, Any]]:
    """A message's ``context`` from its JSON text, and its collected attributes.

    An SDK repeats the same context, byte for byte, on every message of a device until
    something in it changes (an app update, a new locale): a process decodes each distinct
    text once (up to :data:`CONTEXT_CACHE` of them), and every message carrying it shares
    the decoded context and the attributes dict, which nobody changes (the device copies what
    it records). The same text always decodes to the same values of the same types, so a
    shared answer is the answer decoding would give. A context holding ``traits`` is not kept
    (they become the identify's own traits). Raises msgspec's errors for a context that does
    not decode (the caller names the field)."""
    found = _contexts.get(text)
    if found is not None:
        return found
    context = _context_decoder.decode(text)
    answer = (context, context_attributes(context))
    if context is None or context.traits is None:
        if len(_contexts) >= CONTEXT_CACHE:
            _contexts.clear()  # a new generation: the contexts in use come back at once
        _contexts[text] = answer
    return answer


__all__ = ["CONTEXT_ATTRIBUTES", "CONTEXT_CACHE", "SegmentContext", "SegmentDevice",
           "context_attributes", "context_of"]
