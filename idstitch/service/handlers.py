"""One handler per command: validate it (identity-model.md §7), then stage its step.

A handler is a function of (command, unit of work). It checks every field with the domain's
rules, naming the field in ``InvalidCommand``, settles the times (clock-skew correction), and
stages the Device method that records the command's events. Nothing is recorded here: the unit
of work commits (one message for a public call, a batch for ingest). :data:`HANDLERS` is the one
map from command type to handler; the message bus and ingest both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from idstitch.domain import rules
from idstitch.domain.commands import (
    Activate,
    ClearIdentify,
    CollectDeviceAttributes,
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
from idstitch.domain.device import Device
from idstitch.domain.errors import InvalidCommand, UnknownPerson
from idstitch.domain.events import DECISIONS_STREAM, MergeUndone, PersonForgotten, PersonsMerged
from idstitch.service.uow import UnitOfWork

Common = tuple[str | None, datetime, datetime]
"""What every device event carries besides its own fields: message_id, timestamp, recorded_at."""


def _common(
    uow: UnitOfWork, message_id: object, timestamp: object, sent_at: object = None,
    received_at: object = None,
) -> Common:
    """The message id, the client time (skew-corrected) and the recorded time of a command."""
    mid = rules.check_message_id(message_id)
    # Times as ingest decodes them (aware, in UTC) or absent are settled without a call: this
    # runs for every ingested command.
    ts = (timestamp if timestamp is None or (type(timestamp) is datetime
                                             and timestamp.tzinfo is UTC)
          else rules.check_time("timestamp", timestamp))
    now = uow.now
    received = now if received_at is None else (rules.check_time("received_at", received_at)
                                                 or now)
    if sent_at is None:
        return mid, received if ts is None else ts, now
    sent = (sent_at if type(sent_at) is datetime and sent_at.tzinfo is UTC
            else rules.check_time("sent_at", sent_at))
    return mid, rules.client_time(ts, sent, received), now


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
    common = _common(uow, cmd.message_id, cmd.timestamp)
    uow.stage(cmd.device_id, common[0], Device.activate,
              (user_id, auto_track, platform, sdk, *common))


def identify(cmd: Identify, uow: UnitOfWork) -> None:
    """Identify a person on the device: an id, an email, or ``cio_<person_id>``."""
    user_id = rules.check_id("user_id", cmd.user_id)
    traits = rules.check_attributes("traits", cmd.traits, owned=uow.owned)
    _check_person_ref(uow, "user_id", user_id)
    sdk = rules.check_anonymous_id(cmd.sdk_anonymous_id)
    common = _common(uow, cmd.message_id, cmd.timestamp, cmd.sent_at, cmd.received_at)
    if cmd.server is True:
        uow.stage(cmd.device_id, common[0], Device.identify,
                  (user_id, traits, *common, None, True))
    elif sdk is None:
        uow.stage(cmd.device_id, common[0], Device.identify, (user_id, traits, *common))
    else:
        uow.stage(cmd.device_id, common[0], Device.identify, (user_id, traits, *common, sdk))


def set_profile_attributes(cmd: SetProfileAttributes, uow: UnitOfWork) -> None:
    """Change attributes of the device's current person: only the keys given."""
    set_ = rules.check_attributes("traits", cmd.traits, owned=uow.owned)
    once = rules.check_attributes("set_once", cmd.set_once, owned=uow.owned)
    gone = rules.check_keys("unset", cmd.unset)
    if len(set_) + len(once) + len(gone) > rules.MAX_ATTRIBUTES:
        raise InvalidCommand("traits", f"more than {rules.MAX_ATTRIBUTES} attributes in one call")
    sdk = rules.check_anonymous_id(cmd.sdk_anonymous_id)
    common = _common(uow, cmd.message_id, cmd.timestamp, cmd.sent_at, cmd.received_at)
    uow.stage(cmd.device_id, common[0], Device.set_profile_attributes,
              (set_, once, gone, *common) if sdk is None else (set_, once, gone, *common, sdk))


def _device_attributes(
    uow: UnitOfWork, cmd: SetDeviceAttributes | CollectDeviceAttributes, field: str,
    attributes: object, run: Callable[..., bool],
) -> None:
    """Custom or collected device attributes: the same checks, another event."""
    attrs = rules.check_attributes(field, attributes, allow_none=False, owned=uow.owned)
    common = _common(uow, cmd.message_id, cmd.timestamp, cmd.sent_at, cmd.received_at)
    uow.stage(cmd.device_id, common[0], run, (attrs, *common))


def set_device_attributes(cmd: SetDeviceAttributes, uow: UnitOfWork) -> None:
    """Custom device attributes (nested JSON allowed)."""
    _device_attributes(uow, cmd, "attributes", cmd.attributes, Device.set_device_attributes)


def collect_device_attributes(cmd: CollectDeviceAttributes, uow: UnitOfWork) -> None:
    """Auto-collected attributes; dropped when the device turned auto-tracking off."""
    if cmd.changes_only is True and type(cmd.context) is dict:
        # A message's context, as ingest maps it (every message carries one): the checks
        # its values need, no more.
        attrs = rules.check_collected("context", cmd.context, owned=uow.owned)
        common = _common(uow, cmd.message_id, cmd.timestamp, cmd.sent_at, cmd.received_at)
        uow.stage(cmd.device_id, common[0], Device.collect_changed_attributes, (attrs, *common))
        return
    _device_attributes(uow, cmd, "context", cmd.context, Device.collect_device_attributes)


def register_device_token(cmd: RegisterDeviceToken, uow: UnitOfWork) -> None:
    """The device's push token; a token held by another device moves here."""
    token = rules.check_text("token", cmd.token)
    platform = None if cmd.platform is None else rules.check_text("platform", cmd.platform)
    common = _common(uow, cmd.message_id, cmd.timestamp, cmd.sent_at, cmd.received_at)
    uow.stage(cmd.device_id, common[0], Device.register_device_token, (token, platform, *common))


def remove_device_token(cmd: RemoveDeviceToken, uow: UnitOfWork) -> None:
    """The token is dead (the push provider said so) or the app deleted it."""
    token = rules.check_text("token", cmd.token)
    reason = rules.check_text("reason", cmd.reason)
    common = _common(uow, cmd.message_id, cmd.timestamp, cmd.sent_at, cmd.received_at)
    uow.stage(cmd.device_id, common[0], Device.remove_device_token, (token, reason, *common))


def record_push_status(cmd: RecordPushStatus, uow: UnitOfWork) -> None:
    """``last_status`` of the device's token: sent, bounced or suppressed."""
    status = rules.check_text("status", cmd.status, allowed=rules.PUSH_STATUSES)
    common = _common(uow, cmd.message_id, cmd.timestamp)
    uow.stage(cmd.device_id, common[0], Device.record_push_status, (status, *common))


def clear_identify(cmd: ClearIdentify, uow: UnitOfWork) -> None:
    """Stop identifying: the device starts a new anonymous session; its token stays."""
    common = _common(uow, cmd.message_id, cmd.timestamp)
    uow.stage(cmd.device_id, common[0], Device.clear_identify, common)


def logout(cmd: Logout, uow: UnitOfWork) -> None:
    """Adapty's logout: as clear_identify, but an anonymous device raises NotIdentified."""
    common = _common(uow, cmd.message_id, cmd.timestamp)
    uow.stage(cmd.device_id, common[0], Device.logout, common)


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
    now = uow.now
    uow.decide(PersonsMerged(device_id=DECISIONS_STREAM, merge_id=cmd.merge_id,
                             primary=primary_id, secondary=secondary_id, reason=reason,
                             timestamp=now, recorded_at=now))


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
    now = uow.now
    uow.decide(MergeUndone(device_id=DECISIONS_STREAM, merge_id=merge_id, reason=reason,
                           timestamp=now, recorded_at=now))


def forget_person(cmd: ForgetPerson, uow: UnitOfWork) -> None:
    """Record a forget (identity-model.md §4). The workspace checked the person and destroyed
    its keys before this runs; only the pseudonymous person id is recorded."""
    person_id = rules.check_id("person_id", cmd.person_id)
    reason = rules.check_text("reason", cmd.reason)
    now = uow.now
    uow.decide(PersonForgotten(device_id=DECISIONS_STREAM, person_id=person_id, reason=reason,
                               timestamp=now, recorded_at=now))


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
    Logout: logout,
    MergePersons: merge_persons,
    Unmerge: unmerge,
    ForgetPerson: forget_person,
}
"""The one map from command type to handler."""
