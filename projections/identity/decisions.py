"""The decisions a fold needs ahead of where it is: the undone merges and the forgotten stints,
as the decisions stream of the log records them.

An unmerge is exact because the identity fold skips a merge whose id a ``MergeUndone`` names:
the rows are then what they would be had the merge never been recorded. A forget changes no
device's person because an identify that reads erased still goes to the member of the
forgotten person that its stint identified (``PersonForgotten.subjects``). The fold meets the
merge or the identify before the decision (log order), so it looks ahead in the one place that
is cheap to read whole: the workspace's decisions stream (one aggregate, a handful of events,
read by its indexed range). :class:`DecisionsAhead` keeps what it read and reads only what was
appended since, at most once per batch of events the fold applies.
"""

from __future__ import annotations

import threading

from idstitch.domain.events import (
    DECISIONS_STREAM,
    DeviceEvent,
    MergeUndone,
    PersonForgotten,
    PersonsMerged,
)
from idstitch.projections.identity import persons
from idstitch.projections.identity.graph import IdentityUnit
from idstitch.projections.identity.persons import IdScheme
from idstitch.projections.identity.rows import DeviceRow, PersonRow
from idstitch.projections.store import EventLog, to_micros

_AHEAD: frozenset[type[DeviceEvent]] = frozenset({MergeUndone, PersonForgotten})


class DecisionsAhead:
    """Merge id -> (position, reason) of its undo, and stint key id -> forgotten member, for
    every undo and forget recorded in the log."""

    def __init__(self, log: EventLog, undone_until: int | None = None) -> None:
        self._log = log
        self._undone_until = undone_until
        """Undos recorded after this position are not known (a replay of the log as it stood
        then: ``profile_as_of``). Forgets are known whenever recorded: the events they
        erased read erased whatever the position."""
        self._undone: dict[str, tuple[int, str]] = {}
        self._subjects: dict[str, str] = {}
        self._held: dict[str, list[tuple[str, int, int | None]]] = {}
        """Keyed hash of an email -> (member, claimed at, let go at) of forgotten holders."""
        self._took: dict[int, str] = {}
        """Position of a forgotten member's token registration -> the device it took it from."""
        self._forgets = 0
        """How many forgets the log holds (as read so far)."""
        self._held_stale = True
        """Whether a forget may have been recorded since the stream was read: at first, and
        after the fold met one (:meth:`forgotten`). Email claims are frequent and forgets
        rare, so :meth:`held_by` does not read the stream once per batch as the others do."""
        self._read_to = 0
        """The decisions stream was read up to this position."""
        self._lock = threading.Lock()
        self.stale = True
        """Whether to read the stream again before the next look-up (the fold sets it once
        per batch of events: a decision appended since is then seen, and a batch with many
        merges reads the stream once)."""

    def refresh(self) -> None:
        """Read the decisions appended since the last read (one indexed range, usually empty)."""
        with self._lock:
            for pos, ev in self._log.read_spans([(DECISIONS_STREAM, self._read_to + 1, None)],
                                                _AHEAD):
                if isinstance(ev, MergeUndone):
                    if self._undone_until is None or pos <= self._undone_until:
                        self._undone.setdefault(ev.merge_id, (pos, ev.reason))
                else:
                    assert isinstance(ev, PersonForgotten)
                    self._forgets += 1
                    for key_id, member in ev.subjects.items():
                        self._subjects.setdefault(key_id, member)
                    for digest, member, since, until in ev.held:
                        self._held.setdefault(digest, []).append((member, since, until))
                    self._took.update(ev.took)
                self._read_to = max(self._read_to, pos)

    def _fresh(self) -> None:
        if self.stale:
            self.stale = False
            self.refresh()

    def undo_of(self, merge_id: str) -> tuple[int, str] | None:
        """(position, reason) of the undo of a merge, or None when it stands."""
        self._fresh()
        return self._undone.get(merge_id)

    def held_by(self, email: str, position: int) -> str | None:
        """The forgotten member that held ``email`` (normalised) when the event at
        ``position`` claimed it, or None (its hash computed only once somebody was forgotten
        with an email)."""
        if self._held_stale:
            self._held_stale = False
            self.refresh()
        if not self._held:
            return None
        digest = self._log.identifier_digest(email)
        for member, since, until in self._held.get(digest or "", ()):
            if since < position and (until is None or position < until):
                return member
        return None

    def taken_at(self, position: int) -> str | None:
        """The device a forgotten member's token registration at ``position`` took its token
        from, or None."""
        self._fresh()
        return self._took.get(position)

    def forgotten(self) -> None:
        """The fold met a forget: read the stream before the next email claim."""
        self._held_stale = True

    def any_forgotten(self) -> bool:
        """Whether the log holds a forget (only then can an SDK session be known by its tag
        alone: see ``sessions.tag_erased``)."""
        self._fresh()
        return self._forgets > 0

    def subject_of(self, key_id: str | None) -> str | None:
        """The forgotten member whose identify a stint (its key id) recorded, or None (not
        forgotten, or forgotten before the decision kept it)."""
        if key_id is None:
            return None
        self._fresh()
        return self._subjects.get(key_id)


def persons_merged(unit: IdentityUnit, ev: PersonsMerged, pos: int,
                   undone: DecisionsAhead | None) -> None:
    """An explicit merge, unless it was undone: then only its record (kind ``unmerged``).

    A merge that names its persons (``named``) joins the persons they stand in now, through
    the merges in effect (an undone one is not); one recorded before names live persons."""
    if ev.named:
        primary, secondary = unit.survivor(ev.primary), unit.survivor(ev.secondary)
    else:
        primary, secondary = unit.live_person(ev.primary), unit.live_person(ev.secondary)
    if (primary is None or secondary is None or primary is secondary
            or not (primary.identified and secondary.identified)):
        # The command checked both; a merge recorded since by another writer retired one
        # (or joined them). Only identified persons merge explicitly.
        return
    ts = to_micros(ev.timestamp)
    undo = None if undone is None else undone.undo_of(ev.merge_id)
    if undo is not None:
        persons.record_unmerged(unit, ev.merge_id, secondary, primary, undo, None, ts)
        return
    persons.merge_explicit(unit, primary, secondary, ev.merge_id, ev.reason, pos, ts)


def undone_automatic(
    unit: IdentityUnit, target: PersonRow, current: PersonRow, dev: DeviceRow, pos: int,
    ts: int, ids: IdScheme, undone: DecisionsAhead | None,
) -> bool:
    """Whether the anonymous merge an identify would make was undone: the identify then acts
    as under the ``switch`` policy, for this event only (the anonymous person keeps what it
    had), and the merge's record says ``unmerged``."""
    if undone is None:
        return False
    merge_id = persons.merge_id_of("merged", dev, pos, ids)
    undo = undone.undo_of(merge_id)
    if undo is None:
        return False
    persons.record_unmerged(unit, merge_id, current, target, undo, dev.device_id, ts)
    return True
