"""One check per command type: a command is checked once, where it enters the service.

The message bus checks the command a public method built, ingest each command a message maps
to, with the same function (:func:`check`), before any handler runs: every field is judged here
by the domain's rules (identity-model.md §7), naming the field in ``InvalidCommand``, and the
times are settled (the clock-skew correction). What a check returns is the command its handler
takes: the same command with its values as the rules return them (copied where the caller
still holds them, plain ``str`` for a ``str`` subclass) and its timestamp corrected. Nothing is
read or recorded here; what needs the log (a ``cio_`` id naming a live person, the two sides of
a merge) is the handler's, through the unit of work. The public command methods have no type
check of their own at the argument boundary (:mod:`idstitch.service.arguments`): this is it.
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
    Command,
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
from idstitch.domain.errors import InvalidCommand
from idstitch.domain.events import DECISIONS_STREAM
from idstitch.domain.ids import SERVER_PREFIX, server_stream_id

_NOTHING = object()
_UNSETTLED: tuple[object, object, object, object, datetime] = (
    _NOTHING, _NOTHING, _NOTHING, _NOTHING, datetime.min)
"""No times settled yet (matches no command's)."""


class Entry:
    """Where commands enter: what a check knows besides the command, and its memos.

    One per caller (a bus call, an ingest run), reused for every command that enters through it:
    the commands of one ingested message share their time objects and device id, which are then
    judged once (the memos)."""

    __slots__ = ("_device_id", "now", "owned", "settled")

    def __init__(self, now: datetime, owned: bool = False) -> None:
        self.now = now
        """The recorded time of the commands entering now, and the received time of the
        clock-skew correction when a command gives none."""
        self.owned = owned
        """The commands' JSON values were just decoded from text and nobody else holds them:
        no copy needed."""
        self.settled: tuple[object, object, object, object, datetime] = _UNSETTLED
        """The times the last command was settled from and its client time (a memo:
        ``(timestamp, sent_at, received_at, now, client time)``)."""
        self._device_id: str | None = None

    def device_id(self, device_id: object, server: bool = False) -> str:
        """A command's device id, checked (the decisions stream's name is no device's, and
        ``server:`` begins only a backend identify's server-side stream: ``server``)."""
        last = self._device_id
        if device_id is last and last is not None:
            # The very id the previous command was checked with (a message's context follows
            # its command on the same device): accepted already.
            return last
        checked = rules.check_id("device_id", device_id)
        if checked == DECISIONS_STREAM:
            raise InvalidCommand("device_id", f"{checked!r} is reserved for the workspace's "
                                              "decisions")
        if checked.startswith(SERVER_PREFIX) and not server:
            # A server-side stream's id is a hash anyone can compute: an installation named
            # so would plant its anonymous person's attributes in the user's profile.
            raise InvalidCommand("device_id", f"{SERVER_PREFIX!r} begins the ids of server-side "
                                              "streams (a backend's identifies), no device's")
        if not server:
            self._device_id = checked
        return checked


def check(command: Command, entry: Entry) -> Command:
    """The command checked: every field judged, its times settled; InvalidCommand naming the
    first field a rule refuses."""
    checked: Command = CHECKS[type(command)](command, entry)
    return checked


def _settled(
    entry: Entry, cmd: DeviceCommand, sent_at: object = None, received_at: object = None,
    server: bool = False,
) -> tuple[str, str | None, datetime]:
    """The checked device id and message id of a command, and its client time (corrected
    for clock skew when it has a ``sent_at``; the received time when it has no timestamp)."""
    mid = rules.check_message_id(cmd.message_id)
    timestamp = cmd.timestamp
    now = entry.now
    last = entry.settled
    if (timestamp is last[0] and sent_at is last[1] and received_at is last[2]
            and now is last[3]):
        # The very time objects the previous command was settled with (the commands of one
        # ingested message share them): its client time, without settling them again.
        return entry.device_id(cmd.device_id, server), mid, last[4]
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
        entry.settled = (timestamp, sent_at, received_at, now, settled)
    return entry.device_id(cmd.device_id, server), mid, settled


def activate(cmd: Activate, entry: Entry) -> Activate:
    """The SDK configuration: a customer user id is an id, the SDK's details JSON."""
    user_id = rules.check_optional_id("customer_user_id", cmd.customer_user_id)
    auto_track = cmd.auto_track_device_attributes
    if not isinstance(auto_track, bool):
        raise InvalidCommand("auto_track_device_attributes",
                             f"must be True or False, got {type(auto_track).__name__}")
    platform = None if cmd.platform is None else rules.check_text("platform", cmd.platform)
    sdk = None if cmd.sdk is None else rules.check_attributes("sdk", cmd.sdk)
    device_id, message_id, timestamp = _settled(entry, cmd)
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                   customer_user_id=user_id, platform=platform, sdk=sdk)


def identify(cmd: Identify, entry: Entry) -> Identify:
    """An identify: an id (an email, ``cio_<person_id>``), traits, the SDK's session."""
    user_id = rules.check_id("user_id", cmd.user_id)
    traits = rules.check_attributes("traits", cmd.traits, owned=entry.owned)
    sdk = rules.check_anonymous_id(cmd.sdk_anonymous_id)
    server = cmd.server is True
    if server and cmd.device_id != server_stream_id(user_id):
        raise InvalidCommand("device_id", "a server-side identify is recorded on the user's "
                                          "server-side stream (idstitch.server_stream_id)")
    device_id, message_id, timestamp = _settled(entry, cmd, cmd.sent_at, cmd.received_at,
                                                server)
    # A backend's identify names no SDK session: a server-side stream has none.
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                   sent_at=None, received_at=None, user_id=user_id, traits=traits,
                   sdk_anonymous_id=None if server else sdk, server=server)


def set_profile_attributes(cmd: SetProfileAttributes, entry: Entry) -> SetProfileAttributes:
    """Attributes to set, to set once, to unset: 300 at most in one call."""
    set_ = rules.check_attributes("traits", cmd.traits, owned=entry.owned)
    once = rules.check_attributes("set_once", cmd.set_once, owned=entry.owned)
    gone = rules.check_keys("unset", cmd.unset, indexed=True)
    if len(set_) + len(once) + len(gone) > rules.MAX_ATTRIBUTES:
        raise InvalidCommand("traits", f"more than {rules.MAX_ATTRIBUTES} attributes in one call")
    sdk = rules.check_anonymous_id(cmd.sdk_anonymous_id)
    device_id, message_id, timestamp = _settled(entry, cmd, cmd.sent_at, cmd.received_at)
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                   sent_at=None, received_at=None, traits=set_, set_once=once, unset=gone,
                   sdk_anonymous_id=sdk)


def set_device_attributes(cmd: SetDeviceAttributes, entry: Entry) -> SetDeviceAttributes:
    """Custom device attributes (nested JSON allowed)."""
    attrs = rules.check_attributes("attributes", cmd.attributes, allow_none=False,
                                   owned=entry.owned)
    device_id, message_id, timestamp = _settled(entry, cmd, cmd.sent_at, cmd.received_at)
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                   sent_at=None, received_at=None, attributes=attrs)


def collect_device_attributes(cmd: CollectDeviceAttributes, entry: Entry
                              ) -> CollectDeviceAttributes:
    """Auto-collected attributes (a message's context: only the checks its values need)."""
    changes_only = cmd.changes_only is True and type(cmd.context) is dict
    if changes_only:
        # A message's context, as ingest maps it (every message carries one): the checks
        # its values need, no more.
        attrs = rules.check_collected("context", cmd.context, owned=entry.owned)
    else:
        attrs = rules.check_attributes("context", cmd.context, allow_none=False,
                                       owned=entry.owned)
    device_id, message_id, timestamp = _settled(entry, cmd, cmd.sent_at, cmd.received_at)
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                   sent_at=None, received_at=None, context=attrs, changes_only=changes_only)


def register_device_token(cmd: RegisterDeviceToken, entry: Entry) -> RegisterDeviceToken:
    """A push token, and its platform."""
    token = rules.check_text("token", cmd.token)
    platform = None if cmd.platform is None else rules.check_text("platform", cmd.platform)
    device_id, message_id, timestamp = _settled(entry, cmd, cmd.sent_at, cmd.received_at)
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                   sent_at=None, received_at=None, token=token, platform=platform)


def remove_device_token(cmd: RemoveDeviceToken, entry: Entry) -> RemoveDeviceToken:
    """A dead or deleted token, and why."""
    token = rules.check_text("token", cmd.token)
    reason = rules.check_text("reason", cmd.reason)
    device_id, message_id, timestamp = _settled(entry, cmd, cmd.sent_at, cmd.received_at)
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                   sent_at=None, received_at=None, token=token, reason=reason)


def record_push_status(cmd: RecordPushStatus, entry: Entry) -> RecordPushStatus:
    """A push status: sent, bounced or suppressed."""
    # The device first: a status of the right type may still be none of the three.
    device_id, message_id, timestamp = _settled(entry, cmd)
    status = rules.check_text("status", cmd.status, allowed=rules.PUSH_STATUSES)
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp,
                   status=status)


def clear_identify(cmd: ClearIdentify | Logout, entry: Entry) -> ClearIdentify | Logout:
    """A clear (or Adapty's logout): the device and the message's id and time."""
    device_id, message_id, timestamp = _settled(entry, cmd)
    return replace(cmd, device_id=device_id, message_id=message_id, timestamp=timestamp)


def merge_persons(cmd: MergePersons, entry: Entry) -> MergePersons:
    """Two identifiers and a reason (which person each names is the handler's to find)."""
    primary = rules.check_id("primary", cmd.primary)
    secondary = rules.check_id("secondary", cmd.secondary)
    reason = rules.check_text("reason", cmd.reason)
    return replace(cmd, primary=primary, secondary=secondary, reason=reason)


def unmerge(cmd: Unmerge, entry: Entry) -> Unmerge:
    """A merge id and a reason (whether it names an undoable merge is the handler's to find)."""
    merge_id = rules.check_id("merge_id", cmd.merge_id)
    reason = rules.check_text("reason", cmd.reason)
    return replace(cmd, merge_id=merge_id, reason=reason)


def forget_person(cmd: ForgetPerson, entry: Entry) -> ForgetPerson:
    """A person id. Its reason was judged where ``ws.forget``'s arguments enter the service
    (:func:`idstitch.service.erasure.forget`, the one place a ForgetPerson is built): before
    the keys are destroyed, since a reason refused here, after them, would leave the person
    shredded with no decision recorded."""
    # (``members`` and ``devices`` are the workspace's own ids, read from its rows.)
    return replace(cmd, person_id=rules.check_id("person_id", cmd.person_id))


CHECKS: dict[type[Any], Callable[[Any, Entry], Any]] = {
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
"""The one map from command type to its check (the bus and ingest both use it)."""
