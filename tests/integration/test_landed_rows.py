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
        head = conn.execute("SELECT max(position) FROM idstitch_events").fetchone()[0]
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
        # The policy check's tracking read is the transaction's first statement, under the
        # write lock (no read transaction of its own before it).
        began = traced.index("BEGIN IMMEDIATE")
        assert traced[began + 1].startswith("SELECT name, position, meta FROM idstitch_tracking")
        assert not any("idstitch_tracking" in s for s in traced[:began])
        landed = traced[traced.index("SAVEPOINT idstitch_landed"):]
        assert any(s.startswith("INSERT INTO idstitch_rows") for s in landed)
        # The tracking rows read at the start stand for the compare-and-set: not locked again.
        assert not any(s.startswith("INSERT INTO idstitch_tracking") for s in landed)
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
        # Not landed (the rows are behind the log): nothing written inside the append (so
        # nothing undone, every cache kept), then the catch-up after it commits the rows of
        # both commands (a commit each projection).
        landing = traced[traced.index("SAVEPOINT idstitch_landed"):
                         traced.index("RELEASE idstitch_landed")]
        assert not [s for s in landing if s.startswith(("INSERT", "UPDATE", "ROLLBACK"))]
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


class Interrupting:
    """The store's connection, raising KeyboardInterrupt (a signal's exception) once, when the
    append releases the savepoint of its landed rows: after the rows were folded, before the
    append knows it."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real, self.armed = real, True

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if self.armed and sql == "RELEASE idstitch_landed":
            self.armed = False
            raise KeyboardInterrupt
        return self.real.execute(sql, *args)  # type: ignore[arg-type]


def test_an_interrupt_after_the_rows_landed_forgets_what_was_folded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ws.db'}"
    with idstitch.open(url) as ws, idstitch.open(url, projections="external") as other:
        ws.identify("phone", "ann", {"plan": "free"})
        ws.set_device_attributes("phone", {"color": "red"})
        store = ws._services.stores.rows
        store._conn = Interrupting(store._conn)  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            ws.identify("phone", "ann", {"plan": "pro"})
        # Rolled back whole; the position it had is handed out again, to another writer.
        position = other.set_device_attributes("tablet", {"color": "green"})
        tablet = ws.device("tablet")
        assert tablet is not None and tablet.attributes == {"color": "green"}
        assert ws.set_device_attributes("phone", {"color": "blue"}) == position + 1
        profile = ws.profile("ann")
        assert profile is not None and profile.attributes == {"plan": "free"}
