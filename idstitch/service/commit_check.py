"""A commit's check of the projections, passed by the append (an
:class:`~idstitch.domain.ports.AppendCheck`): the rows were built as this process builds them,
and, for a single command on a store that can, its events' rows written inside the append."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, cast

from idstitch.domain.events import DeviceEvent
from idstitch.domain.ports import SUPPRESSION_MARK, AppendCheck, SuppressionMoved
from idstitch.projections.base import Registry
from idstitch.projections.store import LoggedEvent, ProjectionStore


class Landing(Protocol):
    """What a command's check asks of the projector (:class:`~idstitch.service.projecting.
    Projector`) to write its events' rows inside the append."""

    def land(self, recent: Sequence[LoggedEvent],
             tracked: Mapping[str, tuple[int, str | None]]) -> bool:
        """Fold the events and write every projection's rows in the open append."""
        ...

    def forget_folded(self) -> None:
        """Drop what was folded for an append that did not commit."""
        ...


class Suppressions(Protocol):
    """What an append's check asks of the suppressed identifiers as this process knows them
    (the cipher: :class:`~idstitch.adapters.suppressed_digests.Suppression`)."""

    mark: int

    def marked(self, mark: int) -> None:
        """Read the suppressed digests again now: another process raised the mark."""
        ...


class PolicyCheck:
    """A commit's check that every projection's committed rows were built as this process
    builds them (PolicyMismatch otherwise, before anything is appended): an
    :class:`~idstitch.domain.ports.AppendCheck`. A log that can read the tracking rows in its
    append's first round trip (PostgreSQL) does; else they are read in one statement. What
    was read is kept (:attr:`tracked`): the command hands it to the catch-up after its append
    (see :meth:`Projector.catch_up`). A command's check (``projector`` given) also has the
    rows of its events written inside the append's transaction where the log can
    (:meth:`landed`)."""

    def __init__(self, registry: Registry | None, rows: ProjectionStore,
                 projector: Landing | None = None) -> None:
        self._registry, self._rows, self._projector = registry, rows, projector
        self.names: Sequence[str] = [] if registry is None else registry.names
        self.inline = projector is not None
        self._suppressions: Suppressions | None = None
        self.tracked: dict[str, tuple[int, str | None]] | None = None
        """Every projection's committed (position, meta), once checked."""
        self.landed_at: int | None = None
        """The position up to which every projection's rows committed with the append."""

    def watching(self, suppressions: Suppressions) -> PolicyCheck:
        """Also read the forgets' mark (:data:`SUPPRESSION_MARK`) with the tracking rows: an
        append after another process's forget is refused (SuppressionMoved) until this one
        has read the suppressed identifiers again. That read comes under the log's write lock
        where the log can (both SQL stores' commands; SQLite always), so no command that
        names a forgotten identifier is appended once its forget's mark committed."""
        self._suppressions = suppressions
        self.names = [*self.names, SUPPRESSION_MARK]
        return self

    def found(self, tracked: Mapping[str, tuple[int, str | None]]) -> None:
        """Check what the append read; PolicyMismatch or SuppressionMoved refuses it."""
        suppressions = self._suppressions
        if suppressions is not None:
            mark = tracked[SUPPRESSION_MARK][0]
            if mark > suppressions.mark:
                suppressions.marked(mark)
                raise SuppressionMoved
        if self._registry is not None:
            for projection in self._registry:
                projection.check_meta(tracked[projection.name][1])
        self.tracked = dict(tracked)

    def run(self) -> None:
        """Read every projection's tracking row in one statement, and check it."""
        self.found(self._rows.tracked_many(self.names))

    def landed(self, appended: Sequence[tuple[int, DeviceEvent]]) -> bool:
        """Fold the command's events into every projection's rows, written in the append's
        transaction (see :meth:`Projector.land`); whether they were."""
        if self._projector is None or self.tracked is None or not appended:
            return False
        recent = cast(Sequence[LoggedEvent], appended)
        done = self._projector.land(recent, self.tracked)
        if done:
            self.landed_at = recent[-1].position
        return done

    def abandoned(self) -> None:
        """The append did not commit: the rows folded for it are forgotten."""
        self.landed_at = None
        if self._projector is not None:
            self._projector.forget_folded()


def watching(suppressions: Suppressions, rows: ProjectionStore
             ) -> Callable[[AppendCheck | None], AppendCheck | None]:
    """The writer's :attr:`~idstitch.service.writer.Writer.watched` where identifiers can be
    forgotten: every commit's check reads the forgets' mark (a commit without one, where the
    workspace keeps no projections, gets one that reads only that)."""

    def watched(check: AppendCheck | None) -> AppendCheck:
        # Every commit's check is a PolicyCheck (Projector.check builds them).
        own = PolicyCheck(None, rows) if check is None else cast(PolicyCheck, check)
        return own.watching(suppressions)

    return watched


class NotLanded(Exception):
    """A projection could not fold a command's events inside its append: every row written
    there is undone (the append's savepoint), and the catch-up after the append folds them."""
