"""The device event log: an eventsourcing Application with our mapper, on any of its recorders."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper, PersistenceError
from idstitch.adapters.codec import EventCodec, StructMapper
from idstitch.domain.device import Device, project_device
from idstitch.domain.errors import StoreError
from idstitch.projections.store import LoggedEvent


class WriteConflict(Exception):
    """Another writer appended to the same device first: reload and run the command again."""


@contextmanager
def translated(what: str) -> Iterator[None]:
    """The one choke point where the recorders' errors become idstitch errors."""
    try:
        yield
    except IntegrityError as e:
        raise WriteConflict(str(e)) from e
    except PersistenceError as e:
        raise StoreError(f"{what}: {e}") from e


class DeviceLog(Application[UUID]):
    """Stores and loads Device aggregates; reads the global log for the projections."""

    name = "idstitch"

    def __init__(self, env: dict[str, str], codec: EventCodec | None = None) -> None:
        self.codec = codec or EventCodec()
        with translated("cannot open the event store"):
            super().__init__(env=env)

    def construct_mapper(self) -> Mapper[UUID]:
        """Our msgspec mapper instead of the stock JSON one."""
        return StructMapper(self.codec)

    def load(self, device_id: str) -> Device | None:
        """The device as its events say, or None if it never recorded anything."""
        try:
            with translated("cannot load a device"):
                device: Device = self.repository.get(
                    Device.create_id(device_id), projector_func=project_device
                )
        except AggregateNotFoundError:
            return None
        return device

    def append(self, *devices: Device) -> list[int]:
        """Save the devices' pending events in one transaction; their log positions."""
        with translated("cannot append events"):
            recordings = self.save(*devices)
        return [r.notification.id for r in recordings]

    def read(self, after: int, limit: int) -> Sequence[LoggedEvent]:
        """Events after a position, decoded."""
        decode = self.codec.decode
        out = []
        with translated("cannot read the log"):
            notifications = self.recorder.select_notifications(
                start=after, limit=limit, inclusive_of_start=False)
        for n in notifications:
            originator_id: Any = n.originator_id
            if not isinstance(originator_id, UUID):
                originator_id = UUID(str(originator_id))
            out.append(LoggedEvent(n.id, originator_id, n.originator_version,
                                   decode(originator_id, n.state)))
        return out

    def head(self) -> int:
        """The last position (0 when empty)."""
        with translated("cannot read the log"):
            return self.recorder.max_notification_id() or 0

    def events_of(self, device_id: str) -> list[LoggedEvent]:
        """A device's own events, in version order (positions are not known here: 0)."""
        out = []
        recorded: Any
        for recorded in self.events.get(Device.create_id(device_id)):
            out.append(LoggedEvent(0, recorded.originator_id, recorded.originator_version,
                                   recorded.event))
        return out

    def close(self) -> None:
        """Close the recorder's connections."""
        super().close()
