"""A command's rows commit with its events (SQLite): the identity and device-attribute rows of a
single command's events are written inside the append's transaction, so one durable commit
makes both (``AppendCheck.landed``). Where they cannot be (the projections are behind the log,
a fold fails), nothing of them is written there and the catch-up after the append folds them,
as it always did.

Counted on real SQLite files with sqlite3's trace callback."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import IdentityProjection

import idstitch
from idstitch import bootstrap
from idstitch.errors import WriteLanded
from idstitch.workspace import Workspace

from .conftest import Exploding


def tracking(path: Path) -> tuple[int, dict[str, int]]:
    """The log's head and every projection's committed position, read by another connection."""
    with sqlite3.connect(path) as conn:
        head = conn.execute("SELECT max(rowid) FROM stored_events").fetchone()[0]
        rows = dict(conn.execute("SELECT name, position FROM idstitch_tracking").fetchall())
    return head, rows


def commits(statements: Sequence[str]) -> int:
    return sum(1 for s in statements if s == "COMMIT")


def test_a_command_commits_its_events_and_rows_in_one_transaction(
        tmp_path: Path, traced: list[str]) -> None:
    path = tmp_path / "ws.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        ws.identify("phone", "ann", {"plan": "free"})
        ws.set_device_attributes("phone", {"color": "red"})
        traced.clear()
        position = ws.identify("phone", "ann", {"plan": "pro"})
        assert commits(traced) == 1
        landed = traced[traced.index("SAVEPOINT idstitch_landed"):]
        assert any(s.startswith("INSERT INTO idstitch_rows") for s in landed)
        assert landed.index("RELEASE idstitch_landed") < landed.index("COMMIT")
        # Committed: another connection sees the rows at the command's position.
        head, positions = tracking(path)
        assert head == position and positions["identity"] == position
        profile = ws.profile("ann")
        assert profile is not None and profile.attributes["plan"] == "pro"


def test_a_command_behind_an_appending_only_writer_folds_both_after_its_append(
        tmp_path: Path, traced: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'ws.db'}"
    with idstitch.open(url) as ws, idstitch.open(url, projections="external") as other:
        ws.identify("phone", "ann")
        other.identify("tablet", "bob", {"plan": "team"})  # appended, folded by nobody yet
        traced.clear()
        ws.identify("phone", "ann", {"plan": "pro"})
        # Not landed (the rows are behind the log): the savepoint undone, then the catch-up
        # after the append commits the rows of both commands (a commit each projection).
        assert "ROLLBACK TO idstitch_landed" in traced
        assert commits(traced) > 1
        head, positions = tracking(tmp_path / "ws.db")
        assert positions["identity"] == head
        bob = ws.profile("bob")
        assert bob is not None and bob.attributes == {"plan": "team"}


def test_a_fold_failing_inside_the_append_undoes_every_row_and_keeps_the_events(
        tmp_path: Path, traced: list[str]) -> None:
    path = tmp_path / "ws.db"
    ws = Workspace(bootstrap.build(f"sqlite:///{path}", projections=[
        IdentityProjection(), DeviceAttributesProjection(), Exploding()]))
    try:
        ws.identify("phone", "ann")
        traced.clear()
        with pytest.raises(WriteLanded) as raised:
            ws.identify("phone", "boom", {"plan": "pro"})
        # The identity rows folded before the failure were undone with it (all land or
        # none), the events committed all the same, and the catch-up after the append folded
        # the built-in projections again, which the failing one never stops.
        assert "ROLLBACK TO idstitch_landed" in traced
        head, positions = tracking(path)
        assert head == raised.value.position
        assert positions["identity"] == head and positions.get("exploding", 0) < head
    finally:
        ws.close()
