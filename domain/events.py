"""The event catalogue: every device-scoped call is one of these, immutable, on a device's log.

Events are msgspec Structs (frozen, kw_only) forming one tagged union. The tag is the stored
topic: it is part of the storage format, so a tag is never renamed without an upcaster.
Every event repeats its ``device_id`` so that one row of the log reads on its own in an audit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

JSON = Any
"""A JSON value (validated by :mod:`idstitch.domain.rules` before any event is made)."""


class DeviceEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    # omit_defaults: the optional fields added later (key_id, sealed, erased) cost no bytes
    # when unset, and old events, which lack them, decode unchanged.
    """Fields every device event carries."""

    device_id: str
    message_id: str | None = None
    timestamp: datetime
    """The client's clock (corrected for skew when ``sent_at`` was given)."""
    recorded_at: datetime
    """When the workspace recorded the event."""
    # Short stored names ("k", "s"): every sealed event carries both.
    key_id: str | None = msgspec.field(default=None, name="k")
    """The data subject's key its personal values are sealed under (plaintext, so that a
    person's keys can be found and destroyed); None on events written before encryption."""
    sealed: bytes | None = msgspec.field(default=None, name="s")
    """Storage only: the personal values, encrypted (see :mod:`idstitch.adapters.crypto`).
    A decoded event never carries it: its values are back in their fields, or erased."""
    erased: bool = False
    """The key of :attr:`key_id` was destroyed (the person was forgotten): the personal
    values read as erased markers (an empty string, empty dicts and lists, None)."""


class DeviceActivated(DeviceEvent, frozen=True, kw_only=True, tag="DeviceActivated"):
    """The SDK was configured on this device (Adapty's activate)."""

    auto_track_device_attributes: bool = True
    platform: str | None = None
    sdk: dict[str, JSON] | None = None


class Identified(DeviceEvent, frozen=True, kw_only=True, tag="Identified", omit_defaults=True):
    """Somebody was identified on the device: an id, an email, or ``cio_<person_id>``."""

    user_id: str
    traits: dict[str, JSON] = {}
    sdk_anonymous_id: str | None = None
    """The SDK's ``anonymousId`` when it was news to the device: the first its current session
    carried (with ``late`` false), or that of an ended session (``late``)."""
    sdk_tag: str | None = None
    """The keyed hash of ``sdk_anonymous_id`` (plaintext, where events are encrypted): the
    device and the identity fold still tell that session's messages once its value reads
    erased (see :mod:`idstitch.domain.sdk_sessions`)."""
    late: bool = False
    """A message of an ended SDK session (its ``sdk_anonymous_id``): recorded, not applied."""
    server: bool = False
    """The first event of a server-side stream (a backend's identify with only a userId)."""


class ProfileAttributesChanged(DeviceEvent, frozen=True, kw_only=True,
                               tag="ProfileAttributesChanged", omit_defaults=True):
    """Attributes of the device's current person changed. A value of None in ``set`` removes."""

    set: dict[str, JSON] = {}
    set_once: dict[str, JSON] = {}
    unset: list[str] = []
    sdk_anonymous_id: str | None = None
    """As :attr:`Identified.sdk_anonymous_id`."""
    sdk_tag: str | None = None
    """As :attr:`Identified.sdk_tag`."""
    late: bool = False
    """As :attr:`Identified.late`."""


class DeviceAttributesChanged(DeviceEvent, frozen=True, kw_only=True, tag="DeviceAttributesChanged"):
    """Custom device attributes (they belong to the device, not the person)."""

    attributes: dict[str, JSON]


class DeviceAttributesCollected(
    DeviceEvent, frozen=True, kw_only=True, tag="DeviceAttributesCollected"
):
    """Automatically collected device attributes and the SDK context."""

    attributes: dict[str, JSON]


class DeviceTokenRegistered(DeviceEvent, frozen=True, kw_only=True, tag="DeviceTokenRegistered"):
    """A push token now belongs to this device (and so to its current person)."""

    token: str
    platform: str | None = None


class DeviceTokenRemoved(DeviceEvent, frozen=True, kw_only=True, tag="DeviceTokenRemoved"):
    """The push provider said the token is dead, or the app deleted it."""

    token: str
    reason: str


class PushStatusRecorded(DeviceEvent, frozen=True, kw_only=True, tag="PushStatusRecorded"):
    """``last_status`` of the device's token: sent, bounced or suppressed."""

    status: str


class IdentityCleared(DeviceEvent, frozen=True, kw_only=True, tag="IdentityCleared",
                      omit_defaults=True):
    """The device left its person and started anonymous session number ``generation``."""

    generation: int
    sdk_anonymous_id: str | None = None
    """The SDK's ``anonymousId`` of the new session, when a message with a new one implied
    the clear (the SDK was reset: Customer.io's clearIdentify, Segment's reset)."""
    sdk_tag: str | None = None
    """As :attr:`Identified.sdk_tag`."""


class PersonsMerged(DeviceEvent, frozen=True, kw_only=True, tag="PersonsMerged"):
    """An explicit merge of two identified persons (a decision, on the workspace's decisions
    stream: ``device_id`` is :data:`DECISIONS_STREAM`); the primary's values win.

    ``named`` (every merge recorded since it exists): ``primary`` and ``secondary`` are the
    identified persons the two identifiers named themselves (the owner of the user id, the
    person of a ``cio_`` or person id; for an email, the person it found then), not following
    earlier merges; the projection merges
    the persons each stands in when it folds the decision, so that a merge undone since (an
    unmerge before or after this one) routes it to the side of the identifier it was given.
    Without it (recorded before): the live persons as they were when it was decided."""

    merge_id: str
    primary: str
    secondary: str
    reason: str
    named: bool = False


class MergeUndone(DeviceEvent, frozen=True, kw_only=True, tag="MergeUndone"):
    """A merge undone (a decision, on the workspace's decisions stream)."""

    merge_id: str
    reason: str


class PersonForgotten(DeviceEvent, frozen=True, kw_only=True, tag="PersonForgotten"):
    """A person forgotten (the right to erasure; a decision, on the workspace's decisions
    stream), recorded once its keys were destroyed. Pseudonymous ids only (the person's, its
    family's, its devices'): never the identifier the forget named nor any other personal
    value (the log is append-only and this event is never shredded), so ``reason`` must not
    hold personal data either."""

    person_id: str
    reason: str
    members: list[str] = msgspec.field(default_factory=list)
    """The person and every person merged into it (pseudonymous ids), as the forget found them:
    what a custom projection's purge hook is given, in whichever process folds it (empty in
    the decisions recorded before it was kept: such a projection is then folded again)."""
    devices: list[str] = msgspec.field(default_factory=list)
    """Every device that was on one of them (device ids, plaintext in every event already)."""
    subjects: dict[str, str] = msgspec.field(default_factory=dict)
    """The key id of each stint in which one of them was identified -> that member's person id
    (pseudonymous both, the key ids plaintext in every event already): an identify that reads
    erased still puts its device on the person it put it on, so that a forget changes values,
    never which device is on whom (empty in the decisions recorded before it was kept: their
    erased identifies are then ignored)."""
    held: list[tuple[str, str, int, int | None]] = msgspec.field(default_factory=list)
    """Each email one of them held: (its keyed hash, hex, as the suppressed identifiers keep
    it; the member; the position it was claimed at; the position it was let go at, or None),
    so that another person's later claim of it is refused as it was, though the member's own
    claim reads erased."""
    took: list[tuple[int, str]] = msgspec.field(default_factory=list)
    """(position, device) of each token registration of theirs that took the token from
    another device: read erased, it still leaves that device without it."""


DECISIONS_STREAM = "workspace:decisions"
"""The stream of the workspace's person-level decisions, beside the devices in the same log (no
device command may name it: the handlers refuse it as a device id)."""

DECISION_TYPES: tuple[type[DeviceEvent], ...] = (PersonsMerged, MergeUndone, PersonForgotten)
"""The events of the decisions stream."""

AnyDeviceEvent = (
    DeviceActivated
    | Identified
    | ProfileAttributesChanged
    | DeviceAttributesChanged
    | DeviceAttributesCollected
    | DeviceTokenRegistered
    | DeviceTokenRemoved
    | PushStatusRecorded
    | IdentityCleared
    | PersonsMerged
    | MergeUndone
    | PersonForgotten
)
"""The tagged union one reused decoder reads every stored device event with."""

EVENT_TYPES: tuple[type[DeviceEvent], ...] = (
    DeviceActivated,
    Identified,
    ProfileAttributesChanged,
    DeviceAttributesChanged,
    DeviceAttributesCollected,
    DeviceTokenRegistered,
    DeviceTokenRemoved,
    PushStatusRecorded,
    IdentityCleared,
    PersonsMerged,
    MergeUndone,
    PersonForgotten,
)

PERSONAL: dict[type[DeviceEvent], dict[str, Any]] = {
    Identified: {"user_id": "", "traits": {}, "sdk_anonymous_id": None},
    ProfileAttributesChanged: {"set": {}, "set_once": {}, "unset": [], "sdk_anonymous_id": None},
    DeviceAttributesChanged: {"attributes": {}},
    DeviceAttributesCollected: {"attributes": {}},
    DeviceTokenRegistered: {"token": ""},
    DeviceTokenRemoved: {"token": ""},
    IdentityCleared: {"sdk_anonymous_id": None},
}
"""Per event type, its personal fields and the erased marker each reads as once the key is
gone. Everything else (device id, message id, times, platform, SDK name and version, push
status, a clear's generation) stays plaintext."""
