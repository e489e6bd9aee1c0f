"""Which decisions a custom projection's tables were made after, across processes.

A forget (``PersonForgotten``) or an unmerge (``MergeUndone``) changes what earlier Changes
were: a projection that folded past the person before the decision is purged, or folded again
from 0, when it meets the decision (see :class:`~idstitch.projections.custom_runner.CustomRunner`).
Tables made after the decision need neither: a forget destroyed the person's keys before its
decision was recorded, so a fold that began after it reads the person's events erased, and an
unmerge's rows were rebuilt by then. The tracking keeps the head of the log when a version's
tables were made (:attr:`~idstitch.projections.custom.Tracked.made_at`), so that a restart in
the middle of a catch-up, or another process keeping the same projection, does not fold it
again from 0 at such a decision.

What makes it safe for another process: a process may have cached a person's key before a
forget elsewhere destroyed it, and would read the person back in with it. So a process trusts
a ``made_at`` only after it has *adopted* it: read it, then dropped every key it holds (the
keys it fetches afterwards were fetched after the forgets up to ``made_at`` destroyed theirs).
A fold by a process that has not adopted the tables' ``made_at`` forgets it, in the fold's own
transaction: whoever meets such a decision later folds the projection again, as without it.
"""

from __future__ import annotations

from collections.abc import Mapping

from idstitch.projections.custom import CustomTransaction, Tracked
from idstitch.projections.store import EventLog


class MadeAfter:
    """One process's adopted ``made_at`` of each custom projection (see the module)."""

    def __init__(self, log: EventLog) -> None:
        """Drop ``log``'s keys when adopting."""
        self._log = log
        self._adopted: dict[str, int] = {}

    def adopt(self, tracked: Mapping[str, Tracked | None]) -> bool:
        """Adopt the ``made_at`` of these projections' tracking (by name; None: not tracked),
        dropping the keys first if any is new here; whether it did (then whatever the caller
        read with the old keys must go too)."""
        found = {name: t.made_at for name, t in tracked.items()
                 if t is not None and t.made_at is not None
                 and self._adopted.get(name) != t.made_at}
        if not found:
            return False
        self._log.drop_keys()
        self._adopted.update(found)
        return True

    def vouch(self, name: str, tx: CustomTransaction) -> None:
        """Before a fold in ``tx``: the tables' ``made_at`` goes with it unless adopted here."""
        if tx.made_at is not None and self._adopted.get(name) != tx.made_at:
            tx.unmark()

    def skips(self, name: str, tracked: Tracked | None, position: int) -> bool:
        """Whether the projection's tables were made after the decision at ``position``, as
        this process can vouch (it adopted their ``made_at``)."""
        made = None if tracked is None else tracked.made_at
        return made is not None and made >= position and self._adopted.get(name) == made
