"""The log as a stream of Changes: what a custom projection folds.

A custom projection gets, for every position, exactly the :class:`Change` that ``history``
shows for it: the same construction (:func:`~idstitch.projections.audit.refold` and
:func:`~idstitch.projections.audit.change_of`), run forward over consecutive positions instead
of over one person's family. The stream keeps each person's attribute state as of its position
(``at``); the rows of the identity projection (caught up at least as far as the stream reads)
say which person each event applied to (the persons' stints) and which merges it caused.

A person's state as of a position never changes afterwards (the log is append-only; stints and
merge records are written at the positions of their events), so a stream can start anywhere:
the state of a person it has not met yet is refolded from that person's own past, the way the
audit does, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from idstitch.domain.attributes import Attrs
from idstitch.domain.device import anonymous_id_for, anonymous_person_id
from idstitch.projections.audit import (
    ABSORBING,
    Change,
    Family,
    _Owners,
    change_of,
    family,
    ignored_identifies,
    refold,
    refusals,
    spans,
)
from idstitch.projections.identity.rows import MergeRow, PersonRow
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore
from idstitch.projections.unit import RowTypes
from idstitch.projections.views import Reader

STATES_LIMIT = 200_000
"""Persons whose attribute state the stream keeps at most; past it, the older half is dropped
(refolded from their past if met again)."""


class ChangeStream:
    """Changes of consecutive log positions, from ``at`` on."""

    def __init__(self, log: EventLog, store: ProjectionStore, row_types: RowTypes,
                 at: int = 0) -> None:
        self._log, self._store, self._row_types = log, store, row_types
        self.at = at
        """The position the kept states reflect (the last one streamed)."""
        self._states: dict[str, Attrs] = {}
        self._newest: dict[str, int] = {}
        self._merge_rows: dict[str, MergeRow] = {}

    def changes(self, events: Sequence[LoggedEvent]) -> list[Change]:
        """The Changes of ``events``: the positions right after :attr:`at`, in order (the
        whole log between, so that no person's state misses an event)."""
        if not events:
            return []
        lo, hi = self.at, events[-1].position
        if events[0].position <= lo:
            raise ValueError(f"the stream is at {lo}; events from {events[0].position} given")
        with self._store.snapshot() as rows:
            reader = Reader(rows, self._row_types)
            devices = list(dict.fromkeys(ev.device_id for _, ev in events))
            merge_row = self._merge_getter(reader)
            candidates = _candidates(reader, devices, merge_row)
            of = _Owners(Family(_NOBODY, candidates, [])).of
            owners = {of(ev.device_id, pos) for pos, ev in events}
            if None in owners:
                missing = [pos for pos, ev in events if of(ev.device_id, pos) is None]
                raise LookupError(f"no person's stint covers positions {missing[:5]}: the "
                                  "identity rows are behind the log read")
            merges = _merges([candidates[o] for o in owners if o is not None], merge_row, lo,
                             hi)
            needed = {o for o in owners if o is not None}
            for merge in merges:
                if merge.kind in ABSORBING:
                    needed.update((merge.source, merge.target))
            members = {pid: candidates.get(pid) or reader.person_row(pid) for pid in needed}
            present = {pid: row for pid, row in members.items() if row is not None}
            for pid, row in present.items():
                if pid not in self._states and row.since <= lo:
                    self._load(reader, row, lo)
            fam = Family(next(iter(present.values())), present, merges)
            ignored = frozenset(p for d in devices
                                for p in getattr(reader.device_row(d), "ignored", ()))
            refused = refusals(fam)
            out = [change_of(step, refused)
                   for step in refold(fam, events, ignored, self._states, self._newest)]
        if len(out) != len(events):
            raise LookupError("an event applied to no person (the identity rows are behind)")
        self.at = hi
        if len(self._states) > STATES_LIMIT:
            for pid in list(self._states)[:len(self._states) // 2]:
                del self._states[pid]
                self._newest.pop(pid, None)
        return out

    def _merge_getter(self, reader: Reader) -> Callable[[str], MergeRow | None]:
        """Merge records by id, kept once read (a record never changes)."""
        kept = self._merge_rows

        def get(merge_id: str) -> MergeRow | None:
            row = kept.get(merge_id)
            if row is None:
                row = reader.merge_row(merge_id)
                if row is not None:
                    if len(kept) > STATES_LIMIT:
                        kept.clear()
                    kept[merge_id] = row
            return row

        return get

    def _load(self, reader: Reader, person: PersonRow, at: int) -> None:
        """The person's attribute state as of position ``at``, refolded from its past."""
        fam = family(reader, person, at)
        states: dict[str, Attrs] = {}
        newest: dict[str, int] = {}
        events = self._log.read_spans(spans(fam, at))
        for _ in refold(fam, events, ignored_identifies(reader, fam), states, newest):
            pass
        self._states[person.person_id] = states.get(person.person_id, Attrs())
        self._newest[person.person_id] = newest.get(person.person_id, person.created_at)


_NOBODY = PersonRow(person_id="", created_at=0, updated_at=0)


def _candidates(reader: Reader, devices: Iterable[str],
                merge_row: Callable[[str], MergeRow | None]) -> dict[str, PersonRow]:
    """Every person a device was ever on: its anonymous persons (one a session), the persons
    they were merged into, and those it switched to (the merge records it caused)."""
    out: dict[str, PersonRow] = {}
    for device_id in devices:
        row = reader.device_row(device_id)
        if row is None:
            continue
        todo = [row.person_id, *(anonymous_person_id(anonymous_id_for(device_id, g))
                                 for g in range(row.generation + 1))]
        seen: set[str] = set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            person = out.get(pid) or reader.person_row(pid)
            if person is None:
                continue
            if any(s.device_id == device_id for s in person.stints):
                out[pid] = person
            if person.retired_into is not None:
                todo.append(person.retired_into)
            for merge_id in person.merges:
                merge = merge_row(merge_id)
                if merge is not None and merge.device_id == device_id:
                    todo.extend((merge.source, merge.target))
    return out


def _merges(persons: Iterable[PersonRow], merge_row: Callable[[str], MergeRow | None], lo: int,
            hi: int) -> list[MergeRow]:
    """The merge records of these persons caused at positions ``lo < p <= hi``, in log order."""
    found: dict[str, MergeRow] = {}
    for person in persons:
        for merge_id in person.merges:
            if merge_id not in found:
                merge = merge_row(merge_id)
                if merge is not None and lo < merge.position <= hi:
                    found[merge_id] = merge
    return sorted(found.values(), key=lambda r: r.position)
