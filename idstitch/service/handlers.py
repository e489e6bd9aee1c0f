"""One handler per command: check it (identity-model.md §7), then stage it.

A handler is a function of (command, unit of work). It checks every field with the domain's
rules, once, naming the field in ``InvalidCommand``, settles the times (clock-skew correction),
and stages the checked command: the same command with its values as the rules return them
(copied where the caller still holds them) and its timestamp corrected, which its aggregate
takes at commit (``aggregate.handle(command, now)``: a device, or the workspace's decisions).
Nothing is recorded here: the unit of work commits (a batch of one message for a public call,
of many for ingest). :data:`HANDLERS` is the one map from command type to handler; the message
bus and ingest both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from msgspec.structs import replace

from idstitch.domain import rules
from idstitch.domain.commands import (
    Activate,
    ClearIdentify,
    CollectDeviceAttributes,
    DeviceCommand,
    ForgetPerson,
    Identify,
    Logout,
    MergePersons,
    RecordPushStatus,
    RegisterDeviceToken,
    RemoveDeviceToken,
    SetDeviceAttributes,
    SetProfileAttributes,
    Unmerge,
)
from idstitch.domain.errors import InvalidCommand, UnknownPerson
from idstitch.service.uow import UnitOfWork


def _settled(
    uow: UnitOfWork, cmd: DeviceCommand, sent_at: object = None, received_at: object = None,
) -> tuple[str, str | None, datetime]:
    """The checked device id and message id of a command, and its client time (corrected
    for clock skew when it has a ``sent_at``; the received time when it has no timestamp)."""
    mid = rules.check_message_id(cmd.message_id)
    timestamp = cmd.timestamp
    now = uow.now
    last = uow.settled
    if (timestamp is last[0] and sent_at is last[1] and received_at is last[2]
            and now is last[3]):
        # The very time objects the previous command was settled with (the commands of one
        # ingested message share them): its client time, without settling them again.
        return uow.device_id(cmd.device_id), mid, last[4]
    # Times as ingest decodes them (aware, in UTC) or absent are settled without a call: this
    # runs for every ingested command.
    plain = timestamp is None or (type(timestamp) is datetime and timestamp.tzinfo is UTC)
    ts = timestamp if plain else rules.check_time("timestamp", timestamp)
    if received_at is None:
        received = now
    elif type(received_at) is datetime and received_at.tzinfo is UTC:
        received = received_at
    else:
        received, plain = rules.check_time("received_at", received_at) or now, False
    if sent_at is not None:
        sent: datetime | None
        if type(sent_at) is datetime and sent_at.tzinfo is UTC:
            sent = sent_at
        else:
            sent, plain = rules.check_time("sent_at", sent_at), False
        ts = rules.client_time(ts, sent, received)
    settled = received if ts is None else ts
    if plain:
        # Remembered only for exact UTC datetimes (or none): immutable values, which settle
        # the same every time (another tzinfo's offset is its own code's to give).
        uow.settled = (timestamp, sent_at, received_at, now, settled)
    return uow.device_id(cmd.device_id), mid, settled


def _check_person_ref(uow: UnitOfWork, field: str, user_id: str) -> None:
    """A ``cio_<person_id>`` must name a live, identified person as the log stands now."""
    if rules.classify(user_id) != "cio":
        return
    person_id = user_id[len(rules.PERSON_PREFIX):]
    # Earlier messages (of this batch, too) may have created or retired that person.
    row = uow.persons.row(person_id)
    if row is None:
        raise UnknownPerson(field, person_id)
    if row.retired_into is not None:
        raise UnknownPerson(field, person_id, f"was merged into {row.retired_into}")
    if not row.identified:
        raise UnknownPerson(field, person_id, "is anonymous: cio_ names identified persons")


def activate(cmd: Activate, uow: UnitOfWork) -> None:
    """The SDK was configured on the device; with a customer user id it identifies too."""
    user_id = rules.check_optional_id("customer_user_id", cmd.customer_user_id)
    if user_id is not None:
        _check_person_ref(uow, "customer_user_id", user_id)
    auto_track = cmd.auto_track_device_attributes
    if not isinstance(auto_track, bool):
        raise InvalidCommand("auto_track_device_attributes", "must be True or False")
    platform = None if cmd.platform is None else rules.check_text("platform", cmd.platform)
    sdk = None if cmd.sdk is None else rules.check_attributes("sdk", cmd.sdk)
    device_id, message_id, timestamp = _settled(uow, cmd)
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                      customer_user_id=user_id, platform=platform, sdk=sdk))


def identify(cmd: Identify, uow: UnitOfWork) -> None:
    """Identify a person on the device: an id, an email, or ``cio_<person_id>``."""
    user_id = rules.check_id("user_id", cmd.user_id)
    traits = rules.check_attributes("traits", cmd.traits, owned=uow.owned)
    _check_person_ref(uow, "user_id", user_id)
    sdk = rules.check_anonymous_id(cmd.sdk_anonymous_id)
    device_id, message_id, timestamp = _settled(uow, cmd, cmd.sent_at, cmd.received_at)
    server = cmd.server is True
    # A backend's identify names no SDK session: a server-side stream has none.
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                      sent_at=None, received_at=None, user_id=user_id, traits=traits,
                      sdk_anonymous_id=None if server else sdk, server=server))


def set_profile_attributes(cmd: SetProfileAttributes, uow: UnitOfWork) -> None:
    """Change attributes of the device's current person: only the keys given."""
    set_ = rules.check_attributes("traits", cmd.traits, owned=uow.owned)
    once = rules.check_attributes("set_once", cmd.set_once, owned=uow.owned)
    gone = rules.check_keys("unset", cmd.unset)
    if len(set_) + len(once) + len(gone) > rules.MAX_ATTRIBUTES:
        raise InvalidCommand("traits", f"more than {rules.MAX_ATTRIBUTES} attributes in one call")
    sdk = rules.check_anonymous_id(cmd.sdk_anonymous_id)
    device_id, message_id, timestamp = _settled(uow, cmd, cmd.sent_at, cmd.received_at)
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                      sent_at=None, received_at=None, traits=set_, set_once=once, unset=gone,
                      sdk_anonymous_id=sdk))


def set_device_attributes(cmd: SetDeviceAttributes, uow: UnitOfWork) -> None:
    """Custom device attributes (nested JSON allowed)."""
    attrs = rules.check_attributes("attributes", cmd.attributes, allow_none=False,
                                   owned=uow.owned)
    device_id, message_id, timestamp = _settled(uow, cmd, cmd.sent_at, cmd.received_at)
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                      sent_at=None, received_at=None, attributes=attrs))


def collect_device_attributes(cmd: CollectDeviceAttributes, uow: UnitOfWork) -> None:
    """Auto-collected attributes; dropped when the device turned auto-tracking off."""
    changes_only = cmd.changes_only is True and type(cmd.context) is dict
    if changes_only:
        # A message's context, as ingest maps it (every message carries one): the checks
        # its values need, no more.
        attrs = rules.check_collected("context", cmd.context, owned=uow.owned)
    else:
        attrs = rules.check_attributes("context", cmd.context, allow_none=False,
                                       owned=uow.owned)
    device_id, message_id, timestamp = _settled(uow, cmd, cmd.sent_at, cmd.received_at)
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                      sent_at=None, received_at=None, context=attrs, changes_only=changes_only))


def register_device_token(cmd: RegisterDeviceToken, uow: UnitOfWork) -> None:
    """The device's push token; a token held by another device moves here."""
    token = rules.check_text("token", cmd.token)
    platform = None if cmd.platform is None else rules.check_text("platform", cmd.platform)
    device_id, message_id, timestamp = _settled(uow, cmd, cmd.sent_at, cmd.received_at)
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                      sent_at=None, received_at=None, token=token, platform=platform))


def remove_device_token(cmd: RemoveDeviceToken, uow: UnitOfWork) -> None:
    """The token is dead (the push provider said so) or the app deleted it."""
    token = rules.check_text("token", cmd.token)
    reason = rules.check_text("reason", cmd.reason)
    device_id, message_id, timestamp = _settled(uow, cmd, cmd.sent_at, cmd.received_at)
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                      sent_at=None, received_at=None, token=token, reason=reason))


def record_push_status(cmd: RecordPushStatus, uow: UnitOfWork) -> None:
    """``last_status`` of the device's token: sent, bounced or suppressed."""
    status = rules.check_text("status", cmd.status, allowed=rules.PUSH_STATUSES)
    device_id, message_id, timestamp = _settled(uow, cmd)
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                      status=status))


def clear_identify(cmd: ClearIdentify | Logout, uow: UnitOfWork) -> None:
    """Stop identifying: the device starts a new anonymous session; its token stays. (Adapty's
    logout is the same command with a refusal of its own: the device raises NotIdentified
    when nobody is identified on it.)"""
    device_id, message_id, timestamp = _settled(uow, cmd)
    uow.stage(replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp))


def _identified_person(uow: UnitOfWork, field: str, identifier: str) -> str:
    """The person id of the identified person an identifier finds now (UnknownPerson if none)."""
    profile = uow.persons.profile(identifier)
    if profile is None:
        raise UnknownPerson(field, identifier)
    if not profile.identified:
        raise UnknownPerson(field, identifier, "is anonymous: only identified persons merge")
    person_id: str = profile.person_id
    return person_id


def merge_persons(cmd: MergePersons, uow: UnitOfWork) -> None:
    """An explicit merge (identity-model.md §4): both sides identified, and not the same."""
    primary = rules.check_id("primary", cmd.primary)
    secondary = rules.check_id("secondary", cmd.secondary)
    reason = rules.check_text("reason", cmd.reason)
    primary_id = _identified_person(uow, "primary", primary)
    secondary_id = _identified_person(uow, "secondary", secondary)
    if primary_id == secondary_id:
        raise InvalidCommand("secondary", f"{secondary!r} is the same person as the primary "
                                          f"({primary_id})")
    uow.decide(replace(cmd, primary=primary_id, secondary=secondary_id, reason=reason))


UNDOABLE = frozenset({"explicit", "merged"})
"""The kinds of merge record an unmerge undoes: explicit merges and anonymous merges."""


def unmerge(cmd: Unmerge, uow: UnitOfWork) -> None:
    """Undo a merge (identity-model.md §4): an explicit one, or an anonymous person's merge on
    identify; not a conversion or a switch (nothing was merged), not one undone already."""
    merge_id = rules.check_id("merge_id", cmd.merge_id)
    reason = rules.check_text("reason", cmd.reason)
    row = uow.persons.merge(merge_id)
    if row is None:
        raise InvalidCommand("merge_id", f"no merge {merge_id!r}")
    if row.kind == "unmerged":
        raise InvalidCommand("merge_id", f"merge {merge_id!r} was undone already")
    if row.kind not in UNDOABLE:
        raise InvalidCommand("merge_id", f"{merge_id!r} is a {row.kind} record, not a merge: "
                                         "nothing was merged to undo")
    uow.decide(replace(cmd, merge_id=merge_id, reason=reason))


def forget_person(cmd: ForgetPerson, uow: UnitOfWork) -> None:
    """Record a forget (identity-model.md §4). The workspace checked the person and destroyed
    its keys before this runs; only the pseudonymous person id is recorded."""
    person_id = rules.check_id("person_id", cmd.person_id)
    reason = rules.check_text("reason", cmd.reason)
    uow.decide(replace(cmd, person_id=person_id, reason=reason))


HANDLERS: dict[type[Any], Callable[[Any, UnitOfWork], None]] = {
    Activate: activate,
    Identify: identify,
    SetProfileAttributes: set_profile_attributes,
    SetDeviceAttributes: set_device_attributes,
    CollectDeviceAttributes: collect_device_attributes,
    RegisterDeviceToken: register_device_token,
    RemoveDeviceToken: remove_device_token,
    RecordPushStatus: record_push_status,
    ClearIdentify: clear_identify,
    Logout: clear_identify,
    MergePersons: merge_persons,
    Unmerge: unmerge,
    ForgetPerson: forget_person,
}
"""The one map from command type to handler."""
