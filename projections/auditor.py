"""The auditor: history, explain and profile_as_of, with what it computed kept for next time.

A person's history up to a position never changes afterwards (the log is append-only), except
when the rows are rebuilt (a new epoch) or another person's past joins it (a merge into it).
So the auditor keeps, for the persons and devices it audited recently, what it refolded: the
person's Changes with its family's attribute states (a later audit reads and refolds only the
events after them), an index of which Changes wrote each attribute (``explain`` looks it up),
and each device's decoded events (``profile_as_of`` refolds a device from them). What it keeps
is bounded by a number of events, least recently used first out.

Results are shared with the cache: treat them as read-only (they are frozen Structs; their
``data`` and attribute dicts are not copied).
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from typing import Any

from idstitch.domain import attributes
from idstitch.domain.attributes import Attrs
from idstitch.projections.asof import device_as_of
from idstitch.projections.audit import (
    ABSORBING,
    Change,
    Provenance,
    change_of,
    family,
    ignored_identifies,
    refold,
    refusals,
    spans,
)
from idstitch.projections.base import Registry
from idstitch.projections.identity.rows import PERSON, PersonRow
from idstitch.projections.store import (
    EventLog,
    LoggedEvent,
    ProjectionStore,
    from_micros,
    to_micros,
)
from idstitch.projections.views import Device, Profile, Reader, device_view

CACHE_EVENTS = 50_000
"""Events (Changes and decoded device events) the auditor keeps at most: about 1.8 KB each
(measured on bench_audit's person), so about 90 MB at most: the history and devices of a few
heavy persons, or of many ordinary ones."""


def _position(logged: LoggedEvent) -> int:
    return logged.position


class PersonIndex:
    """A person's refolded history up to ``until``, valid while its signature holds."""

    def __init__(self, signature: tuple[Any, ...]) -> None:
        self.signature = signature
        self.until = 0
        self.states: dict[str, Attrs] = {}
        self.newest: dict[str, int] = {}
        self.changes: list[Change] = []
        self.applied: list[int | None] = []
        """Per Change: the client time of an applied identify or attribute call, else None."""
        self.by_key: dict[str, list[int]] = {}
        """Attribute -> the indexes of the Changes whose event wrote it."""


class DeviceEvents:
    """A device's decoded events up to ``until``."""

    def __init__(self, epoch: str | None) -> None:
        self.epoch = epoch
        self.until = 0
        self.events: list[LoggedEvent] = []


class Auditor:
    """Answers the audit queries of one workspace (thread-safe; one audit at a time)."""

    def __init__(self, limit: int = CACHE_EVENTS) -> None:
        self.limit = limit
        self._persons: OrderedDict[str, PersonIndex] = OrderedDict()
        self._devices: OrderedDict[str, DeviceEvents] = OrderedDict()
        # Reentrant: a query takes it before opening its snapshot of the rows (serial()), so
        # no thread waits for it while holding a store connection others need.
        self._lock = threading.RLock()

    def serial(self) -> threading.RLock:
        """The audit lock, for a caller to hold around its snapshot: take it first."""
        return self._lock

    def clear(self) -> None:
        """Forget everything kept (after a change that rewrites the past: forget, unmerge)."""
        with self._lock:
            self._persons.clear()
            self._devices.clear()

    def history(self, reader: Reader, log: EventLog, person: PersonRow, until: int,
                epoch: str | None) -> list[Change]:
        """Every Change that shaped the person, up to position ``until``, in log order."""
        with self._lock:
            return list(self._index(reader, log, person, until, epoch).changes)

    def explain(self, reader: Reader, log: EventLog, person: PersonRow, attribute: str,
                until: int, epoch: str | None) -> Provenance | None:
        """Where the person's current value of ``attribute`` came from, and what lost to it."""
        present, value = attributes.value_of(person.attrs, attribute)
        if not present:
            return None
        winner = (person.attrs.stamps[attribute][1] if attribute in person.attrs.values
                  else person.attrs.once[attribute][0][1])
        with self._lock:
            index = self._index(reader, log, person, until, epoch)
            wrote = [index.changes[i] for i in index.by_key.get(attribute, ())]
        won = [c for c in wrote if c.position == winner]
        if not won:
            return None  # the rows are ahead of the log read (cannot happen after a catch-up)
        change = won[0]
        return Provenance(attribute=attribute, value=value, position=change.position,
                          device_id=change.device_id, timestamp=change.timestamp,
                          recorded_at=change.recorded_at, event=change.event,
                          message_id=change.message_id,
                          overridden=[c for c in wrote if c.position != winner])

    def profile_as_of(self, reader: Reader, log: EventLog, identifier: str, at: int,
                      until: int, epoch: str | None) -> Profile | None:
        """The profile ``identifier`` found when the log ended at position ``at`` (<= until)."""
        person = reader.person(identifier, at)
        if person is None:
            return None
        with self._lock:
            index = self._index(reader, log, person, until, epoch)
            values: dict[str, Any] = {}
            newest = person.created_at
            mine = person.person_id
            # The person's visible attributes move exactly by its Changes (merges included).
            for change, applied in zip(index.changes, index.applied, strict=True):
                if change.position > at:
                    break
                if change.person_id != mine:
                    continue
                for key, _, new in change.changes:
                    if new is None:
                        values.pop(key, None)
                    else:
                        values[key] = new
                if applied is not None and applied > newest:
                    newest = applied
                for merge in change.merges:
                    # An explicit merge stamps its primary's updated_at, as the fold does.
                    if (merge.kind == "explicit" and merge.target == mine
                            and merge.timestamp is not None
                            and (stamped := to_micros(merge.timestamp)) > newest):
                        newest = stamped
            device_ids = [s.device_id for s in person.stints
                          if s.start <= at and (s.end is None or s.end > at)]
            devices = self._devices_as_of(reader, log, person, device_ids, at, until, epoch)
        email = None
        for position, claimed in person.emails:
            if position <= at:
                email = claimed
        identified = person.identified_at is not None and person.identified_at <= at
        identifiers = {k: v for k, v in (("id", person.user_id if identified else None),
                                         ("email", email)) if v}
        return Profile(
            person_id=person.person_id, identified=identified, identifiers=identifiers,
            attributes=values, devices=devices,
            anonymous_ids=[a for a, since in zip(person.anonymous_ids, person.anonymous_since,
                                                 strict=True) if since <= at],
            created_at=from_micros(person.created_at), updated_at=from_micros(newest))

    # What is kept.

    def _index(self, reader: Reader, log: EventLog, person: PersonRow, until: int,
               epoch: str | None) -> PersonIndex:
        fam = family(reader, person)
        # What invalidates the past: a new life of the rows, another member, a merge that is
        # not a conversion or a switch (those only ever add to the future).
        signature = (epoch, tuple(sorted(fam.members)),
                     tuple(r.merge_id for r in fam.merges if r.kind in ABSORBING))
        index = self._persons.pop(person.person_id, None)
        if index is None or index.signature != signature or index.until > until:
            index = PersonIndex(signature)
        if index.until < until:
            events = log.read_spans(spans(fam, until, after=index.until))
            refused = refusals(fam)
            # Should this raise, the half-extended index is not put back (it was taken out).
            for step in refold(fam, events, ignored_identifies(reader, fam), index.states,
                               index.newest):
                for key in step.wrote:
                    index.by_key.setdefault(key, []).append(len(index.changes))
                index.changes.append(change_of(step, refused))
                index.applied.append(step.applied)
            index.until = until
        self._persons[person.person_id] = index
        self._evict()
        return index

    def _devices_as_of(self, reader: Reader, log: EventLog, person: PersonRow,
                       device_ids: list[str], at: int, until: int, epoch: str | None
                       ) -> list[Device]:
        missing: dict[str, DeviceEvents] = {}
        for device_id in device_ids:
            kept = self._devices.pop(device_id, None)
            if kept is None or kept.epoch != epoch or kept.until > until:
                kept = DeviceEvents(epoch)
            if kept.until < until:
                missing[device_id] = kept
            self._devices[device_id] = kept
        if missing:
            read = log.read_spans([(d, kept.until + 1, until + 1) for d, kept in missing.items()])
            for logged in read:
                missing[logged.event.device_id].events.append(logged)
            for kept in missing.values():
                kept.until = until
        out: list[Device] = []
        for device_id in device_ids:
            events = self._devices[device_id].events
            upto = events[:bisect_right(events, at, key=_position)]
            now = reader.device_row(device_id)
            if now is None or not upto or now.server:
                continue  # a server-side stream is not one of the person's devices
            row, attrs = device_as_of(now, upto, at)
            row.person_id = person.person_id
            out.append(device_view(row, attrs))
        self._evict()
        return out

    @staticmethod
    def epoch(store: ProjectionStore, registry: Registry) -> str | None:
        """The life of the person rows the audit reads: the committed meta of the projection
        the registry says owns them (it changes at every reset and rebuild, here or in
        another process)."""
        try:
            owner = registry.owner_of(PERSON)
        except KeyError:
            return None
        return store.meta(owner.name)

    def _evict(self) -> None:
        held = (sum(len(i.changes) for i in self._persons.values())
                + sum(len(d.events) for d in self._devices.values()))
        while held > self.limit and (self._persons or self._devices):
            # Persons first (the larger), then devices, each least recently used first.
            if self._persons:
                _, index = self._persons.popitem(last=False)
                held -= len(index.changes)
            else:
                _, kept = self._devices.popitem(last=False)
                held -= len(kept.events)
