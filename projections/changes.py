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

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, cast

from idstitch.domain.attributes import Attrs
from idstitch.domain.errors import CorruptRow
from idstitch.domain.events import DECISIONS_STREAM, PersonsMerged
from idstitch.projections.audit import (
    ABSORBING,
    Change,
    Family,
    family,
    ignored_identifies,
    refold,
    refold_changes,
    refusals,
    spans,
)
from idstitch.projections.change_rows import SLIM, DeviceFields, PersonFields, search_persons
from idstitch.projections.identity.fold import IdentityProjection
from idstitch.projections.identity.rows import (
    DEVICE,
    MERGE,
    PERSON,
    MergeRow,
    PersonRow,
)
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore
from idstitch.projections.unit import RowTypes, decode_row
from idstitch.projections.views import Reader

IDENTITY = IdentityProjection.name
STATES_LIMIT = 200_000
"""Persons whose attribute state the stream keeps at most; past it, the older half is dropped
(refolded from their past if met again)."""
PREFETCH_POSITIONS = 20_000
"""A stream that will read at least this many positions, and at least half of the log up to
where it stops, reads every device, person and merge row at once (see
:meth:`ChangeStream.prefetch`)."""


class RowsBehind(LookupError):
    """The identity rows do not cover events the stream read: another process is rewriting
    them (an unmerge's replay, a forget's purge) or has not committed them yet. Not the
    custom projection's failure; a later catch-up finds them."""


class ChangeStream:
    """Changes of consecutive log positions, from ``at`` on."""

    def __init__(self, log: EventLog, store: ProjectionStore, row_types: RowTypes,
                 at: int = 0, ahead: int = 0) -> None:
        self._log, self._store, self._row_types = log, store, row_types
        self.at = at
        """The position the kept states reflect (the last one streamed)."""
        self._ahead = ahead
        """How many positions the caller means to stream from ``at`` (a hint: see
        :data:`PREFETCH_POSITIONS`)."""
        self._complete: set[str] = set()
        """Kinds whose every committed row is cached (read by :meth:`prefetch`): a key not
        cached has no row, nothing to read."""
        self._states: dict[str, Attrs] = {}
        self._newest: dict[str, int] = {}
        self._merge_rows: dict[str, MergeRow] = {}
        self._cached: dict[str, dict[str, Any]] = {}
        """Decoded identity rows (None: no such row) read since :attr:`_cached_at`."""
        self._on: dict[str, dict[str, PersonFields]] = {}
        """Per device, every person it was ever on (see
        :func:`~idstitch.projections.change_rows.search_persons`), kept with the rows (the
        search follows merges: it cost more than decoding the rows)."""
        self._stints: dict[str, tuple[tuple[int, ...], tuple[tuple[int, int, str], ...]]] = {}
        """Per device, the stints of the persons it was ever on, sorted (their starts apart,
        for bisecting): which person each of its events applied to. Kept with the rows."""
        self._devices_of: dict[str, tuple[str, ...]] = {}
        """Per person, the devices of its stints (kept with the rows)."""
        self._last: dict[str, tuple[int, int, str]] = {}
        """Per device, the stint its last event fell in (the next one mostly does too)."""
        self._merges_of: dict[str, tuple[PersonFields, int, tuple[MergeRow, ...]]] = {}
        """Per person met as an owner, its row, the merge records it names and the last
        position among them (kept with the rows)."""
        self._ignored: set[int] = set()
        """The positions of the refused identifies of every device searched (kept with the
        rows)."""
        self._cached_at: tuple[int, str | None] | None = None
        """The identity projection's committed (position, meta) when the cache began: rows
        change only when it moves, so until then a row read for one batch serves the next."""

    def changes(self, events: Sequence[LoggedEvent], wanted: AbstractSet[str] | None = None
                ) -> list[Change]:
        """The Changes of ``events``: the positions right after :attr:`at`, in order (the
        whole log between, so that no person's state misses an event). ``wanted``: the only
        event names whose Changes are built (None: all); the others are folded all the same."""
        if not events:
            return []
        lo, hi = self.at, events[-1].position
        if events[0].position <= lo:
            raise ValueError(f"the stream is at {lo}; events from {events[0].position} given")
        # Rows change only when the identity projection commits: until then a row read for one
        # batch serves the next (the decisions' merge records too).
        tracked = self._store.tracked(IDENTITY)
        if tracked != self._cached_at or sum(map(len, self._cached.values())) > STATES_LIMIT:
            self._cached, self._cached_at, self._on = {}, tracked, {}
            self._stints, self._devices_of, self._last = {}, {}, {}
            self._merges_of, self._ignored, self._complete = {}, set(), set()
            ahead, self._ahead = self._ahead, 0
            if ahead >= PREFETCH_POSITIONS and 2 * ahead >= lo + ahead:
                self.prefetch()
        # Most events fall in the stint their device's previous event fell in: one look-up
        # each. The others (a device met for the first time, a stint ended, a decision) are
        # looked up afterwards, their devices searched first if new.
        last = self._last
        members: list[str | None] = []
        add = members.append
        later: list[int] = []
        for pos, ev in events:
            stint = last.get(ev.device_id)
            if stint is not None and stint[0] <= pos < stint[1]:
                add(stint[2])
            else:
                later.append(len(members))
                add(None)
        on = self._on
        if any(events[i].event.device_id == DECISIONS_STREAM for i in later):
            # Decisions are no device's events. An explicit merge applied to its primary (the
            # target of its record, as history shows it); a forget, an undo, or a merge that
            # was undone or not applied changed no person at its position: no Change.
            decided = self._decided(events)
            events = [e for e in events
                      if e.event.device_id != DECISIONS_STREAM or e.position in decided]
            if not events:
                self.at = hi
                return []
            devices = dict.fromkeys([ev.device_id for _, ev in events])
            devices.pop(DECISIONS_STREAM, None)
            new = [d for d in devices if d not in on]
            if new:
                self._search(new)
            members = self._members(events, decided)
        elif later:
            # No snapshot: the rows read here describe positions up to `hi`, which no later
            # commit changes (stints, merge records and refusals are written at their events'
            # positions).
            new = list(dict.fromkeys([d for i in later
                                      if (d := events[i].event.device_id) not in on]))
            if new:
                self._search(new)
            owner = self._owner
            for i in later:
                pos, ev = events[i]
                members[i] = owner(ev.device_id, pos)
        if None in members:
            missing = [pos for (pos, _), o in zip(events, members, strict=True) if o is None]
            raise RowsBehind(f"no person's stint covers positions {missing[:5]}: the "
                             "identity rows are behind the log read")
        owners = cast(set[str], set(members))
        # One look-up an owner for its row and its merges (these dicts hold every person met:
        # each pass over them costs a cache miss or more an owner).
        kept = self._merges_of
        entries = [kept.get(o) for o in owners]
        if None in entries:
            self._keep_persons([o for o, e in zip(owners, entries, strict=True) if e is None])
            entries = [kept[o] for o in owners]
        rows: dict[str, PersonFields] = {}
        caused: dict[str, MergeRow] = {}
        for pid, entry in zip(owners, entries, strict=True):
            row, newest_merge, mine = entry  # type: ignore[misc]
            rows[pid] = row
            if newest_merge > lo:  # (most persons' merges are all behind the stream)
                for merge in mine:
                    if lo < merge.position <= hi:
                        caused.setdefault(merge.merge_id, merge)
        merges = sorted(caused.values(), key=lambda r: r.position) if caused else []
        if merges:
            others = {p for merge in merges if merge.kind in ABSORBING
                      for p in (merge.source, merge.target) if p not in rows}
            if others:
                rows.update(self._rows(PERSON, others))
        states = self._states
        reader: Reader | None = None
        for pid, row in rows.items():
            if pid not in states and row.since <= lo:
                if reader is None:
                    reader = Reader(self._store, self._row_types)
                self._load(reader, row, lo)
        # The refold reads only the fields PersonFields decodes (ids, stints, merges,
        # refusals, created_at): it takes them for the rows they were decoded from.
        present = cast(dict[str, PersonRow], rows)
        fam = Family(next(iter(present.values())), present, merges)
        refused = refusals(fam)
        # (The refused identifies of every device met: a position is one device's event.)
        out, folded = refold_changes(fam, events, self._ignored, states, self._newest, members,
                                     refused, wanted)
        if folded != len(events):
            raise RowsBehind("an event applied to no person (the identity rows are behind)")
        self.at = hi
        if len(states) > STATES_LIMIT:
            for pid in list(states)[:len(states) // 2]:
                del states[pid]
                self._newest.pop(pid, None)
        return out

    def _members(self, events: Sequence[LoggedEvent], decided: dict[int, MergeRow]
                 ) -> list[str | None]:
        """The person each event applied to, in order (None: no stint covers it): a device's
        event, the person whose stint on the device covers it; a decision, its merge's
        target. A device's events mostly fall in the stint of its previous one."""
        last, owner = self._last, self._owner
        out: list[str | None] = []
        add = out.append
        for pos, ev in events:
            device_id = ev.device_id
            stint = last.get(device_id)
            if stint is not None and stint[0] <= pos < stint[1]:
                add(stint[2])
            elif device_id == DECISIONS_STREAM:
                add(decided[pos].target)
            else:
                add(owner(device_id, pos))
        return out

    def _decided(self, events: Sequence[LoggedEvent]) -> dict[int, MergeRow]:
        """The explicit merges among ``events`` that were applied where recorded, by
        position: their records."""
        merges = {pos: ev.merge_id for pos, ev in events if type(ev) is PersonsMerged}
        if not merges:
            return {}
        rows: dict[str, MergeRow] = self._rows(MERGE, merges.values())
        return {pos: row for pos, merge_id in merges.items()
                if (row := rows.get(merge_id)) is not None and row.kind == "explicit"
                and row.position == pos}

    def prefetch(self) -> None:
        """Read and decode every device, person and merge row now, one pass over each kind,
        instead of searching the devices met for the first time a few rows at a time.

        A stream over most of a long log meets nearly every device, so it reads nearly every
        one of these rows either way: as point reads scattered over the table (the rows of a
        million-event log: a fifth of a catch-up's time), or here in one scan each. Only when
        they fit in the rows the stream keeps (:data:`STATES_LIMIT`, counted first: a scan
        holds a whole kind at once); otherwise they are read as met."""
        counts = {kind: self._store.count(kind) for kind in (DEVICE, PERSON, MERGE)}
        if counts[DEVICE] + counts[PERSON] > STATES_LIMIT:
            return
        # The merge records too if all fit; else they are read as met (an identity-heavy log
        # holds more of them than devices and persons together), and the devices' search, the
        # dearer part, is still done at once.
        kinds = tuple(counts) if sum(counts.values()) <= STATES_LIMIT else (DEVICE, PERSON)
        for kind in kinds:
            row_type = SLIM.get(kind) or self._row_types[kind]
            found: dict[str, Any] = {}
            try:
                for key, raw in self._store.scan(kind):
                    found[key] = decode_row(row_type, raw)
            except CorruptRow as e:
                e.row_class = self._row_types[kind]  # the stored type, whose owner repairs it
                raise
            if sum(map(len, self._cached.values())) + len(found) > STATES_LIMIT:
                return  # grew since counted: this kind and the next are read as met
            self._cached.setdefault(kind, {}).update(found)
            self._complete.add(kind)
        self._index_devices()

    def _index_devices(self) -> None:
        """Every device's persons, from the stints of every person (all cached): the search
        of each device met for the first time (:meth:`_search`), done for all at once."""
        devices: dict[str, DeviceFields] = self._cached[DEVICE]
        on: dict[str, dict[str, PersonFields]] = {device_id: {} for device_id in devices}
        for pid, person in self._cached[PERSON].items():
            for stint in person.stints:
                persons = on.get(stint.device_id)
                if persons is not None:
                    persons[pid] = person
        self._on = on
        for row in devices.values():
            if row.ignored:
                self._ignored.update(row.ignored)

    def _rows(self, kind: str, keys: Iterable[str]) -> dict[str, Any]:
        """Committed rows of a kind among ``keys``, decoded (one read for those not cached:
        consecutive batches meet mostly the same devices and persons)."""
        cached = self._cached.setdefault(kind, {})
        if kind in self._complete:
            return {k: row for k in keys if (row := cached.get(k)) is not None}
        keys = list(keys)
        missing = [k for k in keys if k not in cached]
        if missing:
            found = self._read(kind, missing)
            for key in missing:
                cached[key] = found.get(key)
        return {k: row for k in keys if (row := cached[k]) is not None}

    def _read(self, kind: str, keys: list[str]) -> dict[str, Any]:
        """Committed rows of a kind among ``keys``, decoded, not kept."""
        row_type = SLIM.get(kind) or self._row_types[kind]
        try:
            return {key: decode_row(row_type, raw)
                    for key, raw in self._store.get_many(kind, keys).items()}
        except CorruptRow as e:
            e.row_class = self._row_types[kind]  # the stored type, whose owner repairs it
            raise

    def _merge_rows_of(self, persons: Iterable[PersonFields]) -> dict[str, MergeRow]:
        """The merge records these persons name, kept once read (a record never changes)."""
        kept = self._merge_rows
        persons = list(persons)  # (read twice when the records kept overflow)
        missing = {m for p in persons for m in p.merges if m not in kept}
        if missing:
            if len(kept) + len(missing) > STATES_LIMIT:
                kept.clear()
                missing = {m for p in persons for m in p.merges}
            # Kept here only, not also with the rows: devices and persons read at once then
            # keep all the room the rows have.
            kept.update(self._rows(MERGE, missing) if MERGE in self._complete
                        else self._read(MERGE, list(missing)))
        return kept

    def _search(self, devices: list[str]) -> None:
        """Search the persons of devices met for the first time while the rows stay put (a
        device's persons do not depend on the other devices searched with it): kept per
        device (:attr:`_on`), with the positions of their refused identifies."""
        on = self._on
        device_rows: dict[str, DeviceFields] = self._rows(DEVICE, devices)
        for device_id in devices:
            on[device_id] = {}
        search_persons(device_rows, on, self._rows, self._merge_rows_of, self._devices_of)
        for row in device_rows.values():
            if row.ignored:
                self._ignored.update(row.ignored)

    def _owner(self, device_id: str, position: int) -> str | None:
        """The person a device's event at ``position`` applied to: the one whose stint on
        the device covers it (the devices of the current batch have been searched). The stint
        found is kept as the device's last (see :meth:`_members`)."""
        found = self._stints.get(device_id)
        if found is None:
            stints = tuple(sorted((stint.start, 2**62 if stint.end is None else stint.end, pid)
                                  for pid, person in self._on.get(device_id, {}).items()
                                  for stint in person.stints if stint.device_id == device_id))
            found = self._stints[device_id] = (tuple(s for s, _, _ in stints), stints)
        starts, stints = found
        i = bisect_right(starts, position) - 1
        if i < 0 or position >= stints[i][1]:
            return None
        self._last[device_id] = stints[i]
        return stints[i][2]

    def _keep_persons(self, pids: list[str]) -> None:
        """Keep each person's row with its merge records and the last position among them
        (:attr:`_merges_of`); KeyError for a person without a row."""
        rows: dict[str, PersonFields] = self._rows(PERSON, pids)
        persons = [rows[p] for p in pids]
        records = self._merge_rows_of(persons)
        kept = self._merges_of
        for person in persons:
            mine = tuple(records[m] for m in person.merges if m in records)
            kept[person.person_id] = (person, max((r.position for r in mine), default=0), mine)

    def _load(self, reader: Reader, person: PersonFields, at: int) -> None:
        """The person's attribute state as of position ``at``, refolded from its past."""
        fam = family(reader, cast(PersonRow, person), at)
        states: dict[str, Attrs] = {}
        newest: dict[str, int] = {}
        events = self._log.read_spans(spans(fam, at))
        for _ in refold(fam, events, ignored_identifies(reader, fam), states, newest):
            pass
        self._states[person.person_id] = states.get(person.person_id, Attrs())
        self._newest[person.person_id] = newest.get(person.person_id, person.created_at)

