"""A command's rows in its append's statement (PostgreSQL): where they cannot land there (the
projections are behind the log, a fold fails, another commit came first), the catch-up after
the append folds them, as it always did. (That they land, in three round trips for an
identify: test_round_trips_postgres.)

On the test run's PostgreSQL server; statements seen by wrapping psycopg's cursor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from idstitch.adapters import postgres_log
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import IdentityProjection

import idstitch
from idstitch import bootstrap
from idstitch.errors import WriteLanded
from idstitch.testing import TemporaryPostgres
from idstitch.workspace import Workspace

from .conftest import Exploding


@pytest.fixture
def pg_url(postgres: TemporaryPostgres, request: pytest.FixtureRequest) -> str:
    return postgres.url("idstitch_tests") + f"?schema=landed_{request.node.name[5:40]}"


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement psycopg's cursors execute during the test, in order."""
    seen: list[str] = []
    execute = psycopg.Cursor.execute

    def tracing(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(query if isinstance(query, str) else query.as_string(None))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", tracing)
    return seen


def tracking(url: str) -> tuple[int, dict[str, int]]:
    """The log's head and every projection's committed position, read by another workspace."""
    with idstitch.open(url, projections="external") as reader:
        return reader.log.head(), {s.name: s.position for s in reader.projection_status()}


def test_a_command_behind_an_appending_only_writer_folds_both_after_its_append(
        pg_url: str, statements: list[str]) -> None:
    with idstitch.open(pg_url) as ws, idstitch.open(pg_url, projections="external") as other:
        ws.identify("phone", "ann")
        other.identify("tablet", "bob", {"plan": "team"})  # appended, folded by nobody yet
        statements.clear()
        ws.identify("phone", "ann", {"plan": "pro"})
        # Not landed (the rows are behind the log): the append's statement writes no rows,
        # and the catch-up after it commits those of both commands.
        insert = next(s for s in statements if s.startswith("WITH events AS"))
        assert "idstitch_tracking" not in insert
        assert len(statements) > 3
        head, positions = tracking(pg_url)
        assert positions["identity"] == head
        bob = ws.profile("bob")
        assert bob is not None and bob.attributes == {"plan": "team"}


def test_a_fold_failing_while_landing_writes_no_rows_and_keeps_the_events(pg_url: str) -> None:
    ws = Workspace(bootstrap.build(pg_url, projections=[
        IdentityProjection(), DeviceAttributesProjection(), Exploding()]))
    try:
        ws.identify("phone", "ann")
        with pytest.raises(WriteLanded) as raised:
            ws.identify("phone", "boom", {"plan": "pro"})
        # The events committed alone; the catch-up after the append folded the built-in
        # projections, which the failing one never stops.
        head, positions = tracking(pg_url)
        assert head == raised.value.position
        assert positions["identity"] == head and positions.get("exploding", 0) < head
    finally:
        ws.close()


def test_a_commit_that_came_first_leaves_the_rows_to_the_catch_up(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process commits the identity rows between the fold and the append's statement
    (here: a rebuild, which never takes the events table's lock): the compare-and-set writes
    nothing for it, every cache is dropped, and the catch-up after the append folds the
    command's events on what the store holds."""
    with idstitch.open(pg_url) as ws, idstitch.open(pg_url) as other:
        ws.identify("phone", "ann", {"plan": "free"})
        ws.identify("tablet", "bob", {"plan": "team"})
        land: Callable[..., Any] = postgres_log.PostgresLog._land
        raced: list[bool] = []

        def racing(self: Any, *args: Any) -> Any:
            found = land(self, *args)
            if not raced:
                raced.append(found[0])
                other.rebuild(["identity"])
            return found

        monkeypatch.setattr(postgres_log.PostgresLog, "_land", racing)
        position = ws.identify("phone", "ann", {"plan": "pro"})
        assert raced == [True]  # it had folded, and lost
        head, positions = tracking(pg_url)
        assert head == position and positions["identity"] == head
        for reader in (ws, other):
            ann = reader.profile("ann")
            assert ann is not None and ann.attributes == {"plan": "pro"}
        dumped = ws.dump()
        ws.rebuild()
        assert ws.dump() == dumped

