"""The Workspace's room for its projections: catch-up, custom projections, how far behind
they are, waiting for a write to be read, rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from idstitch import bootstrap
from idstitch.adapters.eventlog import DeviceLog
from idstitch.projections.custom import Projection, ProjectionDB, check_projection
from idstitch.service import following
from idstitch.service.arguments import checked_methods
from idstitch.service.following import ProjectionStatus


@checked_methods
class ProjectionUpkeep:
    """How :class:`Workspace <idstitch.Workspace>` keeps its projections."""

    _services: bootstrap.Services
    log: DeviceLog

    @property
    def auto_catch_up(self) -> bool:
        """Whether commands and queries keep the projections current (read-your-writes)."""
        return self._services.settings.auto_catch_up

    @auto_catch_up.setter
    def auto_catch_up(self, value: bool) -> None:
        self._services.settings.auto_catch_up = value

    def catch_up(self) -> int:
        """Bring every projection up to the head of the log; the position reached.

        A custom projection whose handler raised (now or at an earlier catch-up, a write's
        say) raises :class:`~idstitch.errors.ProjectionFailed` here, after every other
        projection was caught up. A stored event that cannot be read raises
        :class:`~idstitch.errors.CorruptEvent` (the projections stop just before it)."""
        projector = self._services.projector
        # Eager: a projection that met no event of its own since its last commit has its
        # position committed at the head too, so lag() and `idstitch projections` say 0 (a
        # command's own catch-up leaves it, to spare a commit per write).
        reached = projector.catch_up(eager=True)
        projector.raise_unreadable()
        projector.raise_failures()
        return reached

    def run_projection(self, projection: type[Projection] | Projection) -> None:
        """Register a custom projection (a class or an instance), create its tables (once per
        version), catch it up; from then on it is kept current wherever the built-in ones are.
        Registered again after a reopen, it resumes from its tracked position."""
        self._services.projector.register(check_projection(projection))

    def wait_for(self, position: int | None, timeout: float | int | None = None) -> int:
        """Block until every projection (built-in, and every custom one the store tracks) has
        committed ``position``: read-your-writes across processes, with the position a write
        returned. The lowest position reached; None (a write that recorded nothing) returns
        at once; a position past the head of the log is an InvalidCommand.
        :class:`~idstitch.errors.ProjectionsBehind` after ``timeout`` seconds, saying how far
        behind they are. A workspace that keeps its projections itself catches up
        first."""
        return following.read_your_write(self._services.projector, self.log.head, position,
                                         timeout, catch_up=self.auto_catch_up)

    def projection_status(self) -> list[ProjectionStatus]:
        """Every projection the store tracks (built-in, then custom) with its version,
        committed position and lag (positions of the log after it). Never catches up: with
        ``projections="external"`` this is how far behind reads are."""
        return following.status(self._services.projector)

    def lag(self) -> int:
        """How many positions of the log the slowest projection has not folded yet (0: reads
        see every write). Never catches up."""
        return max([s.lag for s in self.projection_status()], default=0)

    @property
    def external(self) -> bool:
        """Whether another process keeps the projections (``projections="external"``)."""
        return self._services.settings.external

    def projection_db(self, name: str) -> ProjectionDB:
        """Read access to a custom projection's tables (its live version), caught up first
        when the workspace keeps projections current; ProjectionFailed if it cannot be."""
        return self._services.projector.reader(name, catch_up=self.auto_catch_up)

    def rebuild(
        self, names: Sequence[str] | None = None, progress: Callable[[int], None] | None = None,
        *, parallel: bool | None = None,
    ) -> int:
        """Replay the log from position 0 into fresh projections (same result as incremental).

        ``names``: the projections to rebuild (built-in, see :attr:`projections`, or custom);
        None for all. A custom projection is rebuilt in place (its tables dropped and set up
        again).
        ``progress`` is called with the number of log positions replayed since its last call.
        ``parallel``: replay all but the first projection in a second process; None (the
        default) does so for a long log on a SQLite file or PostgreSQL, False never. The
        result is the same either way.
        """
        return self._services.projector.rebuild(names, progress, parallel=parallel)
