"""Another process's work met by a custom projection's catch-up: identity rows it is rewriting
(an unmerge's replay, a forget's purge: :class:`~idstitch.projections.changes.RowsBehind`), or
the projection's own tracking while it rebuilds it
(:class:`~idstitch.projections.custom.Untracked`). Not a failure: the projection stops where
it is for the rest of the catch-up, and the next one goes on. Met without a pause for longer
than :data:`BEHIND_GRACE`, it is reported (the rows or the tracking may be damaged)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from idstitch.domain.errors import ProjectionFailed
from idstitch.projections.changes import RowsBehind
from idstitch.projections.custom import CustomTables, Projection, Tracked, Untracked, failed

BEHIND_GRACE = 30.0
"""Seconds a projection may keep meeting another process's work and stay where it is without
an error; longer, without a pause as long, and it is reported as failed."""


class OthersAtWork:
    """The part of the :class:`~idstitch.projections.custom_runner.CustomRunner` that tells
    another process's work under way from a failure."""

    tables: CustomTables

    def __init__(self) -> None:
        self._behind: dict[str, tuple[float, float]] = {}
        """Per projection, when (monotonic) it first and last met another process's work
        without a pause of BEHIND_GRACE in between (see :meth:`_failures`)."""
        self._stopped: set[str] = set()
        """Projections the catch-up under way stopped, with no error, at another process's
        work: not folded further, nor moved past a decision, until the next catch-up."""

    @property
    def projections(self) -> dict[str, Projection]:
        """The registered projections, by name (the runner's)."""
        raise NotImplementedError

    def _adopt(self, names: Sequence[str]) -> dict[str, Tracked | None]:
        """Adopt the named projections' ``made_at`` (the runner's)."""
        raise NotImplementedError

    def _moved_on(self, name: str) -> None:
        """The projection moved forward here: an episode of others' work is over."""
        self._behind.pop(name, None)

    def _failures(self, names: Sequence[str], position: int, cause: Exception
                  ) -> list[ProjectionFailed]:
        """The failures of these projections, stopped at ``position`` by ``cause`` (building
        their Changes, committing a batch, honouring a decision): none for another process's
        work under way (:meth:`_passing`) until it has been met for :data:`BEHIND_GRACE`
        seconds with no pause as long (an unmerge's replay, a forget's purge or a rebuild
        ends well before; what stays is damage). Those are stopped for this catch-up."""
        now = time.monotonic()
        out: list[ProjectionFailed] = []
        for name in names:
            passing = self._passing(name, cause)
            if passing is not True:
                out.append(failed(name, position, passing or cause))
                continue
            first, last = self._behind.get(name, (now, now))
            if now - last >= BEHIND_GRACE:
                first = now  # met again after a pause: another episode, timed afresh
            self._behind[name] = (first, now)
            if now - first >= BEHIND_GRACE:
                out.append(failed(name, position, cause))
            else:
                self._stopped.add(name)
        return out

    def _passing(self, name: str, cause: Exception) -> bool | Untracked:
        """Whether ``cause`` is another process's work under way: identity rows it is
        rewriting, or this version's tracking while it rebuilds it. Not when another version
        was swapped in instead: then the cause to report, naming it (a process still on this
        one is told so)."""
        if isinstance(cause, RowsBehind):
            return True
        if not isinstance(cause, Untracked):
            return False
        try:
            versions = self.tables.versions(name)
        except Exception:  # the database: not known to pass
            return False
        mine = self.projections[name].version
        others = sorted((t.version, t.live) for t in versions if t.version != mine)
        if not others:
            return True
        # Which one replaced it is not known here (one swapped in, or one whose registration
        # dropped this unfinished build): what is tracked now is.
        now = ", ".join(f"version {v} ({'live' if live else 'being built'})"
                        for v, live in others)
        return Untracked(
            f"version {mine} of {name!r} is no longer tracked: another process replaced it "
            f"(tracked now: {now}); register the version to keep here too (registering "
            f"version {mine} again builds it afresh and swaps it back in)")

    def _restarted(self, names: Sequence[str], start: int, reached: int) -> None:
        """Projections another process rebuilt under this fold (it found them behind
        ``start``): they stop here, and their tables' ``made_at`` is adopted now, so that the
        next catch-up folds them from where they are with no key cached before (the rebuild
        may follow a forget) and honours what their new tables were not made after."""
        if reached < start and names:
            self._stopped.update(names)
            self._adopt(names)


__all__ = ["BEHIND_GRACE", "OthersAtWork"]
