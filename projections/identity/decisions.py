"""The undone merges, as the decisions stream of the log records them.

An unmerge is exact because the identity fold skips a merge whose id a ``MergeUndone`` names:
the rows are then what they would be had the merge never been recorded. The fold meets the
merge before the undo (log order), so it looks ahead in the one place that is cheap to read
whole: the workspace's decisions stream (one aggregate, a handful of events, read by its
indexed range). :class:`UndoneMerges` keeps what it read and reads only what was appended
since, at most once per batch of events the fold applies.
"""

from __future__ import annotations

import threading

from idstitch.domain.events import DECISIONS_STREAM, MergeUndone, PersonsMerged
from idstitch.projections.identity import persons
from idstitch.projections.identity.graph import IdentityUnit
from idstitch.projections.identity.persons import IdScheme
from idstitch.projections.identity.rows import DeviceRow, PersonRow
from idstitch.projections.store import EventLog, to_micros

_UNDONE = frozenset({MergeUndone})


class UndoneMerges:
    """Merge id -> (position, reason) of its undo, for every undo recorded in the log."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._undone: dict[str, tuple[int, str]] = {}
        self._read_to = 0
        """The decisions stream was read up to this position."""
        self._lock = threading.Lock()
        self.stale = True
        """Whether to read the stream again before the next look-up (the fold sets it once
        per batch of events: an undo appended since is then seen, and a batch with many
        merges reads the stream once)."""

    def refresh(self) -> None:
        """Read the undos appended since the last read (one indexed range, usually empty)."""
        with self._lock:
            for pos, ev in self._log.read_spans([(DECISIONS_STREAM, self._read_to + 1, None)],
                                                _UNDONE):
                assert isinstance(ev, MergeUndone)
                self._undone.setdefault(ev.merge_id, (pos, ev.reason))
                self._read_to = max(self._read_to, pos)

    def undo_of(self, merge_id: str) -> tuple[int, str] | None:
        """(position, reason) of the undo of a merge, or None when it stands."""
        if self.stale:
            self.stale = False
            self.refresh()
        return self._undone.get(merge_id)


def persons_merged(unit: IdentityUnit, ev: PersonsMerged, pos: int,
                   undone: UndoneMerges | None) -> None:
    """An explicit merge, unless it was undone: then only its record (kind ``unmerged``)."""
    primary = unit.live_person(ev.primary)
    secondary = unit.live_person(ev.secondary)
    if primary is None or secondary is None or primary is secondary:
        # The command checked both; a merge recorded since by another writer retired one.
        return
    ts = to_micros(ev.timestamp)
    undo = None if undone is None else undone.undo_of(ev.merge_id)
    if undo is not None:
        persons.record_unmerged(unit, ev.merge_id, secondary, primary, undo, None, ts)
        return
    persons.merge_explicit(unit, primary, secondary, ev.merge_id, ev.reason, pos, ts)


def undone_automatic(
    unit: IdentityUnit, target: PersonRow, current: PersonRow, dev: DeviceRow, pos: int,
    ts: int, ids: IdScheme, undone: UndoneMerges | None,
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
