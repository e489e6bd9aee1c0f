"""An as-of answer across an undone merge: the log up to the position, replayed.

``profile_as_of`` answers from the rows as they stand (:mod:`idstitch.projections.auditor`),
and the rows of an undone merge are those of a log in which it was never recorded: at every
position, also those between the merge and its undo. As the log stood then, the merge held.
So an as-of at a position that an undo recorded later reaches back over (it undid a merge
recorded at or before the position) replays the log up to that position instead, into rows
of its own, knowing only the undos recorded by then: the answer of a workspace fed that
prefix. Its cost is a rebuild of the prefix (see docs/performance.md); only as-of answers in
such a window pay it.
"""

from __future__ import annotations

import re

from idstitch.domain.events import DECISIONS_STREAM, MergeUndone
from idstitch.domain.rules import classify
from idstitch.projections.audit import family
from idstitch.projections.base import Registry
from idstitch.projections.replay import replay
from idstitch.projections.runner_state import RunnerStates
from idstitch.projections.store import EventLog, ProjectionStore
from idstitch.projections.views import Profile, Reader

_PERSON_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The form of a person id (a UUID) given bare (``cio_`` ones are told by the identifier rule)."""


def undone_since(log: EventLog, reader: Reader, identifier: str, at: int, until: int) -> bool:
    """Whether an undo recorded after position ``at`` (up to ``until``) may have undone a
    merge the answer at ``at`` held: one whose record names the person ``identifier`` finds
    at ``at`` in these rows (or, finding nobody then, now) or one of its family (the persons
    merged into it), or any undo when the identifier is an email that finds nobody in these
    rows. Reads the decisions stream's undos only (a handful). (The record
    of an undone merge carries the undo's position, not the merge's: an undo of a merge
    recorded after ``at`` counts too, and replays for an answer the rows would give.)"""
    undos = [ev for _, ev in log.read_spans([(DECISIONS_STREAM, at + 1, until + 1)],
                                            {MergeUndone})]
    if not undos:
        return False
    # The person it finds then, or (an identifier first claimed later, in these rows) the
    # one it finds now: an undo that names neither side changes no answer about it.
    person = reader.person(identifier, at) or reader.person(identifier)
    if person is None:
        # Found by nobody in these rows, then or now. With the undone merge, an email may
        # have been (the merged person claimed it from an attribute, held or let it go while
        # the merge held), and so may a person id (a person an identify by such an email
        # minted): replayed. A user id is claimed by its identify whatever the merges, an
        # anonymous id by its session: nobody either way, and a user id nobody has (a typo)
        # costs no replay.
        kind = classify(identifier)
        return kind != "id" or _PERSON_ID.fullmatch(identifier) is not None
    members = set(family(reader, person).members) | {person.person_id}
    for ev in undos:
        assert isinstance(ev, MergeUndone)
        merge = reader.merge_row(ev.merge_id)
        if merge is None or merge.source in members or merge.target in members:
            return True
    return False


def replayed_profile(registry: Registry, log: EventLog, scratch: ProjectionStore,
                     identifier: str, at: int) -> Profile | None:
    """The profile ``identifier`` finds in rows replayed from the log up to ``at`` into
    ``scratch`` (an empty store), by projections built as ``registry``'s are."""
    fresh = Registry.from_specs(registry.specs())
    fresh.attach(log, until=at)
    replay(list(fresh), RunnerStates(), log, scratch, at)
    with scratch.snapshot() as rows:
        return Reader(rows, fresh.row_types).profile(identifier)


__all__ = ["replayed_profile", "undone_since"]
