"""A custom projection whose tables were made after an unmerge or a forget is not folded again
from 0 when a reopened workspace meets that decision (its tracking keeps when the tables were
made), on SQLite and PostgreSQL; a fold by a process that cannot vouch for its keys forgets
that, and a store from before it is folded again as it always was."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import msgspec
import pytest
from idstitch.projections import custom_batches
from idstitch.projections.custom_made import MadeAfter

import idstitch
from idstitch.errors import ProjectionFailed
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
QUERY = "SELECT position, change FROM recorder ORDER BY position"


class Recorder(idstitch.Projection):
    """Every Change as JSON by position (no purge hook: a forget folds it again from 0),
    counting its setups and the positions it is handed; fails from ``fail_from`` on."""

    name = "recorder"
    setups: ClassVar[int] = 0
    handled: ClassVar[list[int]] = []
    fail_from: ClassVar[int | None] = None

    def setup(self, db: idstitch.ProjectionDB) -> None:
        Recorder.setups += 1
        db.execute("CREATE TABLE recorder (position BIGINT PRIMARY KEY, change TEXT NOT NULL)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        Recorder.handled.append(change.position)
        if Recorder.fail_from is not None and change.position >= Recorder.fail_from:
            raise RuntimeError("stopped here (the process ends mid-catch-up)")
        db.execute("INSERT INTO recorder VALUES (?, ?)",
                   (change.position, msgspec.json.encode(change).decode()))


@pytest.fixture(autouse=True)
def counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh counts; two positions a transaction, so a failure leaves the earlier committed."""
    monkeypatch.setattr(custom_batches, "BATCH", 2)
    monkeypatch.setattr(Recorder, "setups", 0)
    monkeypatch.setattr(Recorder, "handled", [])
    monkeypatch.setattr(Recorder, "fail_from", None)


def decided_then_half_folded(make_durable_ws: WorkspaceFactory, decision: str
                             ) -> tuple[str, int, int]:
    """A store with a merge, the decision (an unmerge or a forget) and traffic after it; then
    the projection made, and its first catch-up ended before the decision. The URL, the
    decision's position and the projection's committed position."""
    ws = make_durable_ws()
    ws.identify("phone", "ann", {"plan": "x", "email": "ann@example.com"})
    ws.identify("laptop", "bo", {"plan": "y", "email": "bo@example.com"})
    ws.set_profile_attributes("phone", {"k": 1})
    ws.set_profile_attributes("laptop", {"k": 2})
    merge_id = ws.merge_persons("ann", "bo", reason="looked alike")
    ws.set_profile_attributes("laptop", {"k": 3})
    if decision == "unmerge":
        ws.unmerge(merge_id, reason="they are not")
    else:
        ws.forget("bo", reason="erasure request")
    decided = ws.log.head()
    for n in range(4):
        ws.set_profile_attributes("phone", {"n": n})
    Recorder.fail_from = 3
    with pytest.raises(ProjectionFailed):
        ws.run_projection(Recorder)
    Recorder.fail_from = None
    committed = ws._services.projector.custom.position("recorder")
    assert Recorder.setups == 1 and 0 < committed < 3 < decided
    ws.close()
    return ws.url, decided, committed


@pytest.mark.parametrize("decision", ["unmerge", "forget"])
def test_a_reopened_workspace_does_not_refold_tables_made_after_the_decision(
        make_durable_ws: WorkspaceFactory, decision: str) -> None:
    url, decided, committed = decided_then_half_folded(make_durable_ws, decision)
    Recorder.setups, Recorder.handled = 0, []
    ws = make_durable_ws(url, projections=[Recorder()])
    # Resumed where it was committed, past the decision: never made again, nothing twice.
    assert Recorder.setups == 0
    assert Recorder.handled and min(Recorder.handled) > committed
    assert len(Recorder.handled) == len(set(Recorder.handled))
    assert max(Recorder.handled) > decided
    assert ws._services.projector.custom.position("recorder") == ws.log.head()
    folded = ws.projection_db("recorder").query(QUERY)
    ws.rebuild(["recorder"])
    assert ws.projection_db("recorder").query(QUERY) == folded


def test_a_fold_by_a_process_that_cannot_vouch_forgets_when_the_tables_were_made(
        make_durable_ws: WorkspaceFactory) -> None:
    """A process that has not dropped its keys since the tables were made may hold a key a
    forget destroyed: its fold takes away made_at, and a decision then folds them again."""
    url, decided, committed = decided_then_half_folded(make_durable_ws, "forget")
    ws = make_durable_ws(url)
    tables = ws._services.projector.custom.tables
    [tracked] = tables.versions("recorder")
    assert tracked.made_at is not None and tracked.made_at >= decided
    mine = MadeAfter(ws.log)
    assert mine.adopt({"recorder": tracked})  # dropped its keys: it may vouch
    with tables.transaction("recorder", 1) as tx:
        mine.vouch("recorder", tx)
    assert tables.versions("recorder")[0].made_at == tracked.made_at
    assert mine.skips("recorder", tracked, decided)
    with tables.transaction("recorder", 1) as tx:
        MadeAfter(ws.log).vouch("recorder", tx)  # adopted nothing: it may not
    [after] = tables.versions("recorder")
    assert after.made_at is None and after.position == committed
    assert not mine.skips("recorder", after, decided)
    Recorder.setups = 0
    again = make_durable_ws(url, projections=[Recorder()])
    assert Recorder.setups == 1  # folded again from 0 at the forget, as without made_at
    folded = again.projection_db("recorder").query(QUERY)
    again.rebuild(["recorder"])
    assert again.projection_db("recorder").query(QUERY) == folded


def test_a_store_from_before_made_at_is_folded_again_at_the_decision(
        make_durable_ws: WorkspaceFactory) -> None:
    """Tracking without the made_at table (a store from before it) opens as it is: the table
    is added, the projection resumes, and is folded again at the decision, as it always was."""
    url, decided, committed = decided_then_half_folded(make_durable_ws, "unmerge")
    before = make_durable_ws(url)
    # Behind idstitch's back, on the custom tables' own connection (SQLite or PostgreSQL).
    before._services.projector.custom.tables._connection().execute(  # type: ignore[attr-defined]
        "DROP TABLE idstitch_custom_made")
    before.close()
    Recorder.setups, Recorder.handled = 0, []
    ws = make_durable_ws(url, projections=[Recorder()])
    # Resumed where it was committed, then made again at the decision and folded from 0.
    again_at = Recorder.handled.index(min(Recorder.handled))
    assert Recorder.setups == 1 and min(Recorder.handled) == 1
    assert Recorder.handled[0] > committed and all(p < decided
                                                   for p in Recorder.handled[:again_at])
    folded = ws.projection_db("recorder").query(QUERY)
    ws.rebuild(["recorder"])
    assert ws.projection_db("recorder").query(QUERY) == folded
    [tracked] = ws._services.projector.custom.tables.versions("recorder")
    assert tracked.made_at is not None  # made again: known from now on
