"""How the writer keeps the read models up to date while it records: a projecting child that
follows the log, or catch-ups of its own between groups.

The writer's groups leave the projections behind (a 200 waits for the log's commit alone). On a
store a second process can open (a SQLite file, PostgreSQL) a child process folds the log as it
grows, on the other core, the same child a bulk ``ws.ingest`` starts
(:mod:`idstitch.service.background`): it holds the projections' leases, so a reader that catches
up asks it to commit and waits, and it commits rarely (a commit rewrites the hot rows). Measured
with ``benchmarks/bench_serve.py`` (20000 messages, 4 clients, SQLite): the catch-ups every 500
messages took half of the writer thread's time (reading the events back, decrypting them,
committing the hot rows forty times), and the requests waited behind them.

Where no child can run (the memory store, a platform without it, a child that failed), the writer
catches up itself, as before: every :data:`CATCH_UP_MESSAGES` messages and when requests pause.
A child that failed (killed, or its connection to PostgreSQL lost) is started again
:data:`RESTART_SECONDS` later, then at twice that while it keeps failing.
"""

from __future__ import annotations

import logging
import time

from idstitch.service.background import BackgroundProjector
from idstitch.workspace import Workspace

CATCH_UP_MESSAGES = 500
"""Without a child, the writer brings the projections up to date at the latest after this many
messages (a catch-up of more would hold the requests behind it too long)..."""
IDLE = 0.05
"""... and when no request came for this many seconds (with a child: it is asked to commit
everything it folded, so a reader that does not catch up itself sees it)."""

RESTART_SECONDS = 30.0
"""How long after a child failed the writer starts a new one (doubled after each failure to
start, up to ten minutes): until then it folds the log itself."""

log = logging.getLogger("idstitch.serve")


class Keeper:
    """The writer's side of the projections: told of every group it records, and of pauses."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.unprojected = 0
        """Messages recorded since the projections were last brought up to date here (or,
        with a child, since it was last asked to commit)."""
        self.child = self._follower()
        self._revive_at: float | None = None
        """When to start a child again (a child ran, and failed); None: none to start."""
        self._revive_after = RESTART_SECONDS

    @property
    def defers(self) -> bool:
        """Whether groups leave the projections to this keeper (False: another process keeps
        them, ``external``, or the workspace never catches up)."""
        return CATCH_UP_MESSAGES > 0 and self.ws.auto_catch_up

    def _follower(self) -> BackgroundProjector | None:
        # The facade has no public handle on its projector: the command line's `project`
        # reaches it the same way.
        projector = self.ws._services.projector
        if not self.defers or not projector.can_fork:
            return None
        child = projector.helper()
        # Started and at the head before the first request is taken: the child's start (its
        # imports, opening the store) must not be paid by the first requests.
        if not child.wait_for(self.ws.log.head()):
            log.warning("the projecting child did not start (%s): the writer folds the log "
                        "itself", child.failed)
            return None
        return child

    def before_person_check(self) -> None:
        """A group naming a person by ``cio_`` id is checked against the projections: with a
        child, have it commit up to the head first (the group's ingest then waits for it to
        fold its own events too, through the leases)."""
        self._ask_child()

    def recorded(self, messages: int) -> None:
        """A group of this many messages was recorded with its projections left behind."""
        self.unprojected += messages
        if self.child is not None and not self.child.running:
            self._lost_child()
        self._revive()
        if self.child is None and self.unprojected >= CATCH_UP_MESSAGES:
            self.catch_up()

    def catch_up(self) -> None:
        """Bring the projections up to date now: the child commits all it folded (at the log's
        head), or this thread folds."""
        self.unprojected = 0
        self._revive()
        if self._ask_child():
            return
        try:
            self.ws.catch_up()
        except Exception:
            # The messages are recorded; a projection that failed is caught up by the next
            # attempt, or by any reader (the default workspace catches up before it queries).
            log.exception("the projections could not be brought up to date")

    def close(self) -> None:
        """Leave the projections at the head (the child folds there and ends), on shutdown."""
        child, self.child = self.child, None
        if child is not None and child.stop(self.ws.log.head()):
            self.unprojected = 0
            return
        if self.unprojected or child is not None:
            self.catch_up()

    def _ask_child(self) -> bool:
        if self.child is None:
            return False
        if self.child.wait_for(self.ws.log.head()):
            return True
        self._lost_child()
        return False

    def _lost_child(self) -> None:
        assert self.child is not None
        log.warning("the projecting child failed (%s): the writer folds the log itself, and "
                    "starts a new child in %g s", self.child.failed or "it exited",
                    self._revive_after)
        self.child.close()
        self.child = None
        self._revive_at = time.monotonic() + self._revive_after

    def _revive(self) -> None:
        """Start a child again once its time has come (after a failure)."""
        if self.child is not None or self._revive_at is None or time.monotonic() < self._revive_at:
            return
        try:
            self.child = self._follower()
        except Exception:
            # The store still lost: the writer's groups must not fail for it (the group
            # that got here was committed). Tried again later.
            log.warning("the projecting child could not be started", exc_info=True)
            self.child = None
        if self.child is None:
            self._revive_after = min(self._revive_after * 2, 600.0)
            self._revive_at = time.monotonic() + self._revive_after
        else:
            self._revive_at, self._revive_after = None, RESTART_SECONDS


__all__ = ["CATCH_UP_MESSAGES", "IDLE", "Keeper"]
