"""How a custom projection moves past a person-level decision that rewrites history: a
forget (its purge hook, or its tables afresh) or an unmerge (its tables afresh), where the
decision stands in the log, whichever process folds it (see
:meth:`~idstitch.projections.custom_runner.CustomRunner.catch_up`)."""

from __future__ import annotations

from collections.abc import Sequence

from idstitch.domain.errors import ProjectionFailed
from idstitch.domain.events import DeviceEvent, PersonForgotten
from idstitch.projections.custom import CustomTables, Projection, Tracked, failed, moved
from idstitch.projections.custom_made import MadeAfter
from idstitch.projections.custom_others import OthersAtWork
from idstitch.projections.store import EventLog


class Honouring(OthersAtWork):
    """The decisions part of the :class:`~idstitch.projections.custom_runner.CustomRunner`."""

    tables: CustomTables
    _made: MadeAfter
    _log: EventLog

    def rebuild(self, names: Sequence[str]) -> None:
        """Drop the named projections' tables and create them afresh (the runner's)."""
        raise NotImplementedError

    def _tracked(self, name: str) -> Tracked | None:
        raise NotImplementedError

    def _honour(self, position: int, decision: DeviceEvent, names: Sequence[str]
                ) -> list[ProjectionFailed]:
        """Move each projection standing right before a forget or an unmerge past it: the
        forget's hook, or its tables afresh (see :meth:`catch_up`); the failures (never raised: a
        failure here, as a handler's, leaves the projection where it was, or folded again)."""
        failures: list[ProjectionFailed] = []
        for name in names:
            try:
                failure = self._honour_one(self.projections[name], position, decision)
            except Exception as e:  # the database, or another process's rebuild under way:
                # it stays where it is, retried next time
                failures += self._failures([name], position, e)
                continue
            if failure is not None:
                failures.append(failure)
        if names and isinstance(decision, PersonForgotten):
            self.tables.scrub()  # what the hooks deleted or the drops freed: out of the files
        return failures

    def _honour_one(self, projection: Projection, position: int, decision: DeviceEvent
                    ) -> ProjectionFailed | None:
        name = projection.name
        tracked = self._tracked(name)
        # Folded up to the decision, it stands at the last event before it: not always at
        # position - 1 (a PostgreSQL append rolled back after reserving positions left them).
        before = 0 if tracked is None else tracked.position
        if before >= position:
            return None  # moved past it already (another process)
        following = self._log.read(before, 1)
        if following and following[0].position < position:
            # Events between it and the decision are not folded: another process rebuilt it,
            # or folded it part of the way, after this one's fold. Moved past the decision,
            # it would skip them; it stops here, and the next catch-up folds them first.
            self._stopped.add(name)
            return None
        persons: frozenset[str] = frozenset()
        devices: frozenset[str] = frozenset()
        if isinstance(decision, PersonForgotten):
            persons, devices = frozenset(decision.members), frozenset(decision.devices)
        hook = type(projection).forget is not Projection.forget and bool(persons)
        if self._made.skips(name, tracked, position) or projection.events == frozenset():
            hook = False  # made after the decision: only the position moves
        elif not hook:
            self.rebuild([name])  # folded again from 0 by the next stretch
            return None
        raised: Exception | None = None
        found = before
        try:
            with self.tables.transaction(name, projection.version) as tx:
                # (Untracked when another process replaced or is rebuilding this version:
                # judged by the caller, as a fold's is, and nothing dropped.)
                found = tx.position
                if not moved(projection, found, before):
                    if hook:
                        try:
                            projection.forget(tx.db, persons, devices)
                        except Exception as e:
                            raised = e
                            raise
                    tx.advance(position)
        except Exception:
            if raised is None:
                raise
            self.rebuild([name])  # the hook failed: its values must go all the same
            return failed(name, position, raised)
        # Rebuilt elsewhere since the look above (found behind it): it stops here, and the
        # next catch-up starts from its new tables, as a fold that meets a rebuild does.
        # (Found ahead: folded past the decision elsewhere meanwhile.)
        self._restarted([name], before, found)
        return None
