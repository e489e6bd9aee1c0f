"""Whether a forget's purge has landed: the rule every process keeping custom projections
applies before it honours a ``PersonForgotten`` decision.

``ws.forget`` records its decision, then purges the identity rows in place (or rebuilds them),
in that order (see ``idstitch.service.erasure``). A custom projection's Changes are read from
those rows (which person each event applied to, which merges it caused): a process that
folded a projection over them between the decision and the purge would keep what the rows
said before the forget, unlike a rebuild. So a decision is honoured only once its purge has
landed, whichever process meets it; until then the projection stops right before it (see
:meth:`idstitch.projections.custom_runner.CustomRunner.catch_up`).

The purge has landed when the identity rows no longer identify the forgotten person by an
event the log no longer gives. Before the purge its own row (merges not followed) is
identified by one of its own events, which read erased once its keys are destroyed (before
the decision is recorded). The purge and the rebuild fold an erased identify as putting its
device where it went but claiming no identifier: they leave the row identified with no user id
nor email (decisions recorded before their ``subjects`` were kept: gone, anonymous, or
identified by an event that still reads). It is also the test the
next open of a workspace uses to finish a forget whose process stopped before its purge
(``idstitch.service.erasure.finish_forgets``). An unmerge waits for its replay the same way
(:mod:`idstitch.projections.custom_unmerges`): :func:`first_pending` and :func:`made_at` cover
both.
"""

from __future__ import annotations

from typing import NamedTuple

from idstitch.domain.events import DECISIONS_STREAM, DeviceEvent, MergeUndone, PersonForgotten
from idstitch.projections.base import Registry
from idstitch.projections.custom_unmerges import UNDONE, replay_pending, unreplayed
from idstitch.projections.store import EventLog, ProjectionStore, RowSource
from idstitch.projections.unit import RowTypes
from idstitch.projections.views import Reader

FORGOTTEN: frozenset[type[DeviceEvent]] = frozenset({PersonForgotten})
REWRITING: frozenset[type[DeviceEvent]] = FORGOTTEN | UNDONE
"""The decisions a custom projection waits at until their process has rewritten the identity
rows."""


class _Check:
    """The test, over one snapshot of the rows; the process's keys dropped before it reads an
    event (a key cached here before another process destroyed it would read it back)."""

    def __init__(self, log: EventLog, rows: RowSource, row_types: RowTypes) -> None:
        self._log, self._reader, self._dropped = log, Reader(rows, row_types), False

    def unpurged(self, position: int, decision: PersonForgotten) -> bool:
        """Whether the identity rows still identify the person of ``decision`` (recorded at
        ``position``) by an event that now reads erased."""
        person = self._reader.person_row(decision.person_id)
        if person is None or not person.identified or person.nameless:
            # Nameless: the rows a purge or a rebuild gives (an identify that reads erased
            # still puts its device on the person, and claims no identifier).
            return False
        at = person.identified_at
        if at is None:
            return True  # rows from before identified_at was kept: as finish_forgets always did
        if at > position:
            return False  # identified by an event after the decision: not the forgotten one
        if not self._dropped:
            self._log.drop_keys()
            self._dropped = True
        found = self._log.read(at - 1, 1)
        return not found or found[0].position != at or found[0].event.erased

    def pending(self, position: int, decision: DeviceEvent) -> bool:
        """Whether ``decision`` (a forget or an unmerge) has not rewritten the rows yet."""
        if isinstance(decision, MergeUndone):
            return unreplayed(self._reader, decision)
        assert isinstance(decision, PersonForgotten)
        return self.unpurged(position, decision)


def purge_pending(log: EventLog, store: ProjectionStore, row_types: RowTypes, position: int,
                  decision: PersonForgotten) -> bool:
    """Whether the forget ``decision`` (recorded at ``position``) has not purged the identity
    rows yet (see the module)."""
    with store.snapshot() as rows:
        return _Check(log, rows, row_types).unpurged(position, decision)


def first_pending(log: EventLog, store: ProjectionStore, row_types: RowTypes,
                  until: int | None = None,
                  kinds: frozenset[type[DeviceEvent]] = FORGOTTEN) -> int | None:
    """The position of the first forget (up to ``until``; None: the whole log) whose purge
    has not landed, or of the first unmerge whose replay has not (``kinds``: which of them);
    None if every one has. One indexed read of the decisions stream and a row or two per
    decision, in one snapshot of the rows."""
    decided = log.read_spans([(DECISIONS_STREAM, 1, None if until is None else until + 1)],
                             kinds)
    if not decided:
        return None
    with store.snapshot() as rows:
        check = _Check(log, rows, row_types)
        for position, decision in decided:
            if check.pending(position, decision):
                return position
    return None


def made_at(log: EventLog, store: ProjectionStore, row_types: RowTypes, head: int) -> int:
    """What new tables of a custom projection may say they were made after (their
    :attr:`~idstitch.projections.custom.Tracked.made_at`): the head of the log, or the
    position right before the first forget whose purge has not landed, or unmerge whose
    replay has not. Tables folded over such rows must still honour that decision (see the
    module)."""
    pending = first_pending(log, store, row_types, head, REWRITING)
    return head if pending is None else pending - 1


class Wait(NamedTuple):
    """Where a custom projection waits: right before the decision at ``position``, a
    ``"forget"`` not purged yet or an ``"unmerge"`` not replayed yet."""

    position: int
    decision: str


def rewrite_pending(log: EventLog, store: ProjectionStore, registry: Registry, position: int,
                    decision: DeviceEvent) -> Wait | None:
    """Where a custom projection meeting ``decision`` (a forget or an unmerge recorded at
    ``position``) must wait, or None if its process has rewritten the identity rows."""
    if isinstance(decision, MergeUndone):
        pending = replay_pending(store, registry, position, decision)
    else:
        assert isinstance(decision, PersonForgotten)
        pending = purge_pending(log, store, registry.row_types, position, decision)
    return Wait(position, "unmerge" if isinstance(decision, MergeUndone) else "forget") if (
        pending) else None
