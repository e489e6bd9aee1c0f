"""What an event does to its own device and to its person's attributes, and nothing else.

These are the parts of the identity fold that need no other row: the fold calls them for the
present, and the audit (:mod:`idstitch.projections.audit`) calls the very same functions to
refold one device or one person as it stood at a past position. Everything that crosses rows
(who an identifier names, which device holds a token, merges) stays in the fold, which records
what the audit needs of it (stints, token losses, refused identifies) on the rows.
"""

from __future__ import annotations

from idstitch.domain import attributes
from idstitch.domain.attributes import Attrs
from idstitch.domain.device import anonymous_id_for
from idstitch.domain.events import (
    DeviceActivated,
    DeviceTokenRegistered,
    DeviceTokenRemoved,
    Identified,
    IdentityCleared,
    ProfileAttributesChanged,
    PushStatusRecorded,
)
from idstitch.projections.identity.rows import DeviceRow


def new_device(device_id: str, ts: int) -> DeviceRow:
    """A device at its first event (its person and anonymous id are set by the caller)."""
    return DeviceRow(device_id=device_id, person_id="", anonymous_id="", created_at=ts,
                     updated_at=ts)


def activated(dev: DeviceRow, ev: DeviceActivated) -> None:
    """The SDK configuration."""
    dev.auto_track = ev.auto_track_device_attributes
    dev.platform = ev.platform or dev.platform
    dev.sdk = ev.sdk if ev.sdk is not None else dev.sdk


def identified(dev: DeviceRow, ev: Identified, ts: int) -> None:
    """Somebody was identified on the device: it was used then, its push status starts over."""
    dev.user_id = ev.user_id
    if dev.last_used is None or ts > dev.last_used:
        dev.last_used = ts
    dev.last_status = None


def token_registered(dev: DeviceRow, ev: DeviceTokenRegistered) -> None:
    """The device's token (the fold moves it away from any other holder first)."""
    dev.token = ev.token
    dev.platform = ev.platform or dev.platform
    dev.last_status = None


def token_erased(dev: DeviceRow, ev: DeviceTokenRegistered) -> None:
    """A token registration that reads erased (its person was forgotten): the token was the
    person's value and replaced whatever the device had, so the device holds none; the
    platform, no personal value, stays."""
    dev.token = None
    dev.platform = ev.platform or dev.platform
    dev.last_status = None


def token_removed(dev: DeviceRow, ev: DeviceTokenRemoved) -> bool:
    """The token is dead: whether it was the device's (a stale removal changes nothing)."""
    if dev.token != ev.token:
        return False
    dev.token = None
    return True


def push_status(dev: DeviceRow, ev: PushStatusRecorded) -> None:
    """``last_status`` of the device's token."""
    dev.last_status = ev.status


def cleared(dev: DeviceRow, ev: IdentityCleared) -> None:
    """A new anonymous session (the fold gives it its new anonymous person)."""
    dev.generation = ev.generation
    dev.user_id = None
    dev.anonymous_id = anonymous_id_for(dev.device_id, ev.generation)
    dev.sdk_anonymous_id = ev.sdk_anonymous_id


def session(dev: DeviceRow, ev: Identified | ProfileAttributesChanged) -> None:
    """The SDK session an event adopted (a late one's is over: it changes nothing)."""
    if ev.sdk_anonymous_id is not None and not ev.late:
        dev.sdk_anonymous_id = ev.sdk_anonymous_id


def traits(attrs: Attrs, ev: Identified, pos: int, ts: int) -> None:
    """An identify's traits, written to the person it identified."""
    attributes.assign(attrs, ev.traits, (ts, pos))


def profile_attributes(attrs: Attrs, ev: ProfileAttributesChanged, pos: int, ts: int) -> None:
    """``set``, then ``unset``, then ``set_once``, all at the event's stamp."""
    stamp = (ts, pos)
    attributes.assign(attrs, ev.set, stamp)
    if ev.unset:
        attributes.assign(attrs, dict.fromkeys(ev.unset), stamp)
    if ev.set_once:
        attributes.assign_once(attrs, ev.set_once, stamp)
