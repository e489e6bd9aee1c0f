"""Projections kept by a process of their own: following the log, status, waiting for them.

``idstitch project`` runs a :class:`Follower`: it catches every projection up to the head of
the log, then sleeps until writers append (PostgreSQL's LISTEN/NOTIFY wakes it) or a poll
interval passes (SQLite, and the fallback when a notification is lost), and again. Writers
opened with ``projections="external"`` only append; :func:`wait_for` gives them
read-your-writes across processes and :func:`status` says how far behind each projection is.

Why a follower never skips a position: every append holds the events table's lock until it
commits (PostgreSQL: ``LOCK TABLE ... IN EXCLUSIVE MODE``; SQLite: one writer at a time), so
positions become visible in the order they were taken. The head a catch-up reads has every
position below it committed; a transaction still open holds no position under it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Protocol

import msgspec

from idstitch.domain.errors import InvalidCommand, ProjectionsBehind, StoreError
from idstitch.projections.base import RowProjection
from idstitch.projections.custom_forgets import Wait
from idstitch.projections.runner import LAG_LIMIT
from idstitch.projections.runner_state import folded_to
from idstitch.service.gc_pause import bulk_gc
from idstitch.service.projecting import Projector
from idstitch.service.settings import Settings

POLL_SECONDS = 1.0
"""How long a follower on PostgreSQL waits for a notification before it looks anyway: a lost
notification delays it this much at most."""
SQLITE_POLL_SECONDS = 0.05
"""How often a follower on SQLite looks at the head of the log (one statement)."""
FOLLOW_BATCH = 5_000
"""Events per transaction at most in a projecting process (a writer's catch-up: 50,000)."""
STOP_SECONDS = 0.25
"""How soon a follower asleep on its listener notices :meth:`Follower.stop`."""
WAIT_PAUSE_MAX = 0.05
"""How long :func:`wait_for` sleeps between looks at the projections' positions, at most."""
_UNDONE_BY = {"forget": "purged", "unmerge": "replayed"}
_UNDOES = {"forget": "purges it", "unmerge": "replays the persons"}
"""What a custom projection waits for at each decision (reported by :class:`Follower`)."""


class ProjectionStatus(msgspec.Struct, frozen=True):
    """Where one projection stands (``ws.projection_status()``, ``idstitch projections``)."""

    name: str
    version: int
    """A built-in projection's rows format; a custom projection's live ``version``."""
    position: int
    """Every event up to it is in the projection's rows: its committed position, or further
    where this process has folded the events after it and none changed a row, or where none
    of them is one the projection folds (a command's device attributes, say, which the
    identity projection does not fold): nothing is left for reads to wait for there."""
    lag: int
    """Positions of the log after it (``head - position``)."""
    custom: bool
    """Whether it is a custom projection (users' own)."""


def status(projector: Projector) -> list[ProjectionStatus]:
    """Every projection the store tracks: the built-in ones, then every custom one with a live
    version (registered in this workspace or not: another process may keep it)."""
    head = projector.log.head()
    committed = projector.rows.tracked_many(projector.registry.names)
    found = [ProjectionStatus(p.name, p.rows_format,
                              position := _holds(projector, p, folded_to(
                                  projector.states.of(p), committed[p.name]), head),
                              max(head - position, 0), False)
             for p in projector.registry]
    for name, tracked in projector.custom.tables.every():
        if tracked.live:
            found.append(ProjectionStatus(name, tracked.version, tracked.position,
                                          max(head - tracked.position, 0), True))
    return found


def _holds(projector: Projector, projection: RowProjection, position: int, head: int) -> int:
    """How far a built-in projection's rows committed at ``position`` hold the log: up to the
    event before the next one it folds. A catch-up that meets only other projections' events
    leaves its position up to runner.LAG_LIMIT behind (no commit for nothing), and another
    process cannot know that from the position alone: without this, a store whose last
    commands were identifies reads as lagging in device attributes, and ``wait_for`` waits
    for a projector to commit a position that changes nothing. (PostgreSQL appends take
    their positions and commit under the events table's lock: nothing can appear later
    below the head.) A lag past LAG_LIMIT is a projection behind: not looked into, so that
    the read stays short."""
    if position >= head or head - position > LAG_LIMIT:
        return position
    try:
        ahead = projector.log.read_selected(position, head, 1, projection.event_types,
                                            first=projection.first_events)
    except StoreError:
        # A damaged event there (CorruptEvent): the committed position is all that is known;
        # the catch-up that meets the event says what it is.
        return position
    return ahead[0].position - 1 if ahead else head


def read_your_write(
    projector: Projector, head: Callable[[], int], position: int | None,
    timeout: float | int | None, *, catch_up: bool,
) -> int:
    """What :meth:`idstitch.Workspace.wait_for` does: check the position against the log's
    head, catch up first when this workspace keeps its projections (``catch_up``), then wait."""
    if position is None:
        return projector.position()
    if position < 0:
        raise InvalidCommand("position", f"must be at least 0, got {position}")
    if timeout is not None and not timeout >= 0:
        raise InvalidCommand("timeout", f"must be a number of seconds >= 0, got {timeout}")
    last = head()
    if position > last:
        # A write returns a committed position: one past the head was never returned,
        # and waiting for it could last forever.
        raise InvalidCommand("position", f"{position} is beyond the head of the log "
                                         f"({last}): no write returned it")
    if catch_up:
        # Eager: also commit the position of a projection that met no event of its own
        # (a catch-up otherwise leaves it up to a thousand positions behind).
        projector.catch_up(eager=True)
        projector.raise_failures()
    return wait_for(projector, position, None if timeout is None else float(timeout))


HEAD_WAIT_SECONDS = 30.0
"""With ``projections="external"``, how long a command that must read the persons as the
whole log makes them (a ``cio_`` id, merge, unmerge, forget) waits for the process that keeps
the built-in projections to reach the head of the log: ProjectionsBehind after that, nothing
recorded."""


HEAD_WAIT: ContextVar[float | None] = ContextVar("idstitch_head_wait", default=None)
"""A shorter wait than HEAD_WAIT_SECONDS for the calls of one thread (``idstitch serve``, whose
requests queue behind it, sets it around an ingest); None: HEAD_WAIT_SECONDS. A context
variable, not a setting of the workspace: a caller sharing the workspace with the server from
another thread keeps its own wait."""


def settled(projector: Projector, settings: Settings) -> Callable[[], object]:
    """How a command's read about persons brings the projections to the head of the log when
    the workspace does not keep them current after each write: it waits for the process that
    keeps them (``external``), or catches up itself (``auto_catch_up=False``). It reads the
    built-in rows only, so it waits for the built-in projections only: a custom projection
    behind (its handler failing, or waiting for a forget's purge) holds no command up."""
    if settings.external:
        def wait() -> int:
            seconds = HEAD_WAIT.get()
            return wait_for(projector, projector.log.head(),
                            HEAD_WAIT_SECONDS if seconds is None else seconds, custom=False)
        return wait
    return projector.catch_up


def wait_for(projector: Projector, position: int, timeout: float | None, *,
             custom: bool = True) -> int:
    """Block until every projection (the built-in ones only, without ``custom``) has
    committed ``position``; the lowest position reached. ProjectionsBehind after ``timeout``
    seconds (None: no limit)."""
    started = time.monotonic()
    pause = 0.001
    while True:
        found = [s for s in status(projector) if custom or not s.custom]
        lagging = {s.name: s.position for s in found if s.position < position}
        if not lagging:
            return min([s.position for s in found], default=position)
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise ProjectionsBehind(position, min(lagging.values()), lagging, waited)
        sleep = pause if timeout is None else min(pause, max(timeout - waited, 0.0))
        time.sleep(sleep)
        pause = min(pause * 2, WAIT_PAUSE_MAX)


class Listener(Protocol):
    """Wakes a follower when writers append (idstitch.adapters.stores.AppendListener)."""

    def wait(self, timeout: float) -> bool:
        """True on an append, False when ``timeout`` seconds passed."""
        ...

    def close(self) -> None:
        """Stop listening."""
        ...


class Follower:
    """Keeps every projection of a projector at the head of the log until stopped."""

    def __init__(self, projector: Projector, listen: Callable[[], Listener] | None, *,
                 poll: float | None = None,
                 report: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
                 ) -> None:
        self.projector = projector
        self._listen = listen
        self.poll = poll if poll is not None else (
            POLL_SECONDS if listen is not None else SQLITE_POLL_SECONDS)
        self.report = report
        self.stopped = threading.Event()
        self.reached = 0
        """The position every projection reached at the last catch-up."""
        self._failing: dict[str, str] = {}
        self._waiting: dict[str, Wait] = {}
        for projection in projector.registry:
            # Commit more often than a catch-up in a writer does: the committed position is
            # what wait_for and lag see, so a smaller batch keeps them close to the head.
            projector.states.of(projection).batch_size = FOLLOW_BATCH

    def step(self) -> int:
        """One catch-up of every projection, positions committed even where a projection met
        no event of its own (so that wait_for sees them at the head); the position reached.
        A failing custom projection is reported (once per new failure) and retried at the
        next step; the others go on. So is one waiting right before a forget whose process
        has not purged the rows yet, or an unmerge whose process has not replayed them (see
        :mod:`idstitch.projections.custom_forgets`)."""
        projector = self.projector
        # A projecting process is a bulk job that never ends: its catch-ups fold batch after
        # batch over a working set of hundreds of thousands of cached rows, which the cyclic
        # collector would traverse again and again (benchmarks/bench_external.py), so it is
        # paused during each step. Without promoting: steps come every poll, and freezing
        # after each reset the young generation's count, so collections never ran between
        # steps and the cyclic garbage of a failing custom projection (its traceback and
        # frames, every step) piled up (~4 MB a second); here, or in the embedding process
        # when ``idstitch.testing.following`` runs a follower.
        with bulk_gc(promote=False):
            self.reached = projector.catch_up(eager=True)
        failing = {name: str(f) for name, f in projector.failures.items()}
        for name, why in failing.items():
            if self._failing.get(name) != why:
                self.report(why)  # ProjectionFailed names the projection and the position
        for name in set(self._failing) - set(failing):
            self.report(f"projection {name!r} recovered")
        self._failing = failing
        waiting = dict(projector.custom.waiting)
        for name, wait in waiting.items():
            if self._waiting.get(name) != wait:
                self.report(f"projection {name!r} waits at position {wait.position - 1}: the "
                            f"{wait.decision} recorded at {wait.position} is not "
                            f"{_UNDONE_BY[wait.decision]} yet (its process "
                            f"{_UNDOES[wait.decision]}, or the next open of the store if that "
                            "process stopped)")
        for name in set(self._waiting) - set(waiting):
            gone = self._waiting[name]
            self.report(f"projection {name!r} goes on past the {gone.decision} at "
                        f"{gone.position}")
        self._waiting = waiting
        return self.reached

    def run(self) -> None:
        """Follow the log until :meth:`stop` (or the process is signalled)."""
        listener = self._listen() if self._listen is not None else None
        try:
            while not self.stopped.is_set():
                try:
                    self.step()
                except StoreError as e:
                    # The database went away for a while: say so, and try again after a poll.
                    self.report(f"catch-up failed, retrying: {e}")
                    self.stopped.wait(self.poll)
                    continue
                self._sleep(listener)
        finally:
            if listener is not None:
                listener.close()

    def _sleep(self, listener: Listener | None) -> None:
        if listener is None:
            self.stopped.wait(self.poll)
            return
        deadline = time.monotonic() + self.poll
        try:
            # In slices, so that stop() takes effect within STOP_SECONDS.
            while not self.stopped.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or listener.wait(min(left, STOP_SECONDS)):
                    return
        except StoreError as e:
            self.report(f"listening for appends failed, polling: {e}")
            self.stopped.wait(self.poll)

    def stop(self) -> None:
        """Stop after the current step."""
        self.stopped.set()
