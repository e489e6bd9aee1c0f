"""The unit of work: checked commands staged by the handlers, and the writer that commits them.

A handler checks a command and stages the checked command (a :class:`Step`) on the
:class:`UnitOfWork` it was given; nothing touches an aggregate until the work is committed, when
each aggregate (a device, or the workspace's decisions stream) takes its commands:
``aggregate.handle(command, now)``. Staged rather than run at once: a message's commands are
all checked before any of it runs (a rejected message leaves nothing behind), and a conflict
with another writer runs a message again on its aggregates reloaded.

The :class:`Writer`, shared by every unit of work of a workspace, commits with one
algorithm, :meth:`Writer.write_batch`: an ingest batch, and a public call as a batch of
one message. It takes the aggregates (from a bounded cache, else from their events), runs the
steps, and appends every event they recorded in one transaction, with optimistic concurrency.
When another writer got to an aggregate first, only the messages of the aggregates that moved
are run again, on those reloaded; the rest of the batch is kept as it was decided.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import pairwise
from typing import NamedTuple, Protocol

import msgspec

from idstitch.domain import rules
from idstitch.domain.aggregates import Aggregate
from idstitch.domain.commands import Decision, DeviceCommand
from idstitch.domain.device import Recorded
from idstitch.domain.errors import ConcurrencyConflict, InvalidCommand, NotIdentified
from idstitch.domain.events import DECISIONS_STREAM
from idstitch.domain.ports import AggregateRepository, WriteConflict
from idstitch.projections.identity.rows import MergeRow, PersonRow
from idstitch.projections.store import LoggedEvent
from idstitch.projections.views import Profile

DEVICE_CACHE_SIZE = 10_000
RETRIES = 5
CONTENDED_BATCHES = 20
"""After a conflict, this many batches in a row check for moved devices under the append lock
(each one that finds moved devices starts the count again); then optimistic again."""


class Step(msgspec.Struct, frozen=True):
    """A checked command waiting to run: ``aggregate.handle(command, now)`` records its events.

    ``stream`` names the aggregate's stream (a device id, or the decisions stream) and
    ``message_id`` the command's (for de-duplication); ``now`` is the recorded time of the
    message it belongs to. A Struct (whose constructor is C): one is made per command."""

    stream: str
    message_id: str | None
    command: DeviceCommand | Decision
    now: datetime


class Moment(NamedTuple):
    """What a command's caller knows besides its arguments."""

    now: datetime
    """The recorded time of its events, and the received time of the clock-skew correction
    when the command gives none."""
    owned: bool
    """Its JSON values were just decoded from text and nobody else holds them: no copy needed."""


class PersonReads(Protocol):
    """The read models' answers a handler may need about persons (the queries give them)."""

    def person_row(self, person_id: str) -> PersonRow | None:
        """A person row by its id (not following merges)."""
        ...

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds now."""
        ...

    def merge_row(self, merge_id: str) -> MergeRow | None:
        """A conversion, merge or switch record by its id."""
        ...


class Persons:
    """The port through which a handler reads about persons (a ``cio_`` id, a merge's two
    sides, a merge to undo): every answer is as the log stands after everything recorded
    before the message (for a batch, the messages staged so far are committed and projected
    first: ``settle``)."""

    def __init__(self, settle: Callable[[], None], reads: PersonReads) -> None:
        self._settle = settle
        self._reads = reads

    def row(self, person_id: str) -> PersonRow | None:
        """A person row by its id (not following merges)."""
        self._settle()
        return self._reads.person_row(person_id)

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds."""
        self._settle()
        return self._reads.profile(identifier)

    def merge(self, merge_id: str) -> MergeRow | None:
        """A conversion, merge or switch record by its id."""
        self._settle()
        return self._reads.merge_row(merge_id)


_NOTHING = object()
_UNSETTLED: tuple[object, object, object, object, datetime] = (
    _NOTHING, _NOTHING, _NOTHING, _NOTHING, datetime.min)
"""No times settled yet (matches no command's)."""


class UnitOfWork:
    """One message (a public call) or one batch of them (ingest): handlers stage checked
    commands here, and read about persons through :attr:`persons`."""

    def __init__(self, moment: Moment, persons: Persons) -> None:
        self.now, self.owned = moment
        self.persons = persons
        self.steps: list[Step] = []
        """The steps of the message being prepared."""
        self.settled: tuple[object, object, object, object, datetime] = _UNSETTLED
        """The times the last command was settled from and its client time (a handler's
        memo: ``(timestamp, sent_at, received_at, now, client time)``)."""

    def device_id(self, device_id: object) -> str:
        """A command's device id, checked (the decisions stream's name is no device's)."""
        last = self._device_id
        if device_id is last and last is not None:
            # The very id the previous command was checked with (a message's context follows
            # its command on the same device): accepted already.
            return last
        checked = rules.check_id("device_id", device_id)
        if checked == DECISIONS_STREAM:
            raise InvalidCommand("device_id", f"{checked!r} is reserved for the workspace's "
                                              "decisions")
        self._device_id = checked
        return checked

    _device_id: str | None = None

    def stage(self, command: DeviceCommand) -> None:
        """Add a checked device command to the current message."""
        self.steps.append(Step(command.device_id, command.message_id, command, self.now))

    def decide(self, command: Decision) -> None:
        """Add a checked person-level decision to the current message: a command for the
        workspace's decisions stream."""
        self.steps.append(Step(DECISIONS_STREAM, None, command, self.now))

    def take(self) -> list[Step]:
        """The current message's steps; the next message starts empty."""
        steps, self.steps = self.steps, []
        return steps


class BatchResult(NamedTuple):
    """What a committed batch did."""

    appended: list[LoggedEvent]
    """The events with their positions (empty unless asked for)."""
    accepted: int
    duplicates: int
    recorded: int
    """How many events it appended."""


class Writer:
    """Runs checked commands on their aggregates (devices, the decisions stream) and appends
    their events, for every unit of work of a workspace: the one commit algorithm."""

    def __init__(self, log: AggregateRepository, retries: int = RETRIES) -> None:
        self.log = log
        self.retries = retries
        """How many times a message runs before ConcurrencyConflict reaches the caller."""
        self.lock = threading.RLock()
        self.contended = 0
        """Batches still to write under the append lock since the last conflict."""
        self._devices: OrderedDict[str, Aggregate] = OrderedDict()

    def write_one(self, message: tuple[int, list[Step]]) -> BatchResult:
        """One message on its own (a public call, or ingest's fallback): a batch of one,
        :meth:`write_batch` with its events kept. ConcurrencyConflict when other writers kept
        winning for every one of :attr:`retries` attempts (nothing of it was written)."""
        result = self.write_batch([message], keep=True)
        if result is None:
            raise ConcurrencyConflict(f"device {message[1][0].stream!r}: other writers kept "
                                      f"winning ({self.retries} attempts)")
        return result

    def write_batch(
        self, batch: list[tuple[int, list[Step]]], *, keep: bool
    ) -> BatchResult | None:
        """Run a batch of validated messages; append all their events, in message order, in
        one transaction. None when other writers kept moving its devices for every one of
        :attr:`retries` attempts (nothing of it was written): ingest then runs the messages
        one by one, a public call (a batch of one) raises ConcurrencyConflict.

        Optimistic while no other writer is seen: the batch runs on cached devices and its
        append fails as a whole if another writer moved one of them; then only the messages of
        the devices that moved are run again, on those devices reloaded. Once a conflict was
        seen (``contended``), the next batches check instead, holding the store's append lock:
        which devices moved since they were loaded, reload and rerun those, then append, all
        before any other writer can append again. A contended batch then never fails (a
        refused append costs the whole batch's insert, and with devices shared, the other
        writer moved some device again during most retries: batches ran out of retries; and a
        single command that lost once cannot lose again, issue 16 item 12).

        A batch that records nothing (duplicates, unchanged or dropped attributes) or whose
        command refuses (logout of an anonymous device) decided on what its devices say; only
        an append would notice they were stale. So, on cached devices, that outcome is
        trusted only once their stored versions are checked: the moved ones are reloaded and
        decide again.

        ``keep``: return the appended events with their positions (for a catch-up here)."""
        with self.lock:
            devices = self._take_many({s.stream for _, steps in batch for s in steps})
            if self.contended:
                # Another writer shares these devices: the cached ones take what it appended
                # since (a few events each) instead of failing the batch's append first.
                self.log.refresh(devices.values())
            base = {device_id: device.version for device_id, device in devices.items()}
            previous: list[list[Recorded]] | None = None
            stale: set[str] = set()
            duplicates: set[int] = set()
            for attempt in range(self.retries):
                try:
                    events, previous = self._run_batch(batch, devices, previous, stale,
                                                       duplicates)
                except NotIdentified:
                    if attempt > 0 or not self._moved(devices, base):
                        raise
                    # Decided on stale devices: all of them again, from the log (the
                    # messages before the refusal changed the devices they ran on).
                    devices = self.log.load_many(devices)
                    base = {d: device.version for d, device in devices.items()}
                    previous, stale = None, set()
                    continue
                if not events and attempt == 0 and not self.contended:
                    stale = self._refresh(batch, devices, base, conflicted=False)
                    if stale:
                        continue
                try:
                    if self.contended:
                        with self.log.exclusive() as write:
                            stale = self._refresh(batch, devices, base, conflicted=False)
                            if stale:
                                events, previous = self._run_batch(
                                    batch, devices, previous, stale, duplicates)
                            positions = write(events) if events else []
                        self.contended = CONTENDED_BATCHES if stale else self.contended - 1
                    else:
                        positions = self.log.write(events)
                except WriteConflict:
                    self.contended = CONTENDED_BATCHES
                    stale = self._refresh(batch, devices, base, conflicted=True)
                    continue
                for device in devices.values():
                    self._keep(device)
                appended = ([LoggedEvent(p, r.event) for p, r in zip(positions, events, strict=True)]
                            if keep else [])
                return BatchResult(appended, len(batch) - len(duplicates), len(duplicates),
                                   len(positions))
            return None

    def _moved(self, devices: dict[str, Aggregate], base: dict[str, int]) -> bool:
        """Whether another writer appended to any of these devices since ``base``."""
        stored = self.log.versions(devices)
        return any(stored.get(d, 0) != base[d] for d in devices)

    def _refresh(self, batch: list[tuple[int, list[Step]]], devices: dict[str, Aggregate],
                 base: dict[str, int], *, conflicted: bool) -> set[str]:
        """Reload the devices another writer moved since ``base`` (and those sharing a message
        with one of them); the set reloaded. ``conflicted``: an append was refused, so if no
        device looks moved, reload them all (cannot tell which)."""
        stored = self.log.versions(devices)
        stale = _closure(batch, {d for d in devices if stored.get(d, 0) != base[d]})
        if not stale and conflicted:
            stale = set(devices)
        if stale:
            reloaded = self.log.load_many(stale)
            devices.update(reloaded)
            base.update({d: device.version for d, device in reloaded.items()})
        return stale

    def _run_batch(
        self, batch: list[tuple[int, list[Step]]], devices: dict[str, Aggregate],
        previous: list[list[Recorded]] | None, stale: set[str], duplicates: set[int],
    ) -> tuple[list[Recorded], list[list[Recorded]]]:
        """Run the batch's messages (after a conflict, only those of ``stale`` devices; the
        others keep the events ``previous`` holds for them); every event in message order, and
        each message's own."""
        events: list[Recorded] = []
        starts: list[int] = []
        for device in devices.values():
            device.record_into(events)  # every event of the batch, in message order
        try:
            for i, (_, steps) in enumerate(batch):
                starts.append(len(events))
                if previous is not None and not any(s.stream in stale for s in steps):
                    events.extend(previous[i])
                    continue
                duplicates.discard(i)
                first = steps[0]
                if devices[first.stream].is_duplicate(first.message_id):
                    duplicates.add(i)
                    continue
                for step in steps:
                    devices[step.stream].handle(step.command, step.now)
        finally:
            for device in devices.values():
                device.collect_events()  # each device its own pending list again
        starts.append(len(events))
        return events, [events[a:b] for a, b in pairwise(starts)]

    def _keep(self, device: Aggregate) -> None:
        self._devices[device.device_id] = device
        if len(self._devices) > DEVICE_CACHE_SIZE:
            self._devices.popitem(last=False)

    def _take_many(self, device_ids: Iterable[str]) -> dict[str, Aggregate]:
        devices: dict[str, Aggregate] = {}
        missing: list[str] = []
        for device_id in device_ids:
            cached = self._devices.pop(device_id, None)
            if cached is not None:
                devices[device_id] = cached
            else:
                missing.append(device_id)
        # Devices not cached: those that exist come in one query, the rest are new.
        if missing:
            devices.update(self.log.load_many(missing))
        return devices

    def drop_cache(self) -> None:
        """Forget every cached device: the next command loads its device from the log (after a
        forget, whose destroyed keys a cached device would still try to write under)."""
        with self.lock:
            self._devices.clear()


def _closure(batch: list[tuple[int, list[Step]]], stale: set[str]) -> set[str]:
    """``stale`` and every device that shares a message with one of them (a message runs
    whole or not at all), until nothing is added."""
    grown = True
    while grown:
        grown = False
        for _, steps in batch:
            ids = {s.stream for s in steps}
            if len(ids) > 1 and ids & stale and not ids <= stale:
                stale |= ids
                grown = True
    return stale
