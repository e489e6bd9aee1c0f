"""Processes opening one PostgreSQL store at once (a parent and its projecting child, several
API nodes starting together) all get the custom projections' tracking tables: their
``CREATE TABLE IF NOT EXISTS`` run under the schema's DDL lock, since PostgreSQL's is not safe
against itself (two at once can fail on the catalog's unique index)."""

from __future__ import annotations

import threading

from idstitch.adapters.projection_pg import PostgresTables
from idstitch.adapters.urls import PostgresTarget, parse

from idstitch.testing import TemporaryPostgres

OPENERS = 6


def _race(target: PostgresTarget) -> list[BaseException]:
    """OPENERS threads open the custom tables of one fresh store at the same moment."""
    start = threading.Barrier(OPENERS)
    errors: list[BaseException] = []

    def open_tables() -> None:
        tables = PostgresTables(target)
        start.wait()
        try:
            tables.versions("anything")
        except BaseException as e:  # collected for the caller's assertion
            errors.append(e)

    threads = [threading.Thread(target=open_tables) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_openers_racing_on_a_fresh_store_all_get_the_tables(
        postgres: TemporaryPostgres) -> None:
    for attempt in range(5):  # the race, unlocked, failed in about half of such rounds
        target = parse(postgres.create_database(f"custom_open_{attempt}")).postgres
        assert target is not None
        assert _race(target) == []
