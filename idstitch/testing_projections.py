"""Custom projections the test suite and the benchmarks run, importable by ``module:qualname``
(so that the ingest's projecting child can build them too)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from idstitch.projections.audit import Change
from idstitch.projections.custom import Projection, ProjectionDB

if TYPE_CHECKING:
    from idstitch.workspace import Workspace

_encode = msgspec.json.Encoder().encode


class ChangeLog(Projection):
    """Every Change as JSON, by position: to compare with ``history``."""

    name = "change_log"

    def setup(self, db: ProjectionDB) -> None:
        """One table: position -> the Change as JSON."""
        db.execute("CREATE TABLE change_log (position BIGINT PRIMARY KEY, change TEXT NOT NULL)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        """Insert the Change (a second insert of a position would fail: exactly once)."""
        db.execute("INSERT INTO change_log (position, change) VALUES (?, ?)",
                   (change.position, _encode(change).decode()))

    @classmethod
    def rows_of(cls, ws: Workspace) -> list[tuple[Any, ...]]:
        """Its rows in a workspace that keeps it: (position, Change as JSON), by position."""
        return ws.projection_db(cls.name).query(
            "SELECT position, change FROM change_log ORDER BY position")

    @classmethod
    def position_of(cls, ws: Workspace) -> int:
        """Its tracked position in a workspace that keeps it."""
        return next(s.position for s in ws.projection_status() if s.name == cls.name)


class Counter(Projection):
    """Counts Changes per event name, one UPDATE per Change (the benchmark's fold)."""

    name = "counter"

    def setup(self, db: ProjectionDB) -> None:
        """One row per event name."""
        db.execute("CREATE TABLE counts (event TEXT PRIMARY KEY, n BIGINT NOT NULL)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        """Count one."""
        db.execute("INSERT INTO counts (event, n) VALUES (?, 1) ON CONFLICT (event) DO UPDATE "
                   "SET n = counts.n + 1", (change.event,))


class BatchCounter(Counter):
    """The same counts, folded a batch at a time: one statement per event name a batch."""

    name = "batch_counter"

    def handle_batch(self, db: ProjectionDB, changes: Sequence[Change]) -> None:
        """Count in memory, then one upsert per event name."""
        counts: dict[str, int] = {}
        for change in changes:
            counts[change.event] = counts.get(change.event, 0) + 1
        for event, n in counts.items():
            db.execute("INSERT INTO counts (event, n) VALUES (?, ?) ON CONFLICT (event) DO "
                       "UPDATE SET n = counts.n + excluded.n", (event, n))


class NoEvents(Projection):
    """Wants no events at all (what it costs the rest to have one registered)."""

    name = "no_events"
    events = frozenset()

    def setup(self, db: ProjectionDB) -> None:
        """A table that stays empty."""
        db.execute("CREATE TABLE nothing (x INTEGER)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        """Never called."""
        raise AssertionError("no event was wanted")


class Tagged(Projection):
    """Each Change's position with the instance's own ``tag`` (a constructor argument, which a
    process building the class by name does not have)."""

    name = "tagged"

    def __init__(self, tag: str = "default") -> None:
        self.tag = tag

    def setup(self, db: ProjectionDB) -> None:
        """One table: position -> tag."""
        db.execute("CREATE TABLE tagged (position BIGINT PRIMARY KEY, tag TEXT NOT NULL)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        """Tag the position."""
        db.execute("INSERT INTO tagged (position, tag) VALUES (?, ?)", (change.position, self.tag))


class Paced(ChangeLog):
    """A change log that sleeps ``IDSTITCH_TEST_PACE`` seconds at each Change (default 0):
    a long catch-up, to stop or kill in the middle."""

    name = "paced"

    def setup(self, db: ProjectionDB) -> None:
        """One table: position -> the Change as JSON."""
        db.execute("CREATE TABLE paced (position BIGINT PRIMARY KEY, change TEXT NOT NULL)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        """Wait, then insert the Change."""
        time.sleep(float(os.environ.get("IDSTITCH_TEST_PACE", "0")))
        db.execute("INSERT INTO paced (position, change) VALUES (?, ?)",
                   (change.position, _encode(change).decode()))


class ChildOnly(ChangeLog):
    """A change log that refuses to fold in the process named by ``IDSTITCH_TEST_PARENT``
    (the pid of a test's parent process): proof that the projecting child did the work."""

    name = "child_only"

    def setup(self, db: ProjectionDB) -> None:
        """One table: position -> the folding process."""
        db.execute("CREATE TABLE child_only (position BIGINT PRIMARY KEY, pid BIGINT NOT NULL)")

    def handle_batch(self, db: ProjectionDB, changes: Sequence[Change]) -> None:
        """Record the positions; raise in the parent."""
        if str(os.getpid()) == os.environ.get("IDSTITCH_TEST_PARENT"):
            raise RuntimeError("the parent was not to fold this projection")
        for change in changes:
            db.execute("INSERT INTO child_only (position, pid) VALUES (?, ?)",
                       (change.position, os.getpid()))
