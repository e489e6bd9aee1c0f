"""The Device aggregate: what one app installation knows about itself.

It holds only device-local state: its SDK configuration, the user id it was last given, its
anonymous-session generation, the SDK's anonymousId of its current and recently ended sessions
(which tell an SDK reset from a late message), its token, what it last collected, and its recent
message ids. Person-level consequences
(conversion, merge, switch, token ownership, winning attribute values) are derived by the identity
projection from the order of the log, not decided here.

The aggregate follows eventsourcing's aggregate protocols (``id``, ``version``,
``collect_events``; events with ``originator_id``, ``originator_version`` and ``mutate``), so the
library's Application, Repository and recorders store and load it. Its events are the msgspec
Structs of :mod:`idstitch.domain.events`, carried in a small :class:`Recorded` envelope.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime
from operator import is_
from typing import Any
from uuid import UUID

import msgspec
from idstitch.domain.commands import (
    Activate,
    ClearIdentify,
    CollectDeviceAttributes,
    Decision,
    DeviceCommand,
    Identify,
    Logout,
    RecordPushStatus,
    RegisterDeviceToken,
    RemoveDeviceToken,
    SetDeviceAttributes,
    SetProfileAttributes,
)
from idstitch.domain.errors import NotIdentified
from idstitch.domain.events import (
    DeviceActivated,
    DeviceAttributesChanged,
    DeviceAttributesCollected,
    DeviceEvent,
    DeviceTokenRegistered,
    DeviceTokenRemoved,
    Identified,
    IdentityCleared,
    ProfileAttributesChanged,
    PushStatusRecorded,
)
from idstitch.domain.ids import (
    DEVICE_NAMESPACE,
    PERSON_NAMESPACE,
    SERVER_PREFIX,
    AggregateId,
    anonymous_id_for,
    anonymous_person_id,
    device_aggregate_id,
    minted_person_id,
    new_person_id,
    server_stream_id,
    subject_key_id,
    uuid5_text,
)
from idstitch.domain.sdk_sessions import RECENT_SESSIONS, RESET_SUFFIX, SessionMemory
from msgspec.structs import replace

RECENT_MESSAGE_IDS = 1000
"""How many message ids a device remembers for de-duplication (see docs/explanation)."""


class Recorded(msgspec.Struct, frozen=True):
    """Envelope that lets eventsourcing store a domain event: its aggregate's id and version.

    A Struct: one is made per event recorded or loaded, and a Struct's constructor is C."""

    originator_id: UUID
    originator_version: int
    event: DeviceEvent


class Device(SessionMemory):
    """One app installation. Commands record events; ``apply`` is the only state change."""

    def __init__(self, device_id: str, aggregate_id: AggregateId | None = None) -> None:
        """A new device (version 0); ``aggregate_id``: its id, when the caller has it already
        (``device_aggregate_id(device_id)``, which costs a hash)."""
        self.device_id = device_id
        # Not checked against device_id: the one caller passing it computed it from device_id.
        self.id = device_aggregate_id(device_id) if aggregate_id is None else aggregate_id
        self.version = 0
        self.generation = 0
        self.user_id: str | None = None
        self.auto_track = True
        self.token: str | None = None
        self.recent: deque[str] = deque(maxlen=RECENT_MESSAGE_IDS)
        self._seen: set[str] = set()
        self._pending: list[Recorded] = []
        self._start_sessions()
        self.server = False
        """A server-side stream: a backend's identifies of one user, not an installation."""
        self.collected: dict[str, Any] = {}
        """The value of each attribute it collected, as it stands by the client's clock: the
        newest write of each key wins (a late message's value does not replace a newer one),
        as in the device attributes projection."""
        self.collected_at: dict[str, datetime] = {}
        """The client time of each key's value in ``collected``."""
        self._collected_newest: datetime | None = None
        """The newest client time of a collection applied: one at or after it is in order."""
        self._held: dict[str, Any] | None = None
        """The last context found to hold nothing new, while ``collected`` has not changed
        since: the very dict again (ingest shares one per distinct context text) is settled
        without comparing its values."""
        self.erasures = 0
        """Identifies that read erased (their person was forgotten): each begins a new data
        subject on the device, with a key of its own (the forgotten one's are destroyed)."""
        self._stint: tuple[int, str | None, int] | None = None
        self._key_id = ""

    create_id = staticmethod(device_aggregate_id)

    def copy(self) -> Device:
        """The device as it is now, apart (containers copied: ``apply`` never changes a value
        in place), nothing pending: to decide again from (the writer's Batch.before)."""
        twin = object.__new__(Device)
        twin.__dict__.update(self.__dict__, recent=self.recent.copy(), _seen=self._seen.copy(),
                             ended=self.ended.copy(), _ended=self._ended.copy(),
                             collected=self.collected.copy(),
                             collected_at=self.collected_at.copy(), _pending=[])
        return twin

    @property
    def anonymous_id(self) -> str:
        """The id of the current (or last) anonymous session."""
        return anonymous_id_for(self.device_id, self.generation)

    @property
    def identified(self) -> bool:
        """True while somebody is identified on the device."""
        return self.user_id is not None

    def collect_events(self) -> list[Recorded]:
        """Hand over the pending events (eventsourcing's CollectEventsProtocol)."""
        pending, self._pending = self._pending, []
        return pending

    def record_into(self, sink: list[Recorded]) -> None:
        """Record the next events straight into ``sink`` until :meth:`collect_events`.

        For a batch of many devices: the devices share one list, which then holds every event
        in the order recorded, without a hand-over per command."""
        self._pending = sink

    def is_duplicate(self, message_id: str | None) -> bool:
        """A message id this device has already recorded: the call is a no-op."""
        # None is never remembered (see apply), so needs no test of its own.
        return message_id in self._seen

    def _record(self, event: DeviceEvent) -> None:
        self.apply(event)
        self.version += 1
        # The one place an event gets its data subject's key id: the stint it is recorded in
        # (after apply, so an Identified or a clear opens the new stint it belongs to). Events
        # are made with the key id of the stint before them (``self._key_id``), which most
        # stay in: only those that open a stint (or the first after a load) are copied.
        stint = (self.generation, self.user_id, self.erasures)
        if stint != self._stint:
            self._stint, self._key_id = stint, subject_key_id(self.device_id, *stint)
        if event.key_id != self._key_id:
            event = replace(event, key_id=self._key_id)
        self._pending.append(Recorded(self.id, self.version, event))

    def apply(self, event: DeviceEvent) -> None:
        """Evolve device-local state by one event (also used on replay)."""
        message_id = event.message_id
        if message_id is not None and message_id not in self._seen:
            if len(self.recent) == RECENT_MESSAGE_IDS:
                self._seen.discard(self.recent[0])
            self.recent.append(message_id)
            self._seen.add(message_id)
        # Exact types (the event classes have no subclasses), the most frequent first: this
        # runs for every event recorded or loaded.
        if type(event) is DeviceTokenRegistered:
            self.token = event.token
        elif type(event) is Identified:
            if event.erased:
                self.erasures += 1
            if event.sdk_anonymous_id is not None or event.sdk_tag is not None:
                if event.late:
                    return  # an ended session's message: the device is not identified by it
                self._enter(event.sdk_anonymous_id, event.sdk_tag)
            self.user_id = event.user_id
            if event.server:
                self.server = True
        elif type(event) is ProfileAttributesChanged:
            if ((event.sdk_anonymous_id is not None or event.sdk_tag is not None)
                    and not event.late):
                self._enter(event.sdk_anonymous_id, event.sdk_tag)
        elif type(event) is IdentityCleared:
            self.user_id = None
            self.generation = event.generation
            self._end_session()
            self._enter(event.sdk_anonymous_id, event.sdk_tag)
        elif type(event) is DeviceAttributesCollected:
            self._collect(event.attributes, event.timestamp)
            self._held = None
        elif type(event) is DeviceActivated:
            self.auto_track = event.auto_track_device_attributes
        elif type(event) is DeviceTokenRemoved and self.token == event.token:
            self.token = None

    # Commands. ``handle`` takes a command its handler checked (idstitch.service.handlers:
    # every value passed the rules, its timestamp is the client time corrected for skew) and
    # records what it says; it returns whether it recorded anything. A message id already
    # seen records nothing (``is_duplicate``, spelt out in each: a call less per command).

    def handle(self, command: DeviceCommand | Decision, now: datetime) -> bool:
        """Record the events a checked command says (``now``: their ``recorded_at``)."""
        return _DECIDE[type(command)](self, command, now)

    def activate(self, cmd: Activate, now: datetime) -> bool:
        """Record the SDK configuration; with a customer user id it is an identify as well."""
        message_id = cmd.message_id
        if message_id in self._seen:
            return False
        common: dict[str, Any] = {"device_id": self.device_id, "message_id": message_id,
                                  "key_id": self._key_id,
                                  "timestamp": cmd.timestamp or now, "recorded_at": now}
        self._record(DeviceActivated(
            auto_track_device_attributes=cmd.auto_track_device_attributes,
            platform=cmd.platform, sdk=cmd.sdk, **common))
        if cmd.customer_user_id is not None:
            self._record(Identified(user_id=cmd.customer_user_id, **common))
        return True

    def identify(self, cmd: Identify, now: datetime) -> bool:
        """Somebody is identified on this device (``sdk_anonymous_id``: the SDK session the
        message came from; ``server``: the device is a server-side stream of that user)."""
        message_id = cmd.message_id
        if message_id in self._seen:
            return False
        timestamp = cmd.timestamp or now
        sdk, tag, late = self._session(cmd.sdk_anonymous_id, message_id, timestamp, now)
        self._record(Identified(device_id=self.device_id, user_id=cmd.user_id, key_id=self._key_id,
                                traits=cmd.traits or {}, message_id=message_id,
                                timestamp=timestamp, recorded_at=now, sdk_anonymous_id=sdk,
                                sdk_tag=tag, late=late,
                                server=cmd.server and self.version == 0))
        return True

    def set_profile_attributes(self, cmd: SetProfileAttributes, now: datetime) -> bool:
        """Attributes of the current person change (only the keys given)."""
        message_id = cmd.message_id
        if message_id in self._seen:
            return False
        timestamp = cmd.timestamp or now
        sdk, tag, late = self._session(cmd.sdk_anonymous_id, message_id, timestamp, now)
        self._record(ProfileAttributesChanged(
            key_id=self._key_id, device_id=self.device_id, set=cmd.traits or {}, set_once=cmd.set_once or {},
            unset=cmd.unset or [], message_id=message_id, timestamp=timestamp,
            recorded_at=now, sdk_anonymous_id=sdk, sdk_tag=tag, late=late))
        return True

    def set_device_attributes(self, cmd: SetDeviceAttributes, now: datetime) -> bool:
        """Custom device attributes change."""
        if cmd.message_id in self._seen:
            return False
        self._record(DeviceAttributesChanged(
            key_id=self._key_id, device_id=self.device_id, attributes=cmd.attributes,
            message_id=cmd.message_id,
            timestamp=cmd.timestamp or now, recorded_at=now))
        return True

    def collect_device_attributes(self, cmd: CollectDeviceAttributes, now: datetime) -> bool:
        """Auto-collected attributes; dropped when the device turned auto-tracking off. With
        ``changes_only`` (a message's context, which repeats them all), only those whose value
        changed since the device last collected them; none changed: nothing."""
        if cmd.message_id in self._seen or not self.auto_track:
            return False
        attributes = cmd.context
        if cmd.changes_only:
            if attributes is self._held:
                return False
            collected = self.collected
            # Most contexts repeat what the device holds: that is settled in C (each pair
            # found equal, then each value of the very type held) before any Python loop.
            if attributes.items() <= collected.items() and all(map(
                    is_, map(type, attributes.values()),
                    map(type, map(collected.__getitem__, attributes)))):
                self._held = attributes
                return False
            attributes = {k: v for k, v in attributes.items()
                          if k not in collected or collected[k] != v
                          or type(collected[k]) is not type(v)}
            if not attributes:
                return False
        self._record(DeviceAttributesCollected(
            key_id=self._key_id, device_id=self.device_id, attributes=attributes,
            message_id=cmd.message_id,
            timestamp=cmd.timestamp or now, recorded_at=now))
        return True

    def _collect(self, attributes: dict[str, Any], at: datetime) -> None:
        """Apply collected values by the client's clock, key by key: what a message repeating
        the context is compared with (a late message's value, recorded but older than the
        key's, must not make the newest value look like a repeat and be dropped)."""
        newest = self._collected_newest
        if newest is None or at >= newest:
            # In order (nearly always): every key takes its new value, in C.
            self._collected_newest = at
            self.collected.update(attributes)
            self.collected_at.update(dict.fromkeys(attributes, at))
            return
        stamps = self.collected_at
        for key, value in attributes.items():
            stamp = stamps.get(key)
            if stamp is None or at >= stamp:  # a tie: the later event, as the projection
                self.collected[key] = value
                stamps[key] = at

    def register_device_token(self, cmd: RegisterDeviceToken, now: datetime) -> bool:
        """The device's push token (a refresh replaces the earlier one)."""
        if cmd.message_id in self._seen:
            return False
        self._record(DeviceTokenRegistered(
            key_id=self._key_id, device_id=self.device_id, token=cmd.token, platform=cmd.platform,
            message_id=cmd.message_id, timestamp=cmd.timestamp or now, recorded_at=now))
        return True

    def remove_device_token(self, cmd: RemoveDeviceToken, now: datetime) -> bool:
        """The token is dead or deleted."""
        if cmd.message_id in self._seen:
            return False
        self._record(DeviceTokenRemoved(
            key_id=self._key_id, device_id=self.device_id, token=cmd.token, reason=cmd.reason,
            message_id=cmd.message_id, timestamp=cmd.timestamp or now, recorded_at=now))
        return True

    def record_push_status(self, cmd: RecordPushStatus, now: datetime) -> bool:
        """The last push to this device's token was sent, bounced or suppressed."""
        if cmd.message_id in self._seen:
            return False
        self._record(PushStatusRecorded(
            key_id=self._key_id, device_id=self.device_id, status=cmd.status, message_id=cmd.message_id,
            timestamp=cmd.timestamp or now, recorded_at=now))
        return True

    def clear_identify(self, cmd: ClearIdentify | Logout, now: datetime) -> bool:
        """Stop identifying: a new anonymous session starts (Adapty's logout requires someone:
        NotIdentified on an anonymous device)."""
        if cmd.message_id in self._seen:
            return False
        if type(cmd) is Logout and not self.identified:
            raise NotIdentified(self.device_id)
        self._record(IdentityCleared(
            key_id=self._key_id, device_id=self.device_id, generation=self.generation + 1,
            message_id=cmd.message_id,
            timestamp=cmd.timestamp or now, recorded_at=now))
        return True


_DECIDE: dict[type[Any], Callable[[Device, Any, datetime], bool]] = {
    Identify: Device.identify,
    CollectDeviceAttributes: Device.collect_device_attributes,
    SetProfileAttributes: Device.set_profile_attributes,
    RegisterDeviceToken: Device.register_device_token,
    SetDeviceAttributes: Device.set_device_attributes,
    Activate: Device.activate,
    RemoveDeviceToken: Device.remove_device_token,
    RecordPushStatus: Device.record_push_status,
    ClearIdentify: Device.clear_identify,
    Logout: Device.clear_identify,
}
"""Which method of the aggregate records each device command."""


__all__ = [
    "DEVICE_NAMESPACE", "PERSON_NAMESPACE", "RECENT_MESSAGE_IDS", "RECENT_SESSIONS",
    "RESET_SUFFIX", "SERVER_PREFIX", "AggregateId", "Device", "Recorded", "anonymous_id_for",
    "anonymous_person_id", "device_aggregate_id", "minted_person_id", "new_person_id",
    "server_stream_id", "uuid5_text",
]
