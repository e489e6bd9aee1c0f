"""How a custom projection's catch-up runs its handlers: with the cyclic collector paused (and
no reference cycles left by the fold), and statements that leave no read open behind them."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, ClassVar

import idstitch
from idstitch.testing_projections import ChangeLog, Counter
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


class Witness(idstitch.Projection):
    """Records whether the collector ran while each Change was handled."""

    name = "witness"
    collecting: ClassVar[list[bool]] = []

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE seen (position BIGINT PRIMARY KEY)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        type(self).collecting.append(gc.isenabled())
        db.execute("INSERT INTO seen (position) VALUES (?)", (change.position,))


def writes(ws: Workspace, n: int, tag: str) -> None:
    """Identifies (anonymous devices merged into known persons), attribute changes, tokens."""
    for i in range(n):
        device = f"{tag}{i}"
        ws.set_profile_attributes(device, {"plan": f"p{i}"})
        ws.identify(device, f"user-{i % 4}", {"email": f"u{i % 4}@example.com", "n": i})
        ws.register_device_token(device, f"token-{tag}-{i}", platform="ios")


def test_handlers_run_with_the_collector_paused_and_restored(make_ws: WorkspaceFactory) -> None:
    Witness.collecting = []
    ws = make_ws(projections=[Witness()])
    writes(ws, 5, "d")
    assert gc.isenabled()
    ws.catch_up()
    assert Witness.collecting and not any(Witness.collecting)
    assert gc.isenabled()  # the state it found comes back


def test_a_catch_up_from_zero_makes_no_reference_cycles(make_ws: WorkspaceFactory) -> None:
    ws = make_ws(projections=[Counter()])
    writes(ws, 3, "warm")  # first uses (decoders, statements) made once per process
    ws.catch_up()
    writes(ws, 40, "d")
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        ws.run_projection(ChangeLog)
        found = gc.collect()
    finally:
        if was_enabled:
            gc.enable()
    assert len(ChangeLog.rows_of(ws)) == ws.log.head()
    assert found == 0


def test_a_query_run_as_a_statement_leaves_no_read_open(
        make_durable_ws: WorkspaceFactory) -> None:
    first = make_durable_ws(projections=[Counter()])
    first.identify("d1", "u1")
    # A SELECT through execute(): its rows are not returned, and its read must end with it
    # (the reader is kept, with its statements' cursor).
    reader = first.projection_db("counter")
    reader.execute("SELECT event, n FROM counts")
    second = make_durable_ws(first.url, projections=[Counter()])
    second.identify("d2", "u2")
    second.catch_up()
    counted: list[tuple[Any, ...]] = first.projection_db("counter").query(
        "SELECT sum(n) FROM counts")
    assert counted == [(2,)]
    assert reader.query("SELECT sum(n) FROM counts") == [(2,)]
