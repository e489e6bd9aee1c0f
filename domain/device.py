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
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
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
from msgspec.structs import replace

RECENT_MESSAGE_IDS = 1000
"""How many message ids a device remembers for de-duplication (see docs/explanation)."""
RECENT_SESSIONS = 50
"""How many ended SDK sessions (their ``anonymousId``) a device remembers: a message of one of
them is late; an ``anonymousId`` older than that is taken for a new session."""
RESET_SUFFIX = "#reset"
"""The message id of the clear an SDK reset implies: the message's own id, suffixed."""


class Recorded(msgspec.Struct, frozen=True):
    """Envelope that lets eventsourcing store a domain event: ids, version, mutate.

    A Struct: one is made per event recorded or loaded, and a Struct's constructor is C."""

    originator_id: UUID
    originator_version: int
    event: DeviceEvent

    def mutate(self, aggregate: Device | None) -> Device:
        """Apply the event to the aggregate (creating it from its first event)."""
        if aggregate is None:
            aggregate = Device(self.event.device_id)
        aggregate.apply(self.event)
        aggregate.version = self.originator_version
        return aggregate


def project_device(aggregate: Device | None, recorded: Iterable[Any]) -> Device | None:
    """Projector for eventsourcing's Repository.get (skips its per-event isinstance assert)."""
    for item in recorded:
        aggregate = item.mutate(aggregate)
    return aggregate


class Device:
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
        self.session: str | None = None
        """The SDK ``anonymousId`` of the current session, once a message carried one."""
        self.ended: deque[str] = deque(maxlen=RECENT_SESSIONS)
        """The SDK ``anonymousId`` of the sessions that ended, oldest first (bounded)."""
        self._ended: set[str] = set()
        self.server = False
        """A server-side stream: a backend's identifies of one user, not an installation."""
        self.collected: dict[str, Any] = {}
        """The value of each attribute it last collected."""
        self.erasures = 0
        """Identifies that read erased (their person was forgotten): each begins a new data
        subject on the device, with a key of its own (the forgotten one's are destroyed)."""
        self._stint: tuple[int, str | None, int] | None = None
        self._key_id = ""

    create_id = staticmethod(device_aggregate_id)

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
        # (after apply, so an Identified or a clear opens the new stint it belongs to).
        stint = (self.generation, self.user_id, self.erasures)
        if stint != self._stint:
            self._stint, self._key_id = stint, subject_key_id(self.device_id, *stint)
        self._pending.append(Recorded(self.id, self.version, replace(event, key_id=self._key_id)))

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
            if event.sdk_anonymous_id is not None:
                if event.late:
                    return  # an ended session's message: the device is not identified by it
                self.session = event.sdk_anonymous_id
            self.user_id = event.user_id
            if event.server:
                self.server = True
        elif type(event) is ProfileAttributesChanged:
            if event.sdk_anonymous_id is not None and not event.late:
                self.session = event.sdk_anonymous_id
        elif type(event) is IdentityCleared:
            self.user_id = None
            self.generation = event.generation
            if self.session is not None:
                self._end(self.session)
            self.session = event.sdk_anonymous_id
        elif type(event) is DeviceAttributesCollected:
            self.collected.update(event.attributes)
        elif type(event) is DeviceActivated:
            self.auto_track = event.auto_track_device_attributes
        elif type(event) is DeviceTokenRemoved and self.token == event.token:
            self.token = None

    def _end(self, session: str) -> None:
        if session in self._ended:
            return
        if len(self.ended) == RECENT_SESSIONS:
            self._ended.discard(self.ended[0])
        self.ended.append(session)
        self._ended.add(session)

    def _session(
        self, sdk_anonymous_id: str | None, message_id: str | None, timestamp: datetime,
        recorded_at: datetime,
    ) -> tuple[str | None, bool]:
        """What a person-level message's SDK ``anonymousId`` says of the device's session:
        ``(sdk_anonymous_id to record, late)``. The rule (docs/explanation/stitching.md):

        - none, or the current session's: nothing to record;
        - an ended session's: the message is late (recorded, not applied);
        - the first the current session sees: adopted (recorded with the event);
        - any other: the SDK was reset, a new anonymous session starts: the clear it implies
          is recorded first (its message id the message's, suffixed ``#reset``).
        """
        if sdk_anonymous_id is None or sdk_anonymous_id == self.session:
            return None, False
        if sdk_anonymous_id in self._ended:
            return sdk_anonymous_id, True
        if self.session is None:
            return sdk_anonymous_id, False
        self._record(IdentityCleared(
            device_id=self.device_id, generation=self.generation + 1,
            sdk_anonymous_id=sdk_anonymous_id,
            message_id=None if message_id is None else message_id + RESET_SUFFIX,
            timestamp=timestamp, recorded_at=recorded_at))
        return None, False

    # Commands. Each assumes validated input (idstitch.domain.rules) and returns whether it
    # recorded anything. A message id already seen records nothing (``is_duplicate``, spelt
    # out: a call less for every command).

    def activate(
        self, customer_user_id: str | None, auto_track: bool, platform: str | None,
        sdk: dict[str, Any] | None, message_id: str | None, timestamp: datetime,
        recorded_at: datetime,
    ) -> bool:
        """Record the SDK configuration; with a customer user id it is an identify as well."""
        if message_id in self._seen:
            return False
        common: dict[str, Any] = {"device_id": self.device_id, "message_id": message_id,
                                  "timestamp": timestamp, "recorded_at": recorded_at}
        self._record(DeviceActivated(
            auto_track_device_attributes=auto_track, platform=platform, sdk=sdk, **common))
        if customer_user_id is not None:
            self._record(Identified(user_id=customer_user_id, **common))
        return True

    def identify(
        self, user_id: str, traits: dict[str, Any], message_id: str | None, timestamp: datetime,
        recorded_at: datetime, sdk_anonymous_id: str | None = None, server: bool = False,
    ) -> bool:
        """Somebody is identified on this device (``sdk_anonymous_id``: the SDK session the
        message came from; ``server``: the device is a server-side stream of that user)."""
        if message_id in self._seen:
            return False
        sdk, late = self._session(sdk_anonymous_id, message_id, timestamp, recorded_at)
        self._record(Identified(device_id=self.device_id, user_id=user_id, traits=traits,
                                message_id=message_id, timestamp=timestamp,
                                recorded_at=recorded_at, sdk_anonymous_id=sdk, late=late,
                                server=server and self.version == 0))
        return True

    def set_profile_attributes(
        self, set_: dict[str, Any], set_once: dict[str, Any], unset: list[str],
        message_id: str | None, timestamp: datetime, recorded_at: datetime,
        sdk_anonymous_id: str | None = None,
    ) -> bool:
        """Attributes of the current person change (only the keys given)."""
        if message_id in self._seen:
            return False
        sdk, late = self._session(sdk_anonymous_id, message_id, timestamp, recorded_at)
        self._record(ProfileAttributesChanged(
            device_id=self.device_id, set=set_, set_once=set_once, unset=unset,
            message_id=message_id, timestamp=timestamp, recorded_at=recorded_at,
            sdk_anonymous_id=sdk, late=late))
        return True

    def set_device_attributes(
        self, attributes: dict[str, Any], message_id: str | None, timestamp: datetime,
        recorded_at: datetime,
    ) -> bool:
        """Custom device attributes change."""
        if message_id in self._seen:
            return False
        self._record(DeviceAttributesChanged(
            device_id=self.device_id, attributes=attributes, message_id=message_id,
            timestamp=timestamp, recorded_at=recorded_at))
        return True

    def collect_device_attributes(
        self, attributes: dict[str, Any], message_id: str | None, timestamp: datetime,
        recorded_at: datetime,
    ) -> bool:
        """Auto-collected attributes; dropped when the device turned auto-tracking off."""
        if message_id in self._seen or not self.auto_track:
            return False
        self._record(DeviceAttributesCollected(
            device_id=self.device_id, attributes=attributes, message_id=message_id,
            timestamp=timestamp, recorded_at=recorded_at))
        return True

    def collect_changed_attributes(
        self, attributes: dict[str, Any], message_id: str | None, timestamp: datetime,
        recorded_at: datetime,
    ) -> bool:
        """Auto-collected attributes, only those whose value changed since the device last
        collected them (a message's context repeats them all); none changed: nothing."""
        if message_id in self._seen or not self.auto_track:
            return False
        collected = self.collected
        changed = {k: v for k, v in attributes.items()
                   if k not in collected or collected[k] != v or type(collected[k]) is not type(v)}
        if not changed:
            return False
        return self.collect_device_attributes(changed, message_id, timestamp, recorded_at)

    def register_device_token(
        self, token: str, platform: str | None, message_id: str | None, timestamp: datetime,
        recorded_at: datetime,
    ) -> bool:
        """The device's push token (a refresh replaces the earlier one)."""
        if message_id in self._seen:
            return False
        self._record(DeviceTokenRegistered(
            device_id=self.device_id, token=token, platform=platform, message_id=message_id,
            timestamp=timestamp, recorded_at=recorded_at))
        return True

    def remove_device_token(
        self, token: str, reason: str, message_id: str | None, timestamp: datetime,
        recorded_at: datetime,
    ) -> bool:
        """The token is dead or deleted."""
        if message_id in self._seen:
            return False
        self._record(DeviceTokenRemoved(
            device_id=self.device_id, token=token, reason=reason, message_id=message_id,
            timestamp=timestamp, recorded_at=recorded_at))
        return True

    def record_push_status(
        self, status: str, message_id: str | None, timestamp: datetime, recorded_at: datetime
    ) -> bool:
        """The last push to this device's token was sent, bounced or suppressed."""
        if message_id in self._seen:
            return False
        self._record(PushStatusRecorded(
            device_id=self.device_id, status=status, message_id=message_id, timestamp=timestamp,
            recorded_at=recorded_at))
        return True

    def clear_identify(
        self, message_id: str | None, timestamp: datetime, recorded_at: datetime, *,
        require_identified: bool = False,
    ) -> bool:
        """Stop identifying: a new anonymous session starts (Adapty's logout requires someone)."""
        if message_id in self._seen:
            return False
        if require_identified and not self.identified:
            raise NotIdentified(self.device_id)
        self._record(IdentityCleared(
            device_id=self.device_id, generation=self.generation + 1, message_id=message_id,
            timestamp=timestamp, recorded_at=recorded_at))
        return True

    def logout(self, message_id: str | None, timestamp: datetime, recorded_at: datetime) -> bool:
        """Adapty's logout: as :meth:`clear_identify`, but an anonymous device is an error."""
        return self.clear_identify(message_id, timestamp, recorded_at, require_identified=True)

    def decide(self, event: DeviceEvent) -> bool:
        """Record a person-level decision (the workspace's decisions stream only: its events,
        checked by their handler, change nothing device-local)."""
        if event.message_id in self._seen:
            return False
        self._record(event)
        return True


__all__ = [
    "DEVICE_NAMESPACE", "PERSON_NAMESPACE", "RECENT_MESSAGE_IDS", "RECENT_SESSIONS",
    "RESET_SUFFIX", "SERVER_PREFIX", "AggregateId", "Device", "Recorded", "anonymous_id_for",
    "anonymous_person_id", "device_aggregate_id", "minted_person_id", "new_person_id",
    "project_device", "server_stream_id", "uuid5_text",
]
