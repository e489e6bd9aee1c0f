"""A rolling deploy of a custom projection's new version, raced by an old-code process: the
version registered last wins (write-your-own-projection.md, Versions). A process registering
the live version 1 while another builds version 2 drops the unfinished build; the builder's
swap must then change nothing, not drop version 1 as well (an outside probe found both gone:
no copy of the projection at all). Real SQLite files and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import idstitch
from idstitch.errors import ProjectionFailed
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


class People(idstitch.Projection):
    """One row per person, tagged with the version that wrote it."""

    name = "people"
    version = 1

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE people (person_id TEXT PRIMARY KEY, v INTEGER)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        db.execute("INSERT INTO people VALUES (?, ?) ON CONFLICT (person_id) DO NOTHING",
                   (change.person_id, self.version))


building, release = threading.Event(), threading.Event()


class PeopleV2(People):
    """Version 2."""

    version = 2


def test_the_old_version_registered_during_a_build_stays_whole(
        make_durable_ws: WorkspaceFactory) -> None:
    building.clear()
    release.clear()
    first = make_durable_ws(None, projections=[People()])
    first.identify("a", "u1")
    first.identify("b", "u2")
    first.close()
    outcome: list[BaseException | None] = []

    def deploy_v2() -> None:
        with idstitch.open(first.url) as ws:
            tables = ws._services.projector.custom.tables
            swap = tables.swap

            def paused(name: str, version: int) -> None:
                # Built and caught up, found not live yet: here the old process registers.
                building.set()
                release.wait(10)
                swap(name, version)

            tables.swap = paused  # type: ignore[method-assign]
            try:
                ws.run_projection(PeopleV2)
                outcome.append(None)
            except BaseException as e:  # collected for the assertion below
                outcome.append(e)

    deploying = threading.Thread(target=deploy_v2)
    deploying.start()
    assert building.wait(20)
    # An old-code process restarts meanwhile: version 1 registered last.
    old = make_durable_ws(first.url, projections=[People()])
    release.set()
    deploying.join(30)
    [error] = outcome
    assert isinstance(error, ProjectionFailed) and "no longer tracked" in str(error.cause)
    status = {s.name: s.version for s in old.projection_status() if s.custom}
    assert status == {"people": 1}
    assert old.projection_db("people").query("SELECT v, count(*) FROM people GROUP BY v") == [(1, 2)]
    old.identify("c", "u3")
    assert old.projection_db("people").query("SELECT count(*) FROM people") == [(3,)]


@pytest.fixture(autouse=True)
def _released() -> None:
    release.set()  # a failed test must not leave a build waiting for ever
