"""Whether a forget's purge has landed: the rule every process keeping custom projections
applies before it honours a ``PersonForgotten`` decision.

``ws.forget`` records its decision, then purges the identity rows in place (or rebuilds them),
in that order (see ``idstitch.service.erasure``). A custom projection's Changes are read from
those rows (which person each event applied to, which merges it caused): a process that
folded a projection over them between the decision and the purge would keep what the rows
said before the forget, unlike a rebuild. So a decision is honoured only once its purge has
landed, whichever process meets it; until then the projection stops right before it (see
:meth:`idstitch.projections.custom_runner.CustomRunner.catch_up`).

The purge has landed when the identity rows no longer hold the forgotten person as it was:
its own row (merges not followed) is gone, anonymous, or identified by an event after the
decision. Before the purge the row is the live, identified person the forget found (its
identifiers and its id are refused from the decision on, so nothing merges or retires it);
the purge and the rebuild leave at most the anonymous session the person began with, which
later traffic on that device may identify again (a conversion keeps its id) or merge into
another person. It is also the test the next open of a workspace uses to finish a forget whose
process stopped before its purge (``idstitch.service.erasure.finish_forgets``).
"""

from __future__ import annotations

from idstitch.domain.events import DECISIONS_STREAM, DeviceEvent, PersonForgotten
from idstitch.projections.store import EventLog, ProjectionStore, RowSource
from idstitch.projections.unit import RowTypes
from idstitch.projections.views import Reader

FORGOTTEN: frozenset[type[DeviceEvent]] = frozenset({PersonForgotten})


def _unpurged(rows: RowSource, row_types: RowTypes, position: int, person_id: str) -> bool:
    person = Reader(rows, row_types).person_row(person_id)
    return person is not None and person.identified and (
        person.identified_at is None or person.identified_at < position)


def purge_pending(store: ProjectionStore, row_types: RowTypes, position: int,
                  decision: PersonForgotten) -> bool:
    """Whether the forget ``decision`` (recorded at ``position``) has not purged the identity
    rows yet: its person is there as the forget found it (see the module)."""
    with store.snapshot() as rows:
        return _unpurged(rows, row_types, position, decision.person_id)


def first_pending(log: EventLog, store: ProjectionStore, row_types: RowTypes,
                  until: int | None = None) -> int | None:
    """The position of the first forget (up to ``until``; None: the whole log) whose purge
    has not landed; None if every one has. One indexed read of the decisions stream and a
    row or two per forget, in one snapshot of the rows."""
    decided = log.read_spans([(DECISIONS_STREAM, 1, None if until is None else until + 1)],
                             FORGOTTEN)
    if not decided:
        return None
    with store.snapshot() as rows:
        for position, decision in decided:
            assert isinstance(decision, PersonForgotten)
            if _unpurged(rows, row_types, position, decision.person_id):
                return position
    return None


def made_at(log: EventLog, store: ProjectionStore, row_types: RowTypes, head: int) -> int:
    """What new tables of a custom projection may say they were made after (their
    :attr:`~idstitch.projections.custom.Tracked.made_at`): the head of the log, or the
    position right before the first forget whose purge has not landed. Tables folded over
    unpurged rows must still honour that forget (see the module)."""
    pending = first_pending(log, store, row_types, head)
    return head if pending is None else pending - 1
