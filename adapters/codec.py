"""msgspec in place of eventsourcing's JSON transcoder, and a typed mapper for device events.

Write path: event Struct -> msgpack (one reused Encoder) -> optional cipher -> StoredEvent with
the event's tag as topic. Read path: one reused typed Decoder of the tagged union, so a stored
event comes back as the exact Struct it was, with no dict in between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any, Protocol
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from idstitch.domain.device import Recorded
from idstitch.domain.events import EVENT_TYPES, AnyDeviceEvent, DeviceEvent

TOPICS: dict[type[DeviceEvent], str] = {
    kind: str(kind.__struct_config__.tag) for kind in EVENT_TYPES
}
"""Each event class's stored topic: its tag (part of the storage format)."""
_EVENT = attrgetter("event")
_KEY_ID = attrgetter("key_id")
_HEX = attrgetter("originator_id.hex")
_VERSION = attrgetter("originator_version")


class MsgspecTranscoder(Transcoder):
    """eventsourcing's Transcoder interface over msgpack (for untyped states, e.g. snapshots)."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()

    def encode(self, obj: Any) -> bytes:
        """Serialize a state."""
        return self._encoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        """Deserialize a state."""
        return self._decoder.decode(data)


class PayloadCipher(Protocol):
    """Per-subject encryption of the personal values (:class:`idstitch.adapters.crypto.SubjectCipher`).

    ``seal`` gives the event as stored (values encrypted under the key of its ``key_id``);
    ``unseal`` gives them back, or the event marked erased when the key was destroyed.
    """

    def seal(self, event: DeviceEvent) -> DeviceEvent:
        """Encrypt an event's personal values."""
        ...

    def seal_all(self, events: list[DeviceEvent]) -> list[DeviceEvent]:
        """:meth:`seal` of a prepared batch, in order."""
        ...

    def unseal(self, event: DeviceEvent) -> DeviceEvent:
        """Decrypt them (or mark the event erased)."""
        ...

    def prepare(self, key_ids: set[str | None]) -> None:
        """Make sure the keys of a batch exist (one round trip for the new ones)."""
        ...

    def drop_cache(self) -> None:
        """Forget the keys held in memory (another process may have destroyed some)."""
        ...


class EventCodec:
    """Encodes and decodes device events (shared by the mapper and the log reader)."""

    def __init__(self, cipher: PayloadCipher | None = None) -> None:
        self._encode = msgspec.msgpack.Encoder().encode
        self._decoder: msgspec.msgpack.Decoder[AnyDeviceEvent] = msgspec.msgpack.Decoder(
            AnyDeviceEvent
        )
        self.cipher = cipher

    def encode(self, event: DeviceEvent) -> bytes:
        """Event -> stored bytes."""
        return self._encode(event if self.cipher is None else self.cipher.seal(event))

    def prepare(self, pending: Iterable[Recorded]) -> None:
        """Before a batch is encoded: create the keys it needs in one go."""
        if self.cipher is not None:
            self.cipher.prepare({r.event.key_id for r in pending})

    def encoder(self) -> Callable[[DeviceEvent], bytes]:
        """:meth:`encode` for a batch: msgspec's own when there is no cipher (no Python frame
        per event)."""
        return self.encode if self.cipher is not None else self._encode

    def rows(self, pending: Sequence[Recorded]) -> list[tuple[str, int, str, bytes]]:
        """A batch of recorded events as stored rows (originator id hex, version, topic,
        state), in order: their keys made first (:meth:`prepare`), then sealed in one loop
        (the cipher's ``seal_all``) and encoded; the rest is built in C (map, zip), with no
        Python frame per event."""
        events = list(map(_EVENT, pending))
        cipher = self.cipher
        if cipher is not None:
            cipher.prepare(set(map(_KEY_ID, events)))
            events = cipher.seal_all(events)
        return list(zip(map(_HEX, pending), map(_VERSION, pending),
                        map(TOPICS.__getitem__, map(type, events)), map(self._encode, events),
                        strict=True))

    def decode(self, data: bytes) -> AnyDeviceEvent:
        """Stored bytes -> the event Struct."""
        event = self._decoder.decode(data)
        if event.sealed is not None:
            event = self._unseal(event)
        return event

    def _unseal(self, event: AnyDeviceEvent) -> AnyDeviceEvent:
        if self.cipher is None:  # sealed, and no keys: unreadable, as erased
            return msgspec.structs.replace(event, sealed=None, erased=True)
        return self.cipher.unseal(event)  # type: ignore[return-value]

    def decode_all(self, states: Iterable[bytes]) -> list[AnyDeviceEvent]:
        """Many stored events at once (the replay path: no per-event Python call for the
        events without sealed values)."""
        events = list(map(self._decoder.decode, states))
        unseal_all = getattr(self.cipher, "unseal_all", None)
        if unseal_all is not None:
            unseal_all(events)  # the page's keys in one read, not one per key
            return events
        unseal = self._unseal
        for i, event in enumerate(events):
            if event.sealed is not None:
                events[i] = unseal(event)
        return events





def topic_of(event: DeviceEvent) -> str:
    """The stored topic: the event's tag (part of the storage format)."""
    return TOPICS[type(event)]


class StructMapper(Mapper[UUID]):
    """eventsourcing Mapper for :class:`~idstitch.domain.device.Recorded` device events."""

    def __init__(self, codec: EventCodec) -> None:
        super().__init__(transcoder=MsgspecTranscoder())
        self.codec = codec

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        """Recorded envelope -> StoredEvent."""
        event: DeviceEvent = domain_event.event
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=topic_of(event),
            state=self.codec.encode(event),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        """StoredEvent -> Recorded envelope."""
        originator_id = stored_event.originator_id
        if not isinstance(originator_id, UUID):
            originator_id = UUID(str(originator_id))
        return Recorded(
            originator_id,
            stored_event.originator_version,
            self.codec.decode(stored_event.state),
        )
