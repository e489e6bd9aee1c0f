"""Locks on the custom projections' tables. Two processes on one PostgreSQL store, each
keeping the same custom projection: one folds it while the other drops its tables (a rebuild,
as a forget's or an unmerge's is). Both take the projection's tracking row before its tables,
so they wait for each other instead of deadlocking (a forget racing an unmerge once failed
with PostgreSQL's DeadlockDetected). And a SQLite file locked past the wait: a typed error."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from idstitch.adapters.projection_sqlite import SqliteTables
from idstitch.domain.errors import StoreError

import idstitch
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


class Gated(idstitch.Projection):
    """Counts Changes; its handler waits at a gate once armed, before it touches its table."""

    name = "gated"
    armed = threading.Event()
    entered = threading.Event()
    release = threading.Event()

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE seen (position BIGINT PRIMARY KEY)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        if self.armed.is_set():
            self.armed.clear()
            self.entered.set()
            assert self.release.wait(30)
        db.execute("INSERT INTO seen (position) VALUES (?)", (change.position,))


@pytest.mark.parametrize("durable_kind", ["postgres"], indirect=True)
def test_a_rebuild_elsewhere_waits_for_a_fold_instead_of_deadlocking(
        make_durable_ws: WorkspaceFactory) -> None:
    folding = make_durable_ws(None, projections=[Gated()])
    rebuilding = make_durable_ws(folding.url, projections=[Gated()])
    writer = make_durable_ws(folding.url, projections="external")
    writer.identify("phone", "kim", {"plan": "pro"})
    Gated.armed.set()
    errors: list[BaseException] = []

    def fold() -> None:
        try:
            folding.catch_up()
        except BaseException as e:  # reported below
            errors.append(e)

    folder = threading.Thread(target=fold)
    folder.start()
    assert Gated.entered.wait(30)  # the fold holds the tracking row, not yet the table
    rebuilder = threading.Thread(target=lambda: rebuilding.rebuild(["gated"]))
    rebuilder.start()
    rebuilder.join(1.5)  # it drops the tables, or waits for the fold (it must)
    Gated.release.set()
    folder.join(60)
    rebuilder.join(60)
    assert errors == []
    rebuilding.catch_up()
    head = rebuilding.log.head()
    assert rebuilding.projection_db("gated").query("SELECT count(*) FROM seen") == [(head,)]


def test_a_sqlite_file_locked_past_the_wait_is_a_store_error(tmp_path: Path) -> None:
    # Another connection holds the file's write lock (a long fold elsewhere, a tool): the
    # custom tables' transaction gives up with the store's typed error, the driver's its cause.
    path = tmp_path / "identity.db"
    idstitch.open(f"sqlite:///{path}").close()
    tables = SqliteTables(str(path))
    tables.versions("gated")  # connected
    tables._connection().execute("PRAGMA busy_timeout=50")
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="cannot write the custom projections' tables") as e:
            tables.create("gated", 1, True, lambda db: None, 0)
        assert isinstance(e.value.__cause__, sqlite3.OperationalError)
        other.execute("ROLLBACK")
    tables.create("gated", 1, True, lambda db: None, 0)  # and works once it is free
    assert [t.version for t in tables.versions("gated")] == [1]
    tables.close()
