"""The commands a workspace takes: one frozen Struct per call a mobile SDK makes.

A command is what the caller asked for, exactly as given: its fields are not validated when it
is built (msgspec does not check types on construction), because a command is the input that
the handlers validate, naming the field, before anything is recorded. Both the public methods
of the Workspace and the Segment ingest build these; a handler per type (in the service layer)
turns one into work on a device.

Every device command carries the caller's ``message_id`` (for de-duplication) and ``timestamp``
(the client's clock). Those that a batch from a device can carry also take ``sent_at`` (when the
batch left the device) and ``received_at`` (when the server received it; the workspace's clock
when absent), from which the timestamp is corrected for clock skew (identity-model.md §5).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class DeviceCommand(msgspec.Struct, frozen=True, kw_only=True):
    """What every device-scoped command names."""

    device_id: str
    message_id: str | None = None
    timestamp: datetime | None = None


class Skewed(DeviceCommand, frozen=True, kw_only=True):
    """A command whose timestamp may be corrected for the device's clock skew."""

    sent_at: datetime | None = None
    received_at: datetime | None = None


class Activate(DeviceCommand, frozen=True, kw_only=True):
    """The SDK was configured on the device (Adapty's activate); a customer user id identifies."""

    customer_user_id: str | None = None
    auto_track_device_attributes: bool = True
    platform: str | None = None
    sdk: dict[str, Any] | None = None


class Identify(Skewed, frozen=True, kw_only=True):
    """Somebody is identified on the device: an id, an email, or ``cio_<person_id>``.

    ``sdk_anonymous_id``: the SDK's ``anonymousId`` of the message (its session on the device:
    a new one means the SDK was reset). ``server``: a backend's identify, on the server-side
    stream of the user (``device_id`` is then :func:`~idstitch.domain.device.server_stream_id`).
    """

    user_id: str
    traits: dict[str, Any] | None = None
    sdk_anonymous_id: str | None = None
    server: bool = False


class SetProfileAttributes(Skewed, frozen=True, kw_only=True):
    """Attributes of the device's current person change: only the keys given.

    ``sdk_anonymous_id``: as for :class:`Identify`."""

    traits: dict[str, Any] | None = None
    set_once: dict[str, Any] | None = None
    unset: list[str] | None = None
    sdk_anonymous_id: str | None = None


class SetDeviceAttributes(Skewed, frozen=True, kw_only=True):
    """Custom device attributes (nested JSON allowed)."""

    attributes: dict[str, Any]


class CollectDeviceAttributes(Skewed, frozen=True, kw_only=True):
    """Attributes the SDK collected by itself; dropped when auto-tracking is off.

    ``changes_only``: record only the attributes whose value differs from what the device
    last collected (nothing when none does): a message's ``context`` repeats them all."""

    context: dict[str, Any]
    changes_only: bool = False


class RegisterDeviceToken(Skewed, frozen=True, kw_only=True):
    """The device's push token; a token held by another device moves here."""

    token: str
    platform: str | None = None


class RemoveDeviceToken(Skewed, frozen=True, kw_only=True):
    """The push provider said the token is dead, or the app deleted it."""

    token: str
    reason: str = "deleted"


class RecordPushStatus(DeviceCommand, frozen=True, kw_only=True):
    """``last_status`` of the device's token: sent, bounced or suppressed."""

    status: str


class ClearIdentify(DeviceCommand, frozen=True, kw_only=True):
    """Stop identifying: the device starts a new anonymous session; its token stays."""


class Logout(DeviceCommand, frozen=True, kw_only=True):
    """Adapty's logout: as ClearIdentify, but an anonymous device is an error."""


class MergePersons(msgspec.Struct, frozen=True, kw_only=True):
    """Merge two identified persons explicitly; the primary's values win on conflict.
    ``named``: set by its handler, once ``primary`` and ``secondary`` are the persons the
    identifiers name themselves (see :class:`~idstitch.domain.events.PersonsMerged`)."""

    primary: str
    secondary: str
    reason: str
    named: bool = False


class Unmerge(msgspec.Struct, frozen=True, kw_only=True):
    """Undo a merge: both sides as if it had never been recorded."""

    merge_id: str
    reason: str


class ForgetPerson(msgspec.Struct, frozen=True, kw_only=True):
    """Record that a person was forgotten (its keys already destroyed by the workspace)."""

    person_id: str
    reason: str
    members: list[str] = msgspec.field(default_factory=list)
    """The person and the persons merged into it."""
    devices: list[str] = msgspec.field(default_factory=list)
    """Their devices."""
    subjects: dict[str, str] = msgspec.field(default_factory=dict)
    """The key id of each stint that identified one of them -> that member (see
    :class:`~idstitch.domain.events.PersonForgotten`)."""
    held: list[tuple[str, str, int, int | None]] = msgspec.field(default_factory=list)
    """The emails they held, by keyed hash (see PersonForgotten)."""
    took: list[tuple[int, str]] = msgspec.field(default_factory=list)
    """Their token registrations that took a token from another device (see PersonForgotten)."""


Decision = MergePersons | Unmerge | ForgetPerson
"""The commands of the workspace's decisions stream (the Decisions aggregate takes them)."""

Command = (
    Activate
    | Identify
    | SetProfileAttributes
    | SetDeviceAttributes
    | CollectDeviceAttributes
    | RegisterDeviceToken
    | RemoveDeviceToken
    | RecordPushStatus
    | ClearIdentify
    | Logout
    | MergePersons
    | Unmerge
    | ForgetPerson
)
"""Every command the service layer has a handler for."""
