"""How custom projections follow the log: in order, a batch a transaction, exactly once.

Each registered version folds the Changes after its tracked position, a batch at a time; a
batch's rows and its new tracking position commit in one transaction of the workspace's
database (:class:`~idstitch.projections.custom.CustomTables`). A handler that raises rolls the
batch back with its tracking; the projection stays at its last committed position and is
reported as :class:`~idstitch.domain.errors.ProjectionFailed` (the cause chained); the other
projections go on. Projections at the same position share one
:class:`~idstitch.projections.changes.ChangeStream` (the Changes of a batch are built once).

A new version of a projection is built from position 0 beside the live one, which readers
keep seeing, and swapped in (the old tables dropped) in one transaction once it has caught up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from idstitch.domain.errors import ProjectionFailed
from idstitch.domain.events import DECISIONS_STREAM
from idstitch.projections import custom_batches
from idstitch.projections.audit import EVENT_NAMES
from idstitch.projections.base import Registry
from idstitch.projections.changes import ChangeStream
from idstitch.projections.custom import (
    CustomTables,
    Projection,
    ProjectionDB,
    Tracked,
    failed,
    wanted_by,
)
from idstitch.projections.custom_batches import Batches
from idstitch.projections.custom_forgets import REWRITING, Wait, made_at, rewrite_pending
from idstitch.projections.custom_honour import Honouring
from idstitch.projections.custom_made import MadeAfter
from idstitch.projections.custom_others import OthersAtWork
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore
from idstitch.projections.unit import RowTypes


class CustomRunner(Honouring, Batches):
    """Registers, catches up and rebuilds the custom projections of one workspace."""

    def __init__(self, log: EventLog, store: ProjectionStore, tables: CustomTables,
                 registry: Registry) -> None:
        self._log, self._store, self.tables = log, store, tables
        self.registry = registry
        self._row_types: RowTypes = registry.row_types
        self._streams: dict[int, ChangeStream] = {}
        self._chunks: dict[str, int] = {}
        """Per projection, the positions a chunk reads where a batch has a time budget (see
        :func:`~idstitch.projections.custom_batches.chunk_after`)."""
        self.pages: Callable[[int, int], Sequence[LoggedEvent]] = log.read
        """How the Changes' events are read, in order (a read-ahead in a second process while
        a long catch-up runs: ``idstitch.service.read_ahead``)."""
        self._made = MadeAfter(log)
        """Which decisions each projection's tables were made after, as this process can
        vouch."""
        self.progress: Callable[[int], None] | None = None
        """Called with the positions the projections being folded have all passed since its
        last call (a rebuild's progress bar; see :meth:`reporting`)."""
        self._reported = 0
        self.waiting: dict[str, Wait] = {}
        """Projections the last catch-up left right before a forget not purged yet or an
        unmerge not replayed yet: where, and which (see :meth:`catch_up`)."""
        OthersAtWork.__init__(self)

    @property
    def projections(self) -> dict[str, Projection]:
        """The registered custom projections, by name (the registry's)."""
        return self.registry.custom

    def register(self, projection: Projection) -> None:
        """Track the projection (resuming the version tracked), create its tables once per
        version; an unfinished build of another version is dropped. Registering a name again
        replaces the instance (a new version is then built beside the live one)."""
        name = projection.name
        # Kept here from now on: a forget in another process leaves its tables to this one's
        # next catch-up (see idstitch.service.unkept).
        self.tables.keep(name)
        versions = self.tables.versions(name)
        for tracked in versions:
            if not tracked.live and tracked.version != projection.version:
                self.tables.drop(name, tracked.version)
        live = any(t.live for t in versions)
        if not any(t.version == projection.version for t in versions):
            # Fresh tables skip the forgets up to the head: they must read with no key a forget
            # elsewhere destroyed and this process still caches.
            self._log.drop_keys()
            # (Made after the forgets up to the head whose purge has landed: custom_forgets.)
            head = made_at(self._log, self._store, self._row_types, self._log.head())
            self.tables.create(name, projection.version, not live, projection.setup, head)
        self.registry.add_custom(projection)
        self._adopt([name])

    def rebuild(self, names: Sequence[str]) -> None:
        """Drop the named projections' tables and tracking and create them afresh (the next
        catch-up folds them from position 0)."""
        # Folded again from 0 after a forget, maybe another process's: no key cached here
        # may unseal what it erased.
        self._log.drop_keys()
        for name in names:
            projection = self.projections[name]
            made = made_at(self._log, self._store, self._row_types, self._log.head())
            self.tables.create(name, projection.version, True, projection.setup, made,
                               replace=True)
        self._adopt(names)

    @contextmanager
    def reporting(self, progress: Callable[[int], None] | None) -> Iterator[None]:
        """While the block runs, ``progress`` is called as the folds advance (from position
        0: a rebuild)."""
        self.progress, self._reported = progress, 0
        try:
            yield
        finally:
            self.progress = None

    def report(self, position: int) -> None:
        """Tell :attr:`progress` that every projection being folded has passed ``position``."""
        if self.progress is not None and position > self._reported:
            self.progress(position - self._reported)
            self._reported = position

    def _adopt(self, names: Sequence[str]) -> dict[str, Tracked | None]:
        """The named projections' tracking, their ``made_at`` adopted (see
        :mod:`~idstitch.projections.custom_made`)."""
        tracked = {name: self._tracked(name) for name in names}
        if self._made.adopt(tracked):
            self._streams.clear()  # the person states they hold were read with the old keys
        return tracked

    def _tracked(self, name: str) -> Tracked | None:
        """The registered version's tracking (None: not tracked)."""
        version = self.projections[name].version
        return next((t for t in self.tables.versions(name) if t.version == version), None)

    def position(self, name: str) -> int:
        """The registered version's committed position."""
        tracked = self._tracked(name)
        return 0 if tracked is None else tracked.position

    def catch_up(self, until: int, names: Sequence[str] | None = None) -> list[ProjectionFailed]:
        """Fold every registered projection (or the named ones) up to position ``until`` (the
        built-in rows must be there already); the failures, one per failed projection.

        A forget on the way (a ``PersonForgotten`` decision) is honoured where it stands in the
        log, by whichever process folds the projection: the projection's purge hook is called
        with the forgotten persons and devices the decision names, in the transaction that
        moves it past the decision; a projection without one (or whose hook raised, or a
        decision that names none) is dropped and folded again from position 0, where the
        person's events read erased. An unmerge on the way (``MergeUndone``) rewrites the
        history of both sides from the merge on: a projection that folded them before it is
        folded again from position 0. Either decision asks nothing of tables made after it (a
        ``ws.unmerge`` rebuilds the projections its process keeps itself), as their tracking
        says, for any process keeping them and across a restart (see
        :mod:`~idstitch.projections.custom_made`). A forget whose process has not purged the
        identity rows yet, or an unmerge whose process has not replayed them, is honoured by
        none: they stop right before it, and a catch-up after the purge or the replay honours
        it (see :mod:`~idstitch.projections.custom_forgets`, ``custom_unmerges``)."""
        chosen = list(names) if names is not None else list(self.projections)
        failures: list[ProjectionFailed] = []
        for name in chosen:
            self.waiting.pop(name, None)
        self._stopped.clear()
        try:
            for name in chosen:
                self.tables.keep(name)  # again, after a lost hold (a cheap look when held)
            tracked = self._adopt(chosen)
            if gone := [n for n, t in tracked.items() if t is None and not self.tables.versions(n)]:
                # Every version dropped: by a forget in a process that did not keep them
                # (idstitch.service.unkept). Built afresh, as a rebuild.
                self.rebuild(gone)
                tracked = self._adopt(chosen)
            lowest = min((0 if t is None else t.position for t in tracked.values()),
                         default=until)
            decisions = ([] if lowest >= until else self._log.read_spans(
                [(DECISIONS_STREAM, lowest + 1, until + 1)], REWRITING))
        except Exception as e:  # the database: every one of them stays where it is
            return [failed(n, 0, e) for n in chosen]
        for position, decision in decisions:
            failures += self._fold_to(position - 1, chosen)
            # One stopped short of the decision must not be moved past it: the events
            # between would be skipped.
            chosen = [n for n in chosen
                      if n not in {f.projection for f in failures} and n not in self._stopped]
            try:
                wait = rewrite_pending(self._log, self._store, self.registry, position, decision)
                if wait is not None:
                    self.waiting.update({n: wait for n in chosen if self.position(n) < position})
                    chosen = [n for n in chosen if n not in self.waiting]
                    continue  # they wait right before it, with no error
            except Exception as e:  # the database: they stay where they are
                return failures + [failed(n, position, e) for n in chosen]
            failures += self._honour(position, decision, chosen)
            chosen = [n for n in chosen
                      if n not in {f.projection for f in failures} and n not in self._stopped]
        return failures + self._fold_to(until, chosen)

    def _fold_to(self, until: int, names: Sequence[str]) -> list[ProjectionFailed]:
        """Fold the named projections up to ``until`` (no forget in between); the failures."""
        chosen = [self.projections[n] for n in names]
        try:
            at: dict[str, int] = {p.name: self.position(p.name) for p in chosen}
        except Exception as e:  # the database: every one of them stays where it is
            return [failed(p.name, 0, e) for p in chosen]
        failures: list[ProjectionFailed] = []
        pending = [p for p in chosen if at[p.name] < until]
        for projection in [p for p in pending if p.events == frozenset()]:
            # Wants no event: nothing to read or fold, only the position to move (one
            # transaction), so that a registered projection like it costs the others nothing.
            start = at[projection.name]
            at[projection.name], failure = self._commit(projection, start, until, [])
            if failure is not None:
                failures.append(failure)
            self._restarted([projection.name], start, at[projection.name])
        pending = [p for p in pending if at[p.name] < until and p.events != frozenset()]
        while pending:
            self.report(min(at.values()))
            start = min(at[p.name] for p in pending)
            group = [p for p in pending if at[p.name] == start]
            if len(group) == 1:
                [projection] = group
                reached, failure = self._fold_alone(projection, start, until)
                at[projection.name] = reached
                if failure is not None:
                    failures.append(failure)
                elif reached > start:
                    self._moved_on(projection.name)
                if reached <= start or failure is not None:
                    # Nothing more up to `until`, failed, or rebuilt by another process.
                    pending.remove(projection)
                    self._restarted([projection.name], start, reached)
                else:
                    pending = [p for p in pending if at[p.name] < until]
                continue
            try:
                events = [e for e in self.pages(start, custom_batches.BATCH) if e.position <= until]
                if not events:
                    break
                end = events[-1].position
                wanted = wanted_by(group)
                if wanted is None or any(EVENT_NAMES[type(e.event)] in wanted for e in events):
                    changes = self._changes(start, events, wanted, until)
                else:
                    # None of the group wants any of these: no Changes to build. The stream at
                    # `start` would miss them; it is dropped (a later one starts cold).
                    self._streams.pop(start, None)
                    changes = []
            except Exception as e:
                # Reading the log or building the Changes failed: not the handlers' fault, but
                # they cannot go on from here either. Rows another process is rewriting stop
                # them with no error for a while; anything else is reported like a handler's
                # failure. Retried next time.
                self._streams.pop(start, None)
                failures += self._failures([p.name for p in group], start + 1, e)
                pending = [p for p in pending if p not in group]
                continue
            stopped: list[str] = []  # by another process's work (see _passing)
            for projection in group:
                reached, failure = self._commit(projection, start, end, changes)
                at[projection.name] = reached
                if failure is not None:
                    failures.append(failure)
                elif reached > start:
                    self._moved_on(projection.name)
                else:
                    stopped.append(projection.name)
                    self._restarted([projection.name], start, reached)
            gone = {f.projection for f in failures} | set(stopped)
            pending = [p for p in pending if at[p.name] < until and p.name not in gone]
        self.report(min(at.values(), default=0))
        for projection in chosen:
            if at[projection.name] >= until:
                try:
                    self._swap_if_built(projection)
                except Exception as e:
                    failures.append(failed(projection.name, at[projection.name], e))
        return failures

    def _swap_if_built(self, projection: Projection) -> None:
        """A version built beside the live one and caught up replaces it."""
        versions = self.tables.versions(projection.name)
        mine = next((t for t in versions if t.version == projection.version), None)
        if mine is not None and not mine.live:
            self.tables.swap(projection.name, projection.version)

    def reader(self, name: str) -> ProjectionDB:
        """Read access to the live version's tables."""
        return self.tables.reader(name)

