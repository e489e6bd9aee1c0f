"""Issue 17 on PostgreSQL: an identify and the read after it make few statements (each one a
round trip on the wire): BEGIN shares its round trip with the statements after it, and the
statements of one step are one statement.

Counted on the real PostgreSQL the tests start, by wrapping psycopg's cursor: what these tests
pin is which statements run, not how long they take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from idstitch.adapters.postgres_landing import with_rows
from idstitch.adapters.postgres_log import BEGIN_AND_RESERVE, INSERT_CHAIN_NOTIFY, READ_TRACKING

import idstitch
from idstitch.testing import TemporaryPostgres


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement psycopg's cursors run."""
    statements: list[str] = []

    def wrap(name: str) -> None:
        original: Callable[..., Any] = getattr(psycopg.Cursor, name)

        def tracing(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
            text = query.as_string(self.connection) if hasattr(query, "as_string") else str(query)
            statements.append(text)
            return original(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, name, tracing)

    for name in ("execute", "executemany", "copy"):
        wrap(name)
    return statements


def _url(postgres: TemporaryPostgres, schema: str) -> str:
    return postgres.url("idstitch_tests") + f"?schema={schema}"


def test_an_identify_on_an_existing_device_makes_three_statements(
        postgres: TemporaryPostgres, traced: list[str]) -> None:
    with idstitch.open(_url(postgres, "rt_identify")) as ws:
        for i in range(20):
            ws.identify(f"d{i % 4}", f"u{i % 5}", {"n": i})
        traced.clear()
        position = ws.identify("d1", "u3", {"n": 99})
        assert traced == [
            # The append: BEGIN, lock and reservation (with the chain's tail) at once, and
            # with them the policy check's read of every projection's tracking row (the
            # fold of the command's events starts from what it read: no read of its own);
            # the events, their chain run, the notification and the identity projection's
            # rows and position (written only over the tracking the fold began from: a
            # compare-and-set) at once; COMMIT. Its own events follow the committed position
            # directly: no lease. The device attributes met no event of theirs: nothing to
            # write. The same read takes the forgets' mark (a forget elsewhere since the
            # command was checked refuses it): no statement of its own.
            BEGIN_AND_RESERVE.format(n=1) + "; " + READ_TRACKING.format(
                "'identity', 'device_attributes', 'idstitch:suppressed'"),
            with_rows(INSERT_CHAIN_NOTIFY, 1), "COMMIT"]
        with idstitch.open(_url(postgres, "rt_identify"), projections="external") as reader:
            status = {s.name: s.position for s in reader.projection_status()}
        assert status["identity"] == position  # committed with the events
        profile = ws.profile("u3")
        assert profile is not None and profile.attributes["n"] == 99


def test_a_profile_reads_its_devices_at_once_per_kind(
        postgres: TemporaryPostgres, traced: list[str]) -> None:
    with idstitch.open(_url(postgres, "rt_profile")) as ws:
        for i in range(3):
            ws.identify(f"d{i}", "u1", {"n": i})  # one person, three devices
        ws.identify("d0", "u1", {"n": 9})
        traced.clear()
        profile = ws.profile("u1")
        assert profile is not None and len(profile.devices) == 3
        assert profile.attributes["n"] == 9
        sql = traced
        # Nothing to fold (this process's writes left every projection at the head): the
        # snapshot begins in the same statement that reads the head and every tracking row,
        # and the read answers from it, with no catch-up before it.
        assert len([s for s in sql if "max(notification_id)" in s]) == 1
        assert sql[0].startswith("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT ("
                                 "SELECT max(notification_id)")
        assert "idstitch_tracking" in sql[0]
        # The identifier, the person, then every device row in one statement and every
        # attribute row in another.
        rows = [s for s in sql if "idstitch_rows" in s]
        assert len(rows) == 4 and all("key = ANY" in s for s in rows[-2:])
        assert len(sql) == 6 and sql[-1] == "COMMIT"

