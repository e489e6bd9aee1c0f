"""Two processes creating and dropping one custom projection's version at once on PostgreSQL
(two `ws.rebuild(["name"])` calls, a process registering it while another rebuilds): the
version ends with both its tracking row and its tables, or with neither. Before they were
serialised, a drop that began while a create was under way deleted the tracking row the create
then committed (its DELETE read what was committed when it ran) but not the tables (its look at
them ran before): every later create of the version failed on "relation already exists"."""

from __future__ import annotations

import threading
import time

import psycopg
from idstitch.adapters.projection_pg import PostgresTables
from idstitch.adapters.projection_sql import Database
from idstitch.adapters.urls import parse

from idstitch.testing import TemporaryPostgres

NAME = "counter"


def _tables(conn: psycopg.Connection[tuple[str]], schema: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1", (schema,)).fetchall()]


def _waiting(conn: psycopg.Connection[tuple[str]]) -> bool:
    """Whether some session waits for a lock (the drop, behind the create)."""
    row = conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = "
                       "l.pid WHERE NOT l.granted AND a.datname = current_database()").fetchone()
    return bool(row and row[0])


def test_a_drop_during_a_create_leaves_the_version_whole_or_gone(
        postgres: TemporaryPostgres) -> None:
    url = postgres.create_database("custom_race")
    target = parse(url).postgres
    assert target is not None
    creating, dropping = PostgresTables(target), PostgresTables(target)
    dropping.versions(NAME)  # both connections open before the race
    in_setup, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def setup(db: Database) -> None:
        db.execute("CREATE TABLE seen (position BIGINT PRIMARY KEY)")
        in_setup.set()
        release.wait(10)  # the create's transaction stays open, its table made

    def create() -> None:
        try:
            creating.create(NAME, 1, True, setup, 0)
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    def drop() -> None:
        try:
            dropping.drop(NAME, 1)
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    creator = threading.Thread(target=create)
    creator.start()
    assert in_setup.wait(10)
    dropper = threading.Thread(target=drop)
    dropper.start()
    with psycopg.connect(url, autocommit=True) as watch:
        deadline = time.monotonic() + 10
        while not _waiting(watch) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _waiting(watch)  # the drop waits for the create
        release.set()
        creator.join(10)
        dropper.join(10)
        assert errors == []
        tracked = [t.version for t in dropping.versions(NAME)]
        tables = _tables(watch, dropping.schema_of(NAME))
    # The drop ran after the create committed: it dropped the version whole.
    assert (tracked, tables) == ([], [])
    # And the version can be made again (the state the race left never could).
    creating.create(NAME, 1, True, lambda db: db.execute(
        "CREATE TABLE seen (position BIGINT PRIMARY KEY)"), 0)
    assert [t.version for t in creating.versions(NAME)] == [1]
    creating.close()
    dropping.close()
