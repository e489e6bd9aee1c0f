"""Keeping the registered projections current: catch-up, rebuild, and the bulk jobs' GC pause.

Whatever projections the registry holds, this is where they are caught up after a command or
before a query (read-your-writes in the embedded default), and rebuilt from position 0. A
rebuild of a long log replays all but the first projection in a second process (the child,
:mod:`idstitch.service.background`), each process reading only its own projections' events.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import msgspec

from idstitch.domain.errors import CorruptEvent, CorruptRow, InvalidCommand, ProjectionFailed
from idstitch.projections import runner
from idstitch.projections.base import ProjectionSpec, Registry, RowProjection
from idstitch.projections.custom import Projection, ProjectionDB, check_replacing, topic_of
from idstitch.projections.custom_runner import CustomRunner
from idstitch.projections.identity import Policy
from idstitch.projections.identity.rows import PERSON
from idstitch.projections.replay import replay
from idstitch.projections.runner import RunnerStates, catch_up, leases_of
from idstitch.projections.runner_state import holds_head
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore
from idstitch.service import background
from idstitch.service.child_projections import importable
from idstitch.service.commit_check import NotLanded, PolicyCheck
from idstitch.service.gc_pause import bulk_gc
from idstitch.service.read_ahead import reading_ahead

PARALLEL_REBUILD_EVENTS = 20_000
"""A rebuild of a log at least this long replays all but the first projection in a second
process (on a SQLite file or PostgreSQL): under it, starting the process costs more than it
saves."""


@contextmanager
def leased(rows: ProjectionStore, names: Sequence[str]) -> Iterator[None]:
    """Hold the leases of the named projections (where the store has leases) while the block
    runs: other processes' catch-ups of them then wait for what the block commits instead of
    folding alongside it (see :mod:`idstitch.projections.runner`).

    A lease another process holds (its catch-up, folding a few events) is waited for, up to
    the runner's STALL_SECONDS; a holder that keeps it longer is taken for stuck and the block
    runs without that lease, as a catch-up would: the optimistic commits keep the rows right,
    only some folding may be done twice."""
    leases = leases_of(rows)
    taken: list[str] = []
    try:
        if leases is not None:
            for name in names:
                since, pause = time.monotonic(), 0.001
                while not leases.try_lease(name):
                    if time.monotonic() - since > runner.STALL_SECONDS:
                        break
                    time.sleep(pause)
                    pause = min(pause * 2, runner.WAIT_PAUSE_MAX)
                else:
                    taken.append(name)
        yield
    finally:
        if leases is not None:
            for name in reversed(taken):
                leases.release_lease(name)


class Projector:
    """Catches up and rebuilds every projection of a registry, over one log and row store."""

    def __init__(
        self, log: EventLog, rows: ProjectionStore, registry: Registry, *,
        shared_url: str | None, lock: threading.RLock, custom: CustomRunner,
    ) -> None:
        self.log = log
        self.custom = custom
        """The custom projections (users' own), kept current after the built-in ones."""
        self.failures: dict[str, ProjectionFailed] = {}
        """Custom projections whose last catch-up failed, and how (raised by
        :meth:`raise_failures`, i.e. by ``ws.catch_up`` and ``ws.projection_db``)."""
        self.unreadable: dict[str, CorruptEvent] = {}
        """Projections stopped before an event that cannot be read, and that event."""
        self.rows = rows
        self.registry = registry
        self.states = RunnerStates()
        """The runner's state of each projection (its cached rows), kept between catch-ups."""
        self.shared_url = shared_url
        """A URL another process can open this store with (None for ``memory:``)."""
        self.lock = lock
        self.custom_held = False
        """While set, catch-ups leave the custom projections where they are: a forget records
        its decision before it purges the identity rows, and the custom projections must
        honour the decision with the purged rows (see ``idstitch.service.erasure``)."""

    @property
    def can_fork(self) -> bool:
        """Whether a second process can project this store."""
        return self.shared_url is not None and background.available()

    def helper(self, *, replay: list[str] | None = None, until: int = 0
               ) -> background.BackgroundProjector:
        """Start a child that runs exactly this registry's projections on this store, and,
        while it follows an ingest, the custom projections it can import (a custom projection
        it cannot is named in a warning and folded here)."""
        assert self.shared_url is not None  # callers check can_fork
        specs = self.registry.specs()
        if replay is None:
            specs += [ProjectionSpec(topic_of(p), msgspec.Raw(b"null"), custom=True)
                      for p in self.custom.projections.values() if importable(p)]
        return background.BackgroundProjector(self.shared_url, specs, replay=replay,
                                               until=until)

    def check(self, *, inline: bool = False) -> PolicyCheck:
        """The check a commit's append passes first (see :class:`PolicyCheck`); ``inline``: a
        single command's, which has its events' rows written in the append where it can."""
        return PolicyCheck(self.registry, self.rows, self if inline else None)

    def land(self, recent: Sequence[LoggedEvent],
             tracked: Mapping[str, tuple[int, str | None]]) -> bool:
        """Fold a command's own events into every projection and write their rows inside the
        append's open transaction (SQLite: one durable commit for the events and the rows,
        where the catch-up after the append was a second transaction of its own): whether
        every projection did. A projection that cannot (the events do not follow its rows
        directly: another process appended or committed since the check; too many events)
        lands nothing and keeps every cache (checked before any folds); one that fails later
        (its compare-and-set finds another commit) raises NotLanded after forgetting what the
        others folded, so that the append's savepoint undoes their rows too: all of them land,
        or none. Never waits: another thread catching up (holding this projector's lock) makes
        it give way at once."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            first, last = recent[0].position, recent[-1].position
            if len(recent) > runner.OWN_EVENTS or not all(
                    runner.follows(self.states.of(p), tracked.get(p.name), first)
                    for p in self.registry):
                # Another process appended or committed since (two writers on one file): the
                # catch-up after the append folds from there, every cache kept.
                return False
            for projection in self.registry:
                reached = runner.fold_landed(projection, self.states.of(projection), self.log,
                                             self.rows, recent, tracked.get(projection.name))
                if reached is None or reached < last:
                    raise NotLanded(projection.name)
            return True
        except BaseException:
            self.forget_folded()
            raise
        finally:
            self.lock.release()

    def forget_folded(self) -> None:
        """Drop every projection's cached rows (what was folded for an append that did not
        commit, or whose rows were undone)."""
        for projection in self.registry:
            self.states.of(projection).forget()

    def landed(self, position: int) -> None:
        """After a command whose rows landed with its events up to ``position``: the custom
        projections, which never fold inside an append (a user's handler)."""
        if self.custom.projections and not self.custom_held:
            self.catch_up_custom(position)

    def catch_up(self, recent: Sequence[LoggedEvent] = (), *, wait: bool = True,
                 eager: bool = False,
                 tracked: Mapping[str, tuple[int, str | None]] | None = None) -> int:
        """Bring every projection up to the head of the log; the position reached.

        ``recent``: events this process just appended (applied without reading them back).
        A projection another process is folding (it holds its lease) is left to it: this
        waits until that process has committed the position needed, or, with ``wait=False``,
        leaves it where it is (see :mod:`idstitch.projections.runner`). ``eager``: commit every
        projection's position even where it met no event of its own (a projecting process).
        ``tracked``: the committed (position, meta) of the projections as :meth:`check` read
        them before ``recent`` was appended, instead of a read each (a stale one is safe: a
        commit happens only if the store still holds what the fold began from)."""
        with self.lock:
            # Every projection up to one head, read once: a query needs the log as it stood
            # when it was asked (read-your-writes), and a projecting process must not let the
            # first projection, chasing a growing log, hold the others back. (Each projection
            # reading the head itself cost a round trip each on PostgreSQL.)
            # Every projection's tracking row in one statement too, read after the head (or
            # with it, where one statement can read both): what each would have read for
            # itself (one round trip instead of one a projection).
            head: int | None = None
            known: Mapping[str, tuple[int, str | None]] = tracked or {}
            if not recent:
                both = self.rows.tracked_at_head(self.registry.names)
                if both is None:
                    head = self.log.head()
                    known = self.rows.tracked_many(self.registry.names)
                else:
                    head, known = both
            positions = [self._caught_up(p, recent, wait, eager, head, known.get(p.name))
                         for p in self.registry]
            reached = min(positions) if positions else (
                self.log.head() if head is None else head)
            if self.custom.projections and not self.custom_held:
                self.catch_up_custom(reached)
            return reached

    def _caught_up(self, projection: RowProjection, recent: Sequence[LoggedEvent],
                   wait: bool, eager: bool = False, head: int | None = None,
                   tracked: tuple[int, str | None] | None = None) -> int:
        """One projection caught up; the position it reached.

        Damaged rows (CorruptRow) are derived data: the projection is rebuilt, once. A
        damaged event (CorruptEvent) stops it just before the event and is kept in
        :attr:`unreadable` (raised by ``ws.catch_up`` and ``ws.rebuild``), so that writes to
        other devices and queries of other persons go on with what the rows hold."""
        try:
            try:
                reached = catch_up(projection, self.states.of(projection), self.log, self.rows,
                                   recent=recent, wait=wait, eager=eager, head=head,
                                   tracked=tracked)
            except CorruptRow as e:
                self.repair(e)
                reached = catch_up(projection, self.states.of(projection), self.log, self.rows,
                                   wait=wait, eager=eager, head=head)
        except CorruptEvent as e:
            self.unreadable[projection.name] = e
            committed = self.states.of(projection).committed = self.rows.position(projection.name)
            return committed
        self.unreadable.pop(projection.name, None)
        return reached

    def repair(self, error: CorruptRow) -> None:
        """Rebuild the projections owning the type of a damaged row (all of them if unknown);
        re-raise ``error`` if that leaves nothing to rebuild."""
        owners = [p.name for p in self.registry
                  if error.row_class is None or error.row_class in p.row_types.values()]
        if not owners:
            raise error
        warnings.warn(f"{error}: rebuilding {', '.join(owners)}", RuntimeWarning, stacklevel=2)
        with self.lock:
            self.rows.reset(owners, [k for p in self.registry.select(owners) for k in p.kinds])
            for name in owners:
                self.states.forget(name)

    def raise_unreadable(self) -> None:
        """Raise the CorruptEvent a projection stopped at, if any."""
        for error in list(self.unreadable.values()):
            raise error

    def catch_up_custom(self, until: int, names: Sequence[str] | None = None) -> None:
        """Fold the custom projections (or the named ones) up to ``until``, where the built-in
        rows are: a failure is kept in :attr:`failures` (never raised here, so that no write
        and no built-in projection waits on a user's handler).

        The collector is paused meanwhile, as for an ingest, whose catch-ups fold the same
        handlers (:func:`bulk_gc`): a catch-up from 0 builds a Change (and its event) for every
        position and keeps every person's state, and the collector's passes over them were a
        tenth of it. Nothing on this path makes reference cycles (checked: a collection after
        catching projections up over 148,000 events finds none)."""
        with self.lock, bulk_gc(promote=False):  # every query's catch-up comes here
            chosen = list(names) if names is not None else list(self.custom.projections)
            with reading_ahead(self.custom, self.log, self.shared_url if self.can_fork else None,
                               until, chosen):
                failed = {f.projection: f for f in self.custom.catch_up(until, chosen)}
            for name in chosen:
                if name in failed:
                    self.failures[name] = failed[name]
                else:
                    self.failures.pop(name, None)

    def raise_failures(self, names: Sequence[str] | None = None) -> None:
        """Raise the first kept failure (of the named projections, or of any)."""
        for name, failure in list(self.failures.items()):
            if names is None or name in names:
                raise failure from failure.cause

    def register(self, projection: Projection, *, catch_up: bool = True) -> None:
        """Register a custom projection and catch it up (unless ``catch_up`` is False: a
        follower catches up itself, and stops cleanly in between); ProjectionFailed if it
        fails."""
        if projection.name in self.registry:
            raise InvalidCommand("name", f"{projection.name!r} is the name of a built-in "
                                         "projection")
        check_replacing(self.custom.projections.get(projection.name), projection)
        with self.lock:
            self.custom.register(projection)
            if catch_up:
                self.catch_up()
                self.raise_failures([projection.name])

    def policy(self) -> Policy:
        """How the projection that owns the person rows stitches (the registry is the one list
        of projections; no name is assumed here)."""
        policy = getattr(self.registry.owner_of(PERSON).config(), "policy", "merge")
        return "switch" if policy == "switch" else "merge"

    def replay_persons(self) -> None:
        """After an unmerge: replay the projection that keeps the persons (the registry says
        which; no name is assumed) and the custom projections, which fold its Changes."""
        self.rebuild([self.registry.owner_of(PERSON).name, *self.custom.projections])

    def reader(self, name: str, *, catch_up: bool) -> ProjectionDB:
        """Read access to a custom projection's live tables, caught up first (``catch_up``);
        InvalidCommand for a name that is not registered, ProjectionFailed if it fails."""
        if name not in self.custom.projections:
            raise InvalidCommand("name", f"no custom projection {name!r} is registered "
                                         f"(registered: {sorted(self.custom.projections)})")
        if catch_up:
            self.catch_up()
            self.raise_failures([name])
        return self.custom.reader(name)

    def reached(self, head: int, tracked: Mapping[str, tuple[int, str | None]]) -> bool:
        """Whether the rows committed at ``tracked`` hold the log up to ``head`` for every
        projection (see :func:`~idstitch.projections.runner_state.holds_head`)."""
        return all(holds_head(self.states.of(p), head, tracked[p.name]) for p in self.registry)

    def committed(self, name: str) -> int:
        """The committed position the last catch-up in this process left the projection at: a
        snapshot of the rows behind it was taken after a reset (see Queries)."""
        return self.states.of(self.registry[name]).committed

    def position(self) -> int:
        """The committed position every built-in projection has reached (the lowest)."""
        return min([self.rows.position(p.name) for p in self.registry],
                   default=self.log.head())

    def rebuild(
        self, names: Sequence[str] | None = None, progress: Callable[[int], None] | None = None,
        *, parallel: bool | None = None,
    ) -> int:
        """Replay the log from position 0 into fresh projections (see Workspace.rebuild)."""
        custom = [n for n in (names if names is not None else self.custom.projections)
                  if n in self.custom.projections]
        try:
            chosen = self.registry.select(
                None if names is None else [n for n in names if n not in custom])
        except KeyError as e:
            raise InvalidCommand("names", f"unknown projections {e.args[0]}, expected some of "
                                          f"{sorted([*self.registry.names, *self.custom.projections])}"
                                 ) from None
        if names is not None and not chosen:
            with self.lock, self.custom.reporting(progress):
                self.custom.rebuild(custom)
                reached = self.catch_up()
                self.raise_failures(custom)
                self.custom.report(reached)  # the positions it counts add up to the head
                return reached
        if parallel and not self.can_fork:
            raise InvalidCommand("parallel", "a second process cannot open this store")
        with self.lock, bulk_gc():
            # Leases from the reset to the end of the replay (the child's too): another
            # process's catch-up waits for the replayed rows, not the reset's empty ones.
            with leased(self.rows, [p.name for p in chosen]):
                # One transaction (SQLite drops whole pages); configurations kept at 0 for
                # processes opening meanwhile (bootstrap.record_policy).
                self.rows.reset([p.name for p in chosen], [k for p in chosen for k in p.kinds],
                                {p.name: p.stored_meta(0, None) for p in chosen})
                for projection in chosen:
                    self.states.forget(projection.name)
                until = self.log.head()
                helper = None
                if len(chosen) > 1 and parallel is not False and self.can_fork and (
                        parallel or until >= PARALLEL_REBUILD_EVENTS):
                    helper = self.helper(replay=[p.name for p in chosen[1:]], until=until)
                try:
                    here = chosen if helper is None else chosen[:1]
                    replay(here, self.states, self.log, self.rows, until, progress)
                    if helper is not None and not helper.stop(until):
                        # The child failed: what it committed stays, the rest is replayed here.
                        replay(chosen[1:], self.states, self.log, self.rows, until)
                finally:
                    if helper is not None:
                        helper.close()
            # The custom ones after the built-in rows they read (a forget's replayed rows then
            # count as purged when their tables are made: projections.custom_forgets), folded
            # from 0 once the leases are given back (a catch-up takes them itself).
            if custom:
                self.custom.rebuild(custom)
            reached = self.catch_up()
            self.raise_failures(custom)
            return reached

