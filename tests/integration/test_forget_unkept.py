"""A forget and what its own process cannot purge: custom projections no process here keeps
(``idstitch.service.unkept``), and, on SQLite, a checkpoint another connection's read snapshot
holds back (``idstitch.adapters.sqlite_scrub``). Real SQLite files and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from idstitch.adapters import sqlite_scrub

import idstitch
from idstitch.cli import main
from idstitch.testing_projections import ChangeLog
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]

SECRET = "ZQX-lyon"


def traffic(ws: Workspace) -> None:
    ws.identify("phone", "kim-55", {"email": "kim@example.com", "city": SECRET},
                timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    ws.identify("laptop", "sam", {"city": "Oslo"}, timestamp=datetime(2026, 1, 2, tzinfo=UTC))


def tracked(ws: Workspace) -> list[str]:
    return [s.name for s in ws.projection_status()]


def in_files(url: str) -> bool:
    path = url[len("sqlite:///"):]
    found = False
    for name in (path, path + "-wal"):
        try:
            with open(name, "rb") as file:
                found = found or SECRET.encode() in file.read()
        except FileNotFoundError:
            pass
    return found


def test_a_projection_no_process_keeps_is_dropped_and_built_afresh_later(
        make_durable_ws: WorkspaceFactory) -> None:
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    traffic(keeper)
    keeper.catch_up()
    assert any(SECRET in change for _, change in ChangeLog.rows_of(keeper))
    keeper.close()  # the projection is retired: no process registers it any more
    writer = make_durable_ws(keeper.url)
    report = writer.forget("kim-55", reason="ticket 313")
    assert report.dropped == ["change_log"]
    assert "change_log" not in tracked(writer)
    if keeper.url.startswith("sqlite:"):
        assert not in_files(keeper.url)
    # Registered again: built from the log, where kim's values read erased; sam's are there.
    again = make_durable_ws(keeper.url, projections=[ChangeLog()])
    rows = ChangeLog.rows_of(again)
    assert len(rows) == again.log.head() - 1  # every Change but the decision's
    assert not any(SECRET in change or "kim-55" in change for _, change in rows)
    assert any("Oslo" in change for _, change in rows)


def test_a_projection_an_open_process_keeps_is_left_to_its_next_catch_up(
        make_durable_ws: WorkspaceFactory) -> None:
    keeper = make_durable_ws(None, projections=[ChangeLog()])  # open, idle: it keeps it
    traffic(keeper)
    keeper.catch_up()
    writer = make_durable_ws(keeper.url, projections="external")
    assert writer.forget("kim-55", reason="ticket 313").dropped == []
    keeper.catch_up()  # honours the forget (no purge hook: folded again from 0)
    kept = ChangeLog.rows_of(keeper)
    assert kept and not any(SECRET in change for _, change in kept)
    keeper.rebuild(["change_log"])
    assert ChangeLog.rows_of(keeper) == kept
    # Closed, it keeps it no more: the next forget drops what has not passed it.
    keeper.close()
    embedded = make_durable_ws(keeper.url)  # keeps the built-in projections, not this one
    embedded.identify("tablet", "lee", {"city": "ZQX-paris"})
    assert embedded.forget("lee", reason="ticket 314").dropped == ["change_log"]


def test_a_registered_process_builds_a_dropped_projection_afresh(
        make_durable_ws: WorkspaceFactory) -> None:
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    traffic(keeper)
    keeper.catch_up()
    # Its keep released behind its back (as a lost PostgreSQL session would): dropped; its
    # next catch-up keeps it again and builds it afresh.
    keeper._services.projector.custom.tables.close()
    writer = make_durable_ws(keeper.url, projections="external")
    assert writer.forget("kim-55", reason="ticket 313").dropped == ["change_log"]
    keeper.catch_up()
    assert "change_log" in tracked(keeper)
    rows = ChangeLog.rows_of(keeper)
    assert len(rows) == keeper.log.head() - 1 and not any(SECRET in c for _, c in rows)


def test_forget_from_the_terminal_says_which_projections_it_dropped(
        make_durable_ws: WorkspaceFactory, capsys: pytest.CaptureFixture[str]) -> None:
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    traffic(keeper)
    keeper.catch_up()
    keeper.close()
    assert main(["--db", keeper.url, "forget", "kim-55", "--reason", "ticket 313"]) == 0
    err = capsys.readouterr().err
    assert "'change_log'" in err and "dropped" in err and "built afresh" in err


def test_a_checkpoint_a_reader_holds_back_is_owed_until_it_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_scrub, "WAIT_SECONDS", 0.2)
    monkeypatch.setattr(sqlite_scrub, "RETRY_SECONDS", 0.0)
    path = tmp_path / "identity.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        traffic(ws)
        with closing(sqlite3.connect(path, isolation_level=None)) as backup:
            backup.execute("BEGIN")
            backup.execute("SELECT count(*) FROM idstitch_rows").fetchall()  # a snapshot held
            report = ws.forget("kim-55", reason="ticket 313")
            assert not report.scrubbed
            assert SECRET.encode() in path.read_bytes()  # the old page, not copied over yet
            backup.execute("COMMIT")
        ws.identify("desk", "lee")  # the next commit pays what was owed
        assert not in_files(f"sqlite:///{path}")
        assert ws.forget("sam", reason="ticket 314").scrubbed
