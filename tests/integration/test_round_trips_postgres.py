"""Issue 17 on PostgreSQL: an identify and the read after it make few statements, and the
append and the projection commit send theirs without waiting between them (pipeline mode).

Counted on the real PostgreSQL the tests start, by wrapping psycopg's cursor: what these tests
pin is which statements run (and whether they were pipelined), not how long they take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import idstitch
from idstitch.testing import TemporaryPostgres


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(statement, sent in pipeline mode) for every statement psycopg's cursors run."""
    statements: list[tuple[str, bool]] = []

    def wrap(name: str) -> None:
        original: Callable[..., Any] = getattr(psycopg.Cursor, name)

        def tracing(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
            text = query.as_string(self.connection) if hasattr(query, "as_string") else str(query)
            pipelined = self.connection.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF
            statements.append((" ".join(text.split()), pipelined))
            return original(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, name, tracing)

    for name in ("execute", "executemany", "copy"):
        wrap(name)
    return statements


def _url(postgres: TemporaryPostgres, schema: str) -> str:
    return postgres.url("idstitch_tests") + f"?schema={schema}"


def test_an_identify_on_an_existing_device_makes_eleven_statements(
        postgres: TemporaryPostgres, traced: list[tuple[str, bool]]) -> None:
    with idstitch.open(_url(postgres, "rt_identify")) as ws:
        for i in range(20):
            ws.identify(f"d{i % 4}", f"u{i % 5}", {"n": i})
        traced.clear()
        ws.identify("d1", "u3", {"n": 99})
        sql = [s for s, _ in traced]
        # The policy check reads every projection's tracking row in one statement, and the
        # catch-up after the append starts from what it read (no read of its own).
        assert [s for s in sql if "idstitch_tracking WHERE" in s] == [
            "SELECT name, position, meta FROM idstitch_tracking WHERE name IN (%s, %s)"]
        # Its own events follow the committed position directly: no lease is taken.
        assert not [s for s in sql if "advisory" in s]
        # The append: every statement in pipeline mode, no COPY, one reservation that
        # also reads the chain's tail.
        append = [(s, p) for s, p in traced if "idstitch_events" in s or "idstitch_chain" in s
                  or "lock_timeout" in s]
        assert len(append) == 6 and all(p for _, p in append)
        assert not [s for s in sql if s.startswith("COPY")]
        assert [s for s in sql if "setval" in s and "idstitch_chain" in s]
        # The identity projection's commit: BEGIN with the lock, then rows, position and
        # COMMIT in one pipeline; the device attributes met no event of theirs: no write.
        commit = sql[sql.index(next(s for s in sql if s.startswith("BEGIN; INSERT INTO "
                                                                  "idstitch_tracking"))):]
        assert len(commit) == 4 and commit[-1] == "COMMIT"
        assert all(p for _, p in traced[-3:])
        assert len(sql) == 11
        profile = ws.profile("u3")
        assert profile is not None and profile.attributes["n"] == 99


def test_a_profile_reads_its_devices_at_once(
        postgres: TemporaryPostgres, traced: list[tuple[str, bool]]) -> None:
    with idstitch.open(_url(postgres, "rt_profile")) as ws:
        for i in range(3):
            ws.identify(f"d{i}", "u1", {"n": i})  # one person, three devices
        ws.identify("d0", "u1", {"n": 9})
        traced.clear()
        profile = ws.profile("u1")
        assert profile is not None and len(profile.devices) == 3
        assert profile.attributes["n"] == 9
        sql = [s for s, _ in traced]
        assert [s for s in sql if "max(notification_id)" in s] != []  # the head, once
        assert len([s for s in sql if "idstitch_tracking WHERE" in s]) == 2  # catch-up, snapshot
        assert sql[2] == "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        # The identifier, the person, then every device and attribute row in one statement.
        rows = [s for s in sql if "idstitch_rows" in s]
        assert len(rows) == 3 and "unnest" in rows[-1]
        assert len(sql) == 8

