"""The ingest's projecting child folds custom projections too (issue 14, section 2)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import idstitch
from idstitch.testing_projections import ChangeLog, ChildOnly, Tagged
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def messages(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Identifies (anonymous and named, merges), traits and device updates with tokens."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        device = f"d{rng.randrange(80)}"
        at = (T0 + timedelta(seconds=i)).isoformat()
        if rng.random() < 0.6:
            msg: dict[str, Any] = {"type": "identify", "anonymousId": device, "timestamp": at,
                                   "traits": {f"a{rng.randrange(4)}": i}, "messageId": f"m{i}",
                                   "context": {"device": {"id": device}}}
            if rng.random() < 0.4:
                msg["userId"] = f"u{rng.randrange(30)}"
        else:
            msg = {"type": "track", "event": "Device Created or Updated", "anonymousId": device,
                   "properties": {"c": i}, "messageId": f"m{i}", "timestamp": at,
                   "context": {"device": {"id": device, "token": f"tok{rng.randrange(50)}",
                                          "type": "ios"}}}
        out.append(msg)
    return out


def test_the_child_folds_a_custom_projection_during_a_large_ingest(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = make_durable_ws(projections=[ChildOnly(), ChangeLog()])
    # ChildOnly raises in this process: were the parent to fold any of it, the failure would
    # surface on catch_up below.
    monkeypatch.setenv("IDSTITCH_TEST_PARENT", str(os.getpid()))
    report = ws.ingest(messages(3000), batch_size=200, parallel=True)
    assert report.accepted > 2900
    assert ws.catch_up() == ws.log.head()
    rows = ws.projection_db("child_only").query("SELECT position, pid FROM child_only")
    assert sorted(p for p, _ in rows) == list(range(1, ws.log.head() + 1))
    assert {pid for _, pid in rows} - {os.getpid()} and os.getpid() not in {p for _, p in rows}
    logged = ws.projection_db("change_log").query("SELECT count(*) FROM change_log")
    assert logged == [(ws.log.head(),)]


def test_a_projection_the_child_cannot_import_is_named_and_folded_here(
        make_durable_ws: WorkspaceFactory) -> None:
    class LocalCount(idstitch.Projection):
        """Defined in a function: no other process can import it by name."""

        name = "local_count"

        def setup(self, db: idstitch.ProjectionDB) -> None:
            db.execute("CREATE TABLE n (k INTEGER PRIMARY KEY, v BIGINT)")
            db.execute("INSERT INTO n VALUES (1, 0)")

        def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
            db.execute("UPDATE n SET v = v + 1 WHERE k = 1")

    ws = make_durable_ws(projections=[LocalCount()])
    with pytest.warns(RuntimeWarning, match="local_count.*cannot be folded by the projecting child"):
        ws.ingest(messages(600), batch_size=100, parallel=True)
    assert ws.projection_db("local_count").query("SELECT v FROM n") == [(ws.log.head(),)]


def test_an_instance_with_state_of_its_own_is_folded_here(
        make_durable_ws: WorkspaceFactory) -> None:
    # The child builds its own instance by name, without arguments: it would tag every row
    # "default", and the rows would differ from this process's folds and from a rebuild.
    ws = make_durable_ws(projections=[Tagged(tag="mine")])
    with pytest.warns(RuntimeWarning, match="tagged.*attributes differ"):
        ws.ingest(messages(600), batch_size=100, parallel=True)
    rows = ws.projection_db("tagged").query("SELECT tag, count(*) FROM tagged GROUP BY tag")
    assert rows == [("mine", ws.log.head())]
