"""Whether an unmerge's replay has landed: the rule every process keeping custom projections
applies before it honours a ``MergeUndone`` decision (the twin of
:mod:`idstitch.projections.custom_forgets`).

``ws.unmerge`` records its decision, then replays the identity projection from position 0, in
that order: the identity fold skips a merge a later ``MergeUndone`` names, but only a fold that
meets the merge after the decision is recorded knows it (folded past the decision, rows that
applied the merge keep it). A custom projection's Changes are read from those rows: a process
that folded a projection again from 0 between the decision and the replay would keep the
merge, unlike a rebuild. So a decision is honoured only once the replay has landed, whichever
process meets it; until then the projection stops right before it (see
:meth:`idstitch.projections.custom_runner.CustomRunner.catch_up`).

The replay has landed when the merge's record in the identity rows is no longer the merge:
the fold that skips an undone merge writes its record with kind ``unmerged`` (the only writer
of that kind), and no fold that applied the merge does. A record that is not there counts as
landed (the merge was never folded into these rows, or a forget purged both sides since).
Rows that a replay is rewriting (reset, then committed a batch at a time) are told apart by
the identity projection's committed position: below the decision, the rows are not ready to
be read for it. It is also the test the next open of a workspace uses to finish an unmerge
whose process stopped before its replay (``idstitch.service.erasure.finish_unmerges``).
"""

from __future__ import annotations

from idstitch.domain.events import DeviceEvent, MergeUndone
from idstitch.projections.base import Registry
from idstitch.projections.identity.rows import PERSON
from idstitch.projections.store import ProjectionStore
from idstitch.projections.views import Reader

UNDONE: frozenset[type[DeviceEvent]] = frozenset({MergeUndone})


def unreplayed(reader: Reader, decision: MergeUndone) -> bool:
    """Whether the identity rows ``reader`` reads still hold the merge ``decision`` undoes as
    a merge (see the module)."""
    merge = reader.merge_row(decision.merge_id)
    return merge is not None and merge.kind != "unmerged"


def replay_pending(store: ProjectionStore, registry: Registry, position: int,
                   decision: MergeUndone) -> bool:
    """Whether the unmerge ``decision`` (recorded at ``position``) has not been replayed into
    the identity rows yet, or they are being rewritten (see the module); one snapshot, a row
    and a tracking position read."""
    identity = registry.owner_of(PERSON).name
    with store.snapshot() as rows:
        if rows.positions([identity]).get(identity, 0) < position:
            return True
        return unreplayed(Reader(rows, registry.row_types), decision)
