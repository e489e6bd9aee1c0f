"""Two processes on one PostgreSQL store, each keeping the same custom projection: one folds
it while the other drops its tables (a rebuild, as a forget's or an unmerge's is). Both take
the projection's tracking row before its tables, so they wait for each other instead of
deadlocking (a forget racing an unmerge once failed with PostgreSQL's DeadlockDetected)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

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
