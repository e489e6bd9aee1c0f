"""Issue 17: a command and the read after it make few statements. A catch-up reads the log's
head once for every projection, and never reads again the events it already folded without a
row changing (another projection's events, left uncommitted up to LAG_LIMIT).

Counted on a real SQLite file with sqlite3's trace callback: what these tests pin is which
statements run, not how long they take."""

from __future__ import annotations

from pathlib import Path

import idstitch
from idstitch.workspace import Workspace


def identified(ws: Workspace, n: int, devices: int, users: int) -> None:
    """``n`` identifies going round ``devices`` devices and ``users`` users (identity events
    only: the device attributes see none of them)."""
    for i in range(n):
        ws.identify(f"d{i % devices}", f"u{i % users}", {"n": i})


def test_a_read_after_a_write_reads_no_event_and_the_head_once(
        tmp_path: Path, traced: list[str]) -> None:
    with idstitch.open(f"sqlite:///{tmp_path / 'ws.db'}") as ws:
        identified(ws, 20, 4, 5)
        ws.identify("d1", "u3", {"n": 99})
        traced.clear()
        profile = ws.profile("u3")
        assert profile is not None and profile.attributes["n"] == 99
        reads = [s for s in traced if "FROM idstitch_events" in s]
        assert [s for s in reads if not s.startswith("SELECT (SELECT max(position)")] == []
        assert len(reads) == 1  # the head, once for every projection
        # ... in the same statement as every projection's tracking row.
        assert "idstitch_tracking" in reads[0]
        assert not [s for s in traced if s.startswith("SELECT name, position, meta FROM "
                                                       "idstitch_tracking")]


def test_a_command_does_not_read_back_what_it_folded_before(
        tmp_path: Path, traced: list[str]) -> None:
    with idstitch.open(f"sqlite:///{tmp_path / 'ws.db'}") as ws:
        identified(ws, 20, 4, 5)
        traced.clear()
        ws.identify("d2", "u1", {"n": 100})
        # The device attributes' position is behind (it met no event of its own), yet
        # nothing it already passed over is read from the log again.
        assert [s for s in traced if s.startswith("SELECT position, state FROM idstitch_events")] == []
        profile = ws.profile("u1")
        assert profile is not None and profile.attributes["n"] == 100


def test_another_writer_commit_is_still_seen(tmp_path: Path) -> None:
    # The verified stretch is this process's own knowledge: another process's commit of the
    # same projection moves the committed position, and this one reads from there again.
    url = f"sqlite:///{tmp_path / 'ws.db'}"
    with idstitch.open(url) as one, idstitch.open(url) as two:
        for i in range(10):
            one.identify(f"d{i % 3}", f"u{i % 4}", {"n": i})
        two.set_device_attributes("d1", {"color": "red"})
        one.identify("d0", "u0", {"n": 50})
        device = one.device("d1")
        assert device is not None and device.attributes == {"color": "red"}
        assert one.profile("u0") == two.profile("u0")


def test_a_read_with_nothing_to_fold_answers_from_its_first_snapshot(
        tmp_path: Path, traced: list[str]) -> None:
    with idstitch.open(f"sqlite:///{tmp_path / 'ws.db'}") as ws:
        identified(ws, 6, 3, 2)
        traced.clear()
        profile = ws.profile("u1")
        assert profile is not None and profile.attributes["n"] == 5
        # One read transaction, whose first statement reads the head with the tracking rows:
        # no catch-up (a statement and a transaction of its own) before it.
        assert traced[0] == "BEGIN" and traced[1].startswith("SELECT (SELECT max(position)")
        assert traced.count("BEGIN") == 1 and traced[-1] == "COMMIT"


def test_a_read_behind_another_writer_catches_up_then_catches_up_first_for_a_while(
        tmp_path: Path, traced: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'ws.db'}"
    with idstitch.open(url) as ws, idstitch.open(url, projections="external") as other:
        ws.identify("d1", "u1", {"plan": "free"})
        other.identify("d2", "u2", {"plan": "team"})  # appended, folded by nobody yet
        traced.clear()
        u2 = ws.profile("u2")
        assert u2 is not None and u2.attributes == {"plan": "team"}  # read its writes too
        # The snapshot alone found the projections behind: caught up, then read again.
        assert traced[0] == "BEGIN" and "BEGIN IMMEDIATE" in traced
        traced.clear()
        u1 = ws.profile("u1")
        assert u1 is not None and u1.attributes == {"plan": "free"}
        # For a while after such a miss, a read catches up first (its check, then the
        # snapshot), rather than try a snapshot that another writer would mostly make miss.
        assert traced[0].startswith("SELECT (SELECT max(position)") and traced[1] == "BEGIN"
