"""Rebuild: both projections replayed from position 0, in one process or two (issue 3)."""

from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from idstitch.projections import runner
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import IdentityProjection
from idstitch.projections.identity.rows import ROW_TYPES
from idstitch.projections.runner import RunnerState, catch_up

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.service import background, projecting
from idstitch.testing import TemporaryPostgres
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def traffic(ws: Workspace, seed: int = 3, n: int = 600) -> None:
    """Identifies, switches, clears, tokens moving, custom and collected device attributes,
    some late; some devices whose first event is an attribute event."""
    rng = random.Random(seed)
    for i in range(n):
        device = f"d{rng.randrange(40)}"
        at = T0 + timedelta(seconds=i - (rng.randrange(60) if rng.random() < 0.15 else 0))
        kind = rng.random()
        if kind < 0.25:
            ws.identify(device, rng.choice([f"u{rng.randrange(15)}", f"u{rng.randrange(15)}@x.io"]),
                        {"k": i, "plan": rng.choice(["a", "b"])}, timestamp=at)
        elif kind < 0.45:
            ws.collect_device_attributes(device, {"os": str(rng.randrange(3)), "n": {"i": i}},
                                         timestamp=at)
        elif kind < 0.65:
            ws.set_device_attributes(device, {f"c{rng.randrange(3)}": i}, timestamp=at)
        elif kind < 0.8:
            ws.register_device_token(device, f"tok{rng.randrange(25)}", timestamp=at)
        elif kind < 0.9:
            ws.set_profile_attributes(device, {"score": i}, timestamp=at)
        else:
            ws.clear_identify(device, timestamp=at)


def positions(ws: Workspace) -> list[int]:
    return [ws.rows.position(p.name) for p in ws.projections]


def test_rebuild_gives_the_incremental_rows_in_one_process(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws)
    rows = ws.dump()
    assert rows["a"] and rows["d"]
    steps: list[int] = []
    assert ws.rebuild(progress=steps.append, parallel=False) == ws.log.head()
    assert ws.dump() == rows
    # Both projections replay side by side: the progress counts the log once.
    assert sum(steps) == ws.log.head()
    assert positions(ws) == [ws.log.head()] * 2


def test_parallel_rebuild_replays_device_attributes_in_the_child(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_durable_ws()
    traffic(ws)
    rows = ws.dump()

    def not_here(*args: Any) -> None:
        raise AssertionError("the device attributes were to be replayed by the child")

    # The child is another interpreter: this patch reaches only this process.
    monkeypatch.setattr(DeviceAttributesProjection, "apply_all", not_here)
    steps: list[int] = []
    ws.rebuild(progress=steps.append, parallel=True)
    assert ws.dump() == rows
    assert sum(steps) == ws.log.head()
    assert positions(ws) == [ws.log.head()] * 2


@pytest.mark.parametrize("child", ["print('ready', flush=True)", "pass",
                                   "print('ready', flush=True); import time; time.sleep(60)",
                                   "print('ready', flush=True); print('error boom', flush=True)"],
                         ids=["dies after starting", "never starts", "goes silent", "fails"])
def test_parallel_rebuild_replays_here_when_the_child_fails(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch, child: str
) -> None:
    ws = make_durable_ws()
    traffic(ws)
    rows = ws.dump()
    monkeypatch.setattr(background, "COMMAND", [sys.executable, "-c", child])
    monkeypatch.setattr(background, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(background, "START_SECONDS", 5.0)
    replayed = record_replays(monkeypatch)
    ws.rebuild(parallel=True)
    assert ws.dump() == rows
    assert positions(ws) == [ws.log.head()] * 2
    # This process replayed the device attributes itself, after the child failed.
    assert replayed == [["identity"], ["device_attributes"]]


def test_parallel_rebuild_replays_here_when_no_interpreter_can_start(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_durable_ws()
    traffic(ws, n=200)
    rows = ws.dump()
    monkeypatch.setattr(background, "COMMAND", ["/nonexistent/python"])
    replayed = record_replays(monkeypatch)
    ws.rebuild(parallel=True)
    assert ws.dump() == rows
    assert replayed == [["identity"], ["device_attributes"]]


def record_replays(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the names of each replay this process runs."""
    calls: list[list[str]] = []
    real = projecting.replay

    def recording(projections: Any, *args: Any, **kwargs: Any) -> None:
        calls.append([p.name for p in projections])
        real(projections, *args, **kwargs)

    monkeypatch.setattr(projecting, "replay", recording)
    return calls


def test_a_catch_up_of_another_process_s_events_reads_them_page_by_page(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Selected reads, pages smaller than the backlog, events of both projections mixed."""
    writer = make_durable_ws()
    reader = make_durable_ws(writer.url)
    reader.catch_up()
    traffic(writer, n=300)
    monkeypatch.setattr(runner, "PAGE_SIZE", 7)
    assert reader.catch_up() == writer.log.head()
    assert reader.dump() == writer.dump()


def test_resetting_one_projection_keeps_rows_another_commits_meanwhile(
    postgres: TemporaryPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: while one process resets the identity rows, another commits device
    attribute rows; they stay (a whole-table delete would take them too). SQLite cannot
    interleave so: its write transaction excludes every other writer from its start."""
    url = postgres.create_database(f"reset_race_{uuid.uuid4().hex[:8]}")
    with idstitch.open(url) as ws, idstitch.open(url) as other:
        reset_while_another_commits(ws, other, monkeypatch)


def reset_while_another_commits(
    ws: Workspace, other: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.identify("phone", "u1", timestamp=T0)
    ws.rows.reset("device_attributes", ("a",))
    ws._services.projector.states.forget("device_attributes")
    assert ws.dump()["a"] == []
    ws.auto_catch_up = False
    ws.collect_device_attributes("tablet", {"os": "1"}, timestamp=T0)  # not projected yet
    assert ws.rows.get("a", "tablet") is None
    rows = ws.rows
    real_cursor = rows._cursor  # type: ignore[attr-defined]

    @contextmanager
    def cursor_with_a_commit_in_between(*, write: bool) -> Iterator[Any]:
        with real_cursor(write=write) as cur:
            class Interleaved:
                """The other process commits right after the reset's first statement."""

                def __init__(self) -> None:
                    self.done = False

                def __getattr__(self, name: str) -> Any:
                    return getattr(cur, name)

                def _then(self, result: Any) -> Any:
                    if not self.done:
                        self.done = True
                        catch_up(other.projections["device_attributes"],
                                 RunnerState(other.projections["device_attributes"]), other.log, other.rows)
                    return result

                def execute(self, sql: str, params: Any = None) -> Any:
                    return self._then(cur.execute(sql, params))

                def executemany(self, sql: str, params: Any) -> Any:
                    return self._then(cur.executemany(sql, params))
            yield Interleaved()

    monkeypatch.setattr(rows, "_cursor", cursor_with_a_commit_in_between)
    rows.reset("identity", list(ROW_TYPES))
    monkeypatch.undo()
    assert [key for key, _ in rows.scan("a")] == ["tablet"]
    assert ws.rows.position("device_attributes") == ws.log.head()


def test_parallel_rebuild_needs_a_store_another_process_can_open() -> None:
    ws = idstitch.open("memory:")
    traffic(ws, n=50)
    rows = ws.dump()
    with pytest.raises(InvalidCommand, match="parallel"):
        ws.rebuild(parallel=True)
    assert ws.dump() == rows


def test_rebuilding_one_projection_leaves_the_other_alone(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws, n=200)
    rows = ws.dump()
    identity_meta = ws.rows.meta("identity")
    attributes_meta = ws.rows.meta("device_attributes")
    ws.rebuild(names=["device_attributes"])
    assert ws.rows.meta("identity") == identity_meta  # same epoch: never reset
    assert ws.rows.meta("device_attributes") != attributes_meta  # a new life of its rows
    assert ws.dump() == rows
    with pytest.raises(InvalidCommand, match="unknown projections"):
        ws.rebuild(names=["nope"])


def test_a_device_seen_first_through_its_attributes_has_a_person_and_times(
    make_ws: WorkspaceFactory,
) -> None:
    ws = make_ws()
    ws.collect_device_attributes("phone", {"os": "14"}, timestamp=T0)
    ws.identify("phone", "u1", timestamp=T0 + timedelta(seconds=1))
    ws.set_device_attributes("phone", {"color": "red"}, timestamp=T0 + timedelta(seconds=5))
    device = ws.device("phone")
    assert device is not None
    assert device.created_at == T0  # the attribute event created it
    assert device.updated_at == T0 + timedelta(seconds=5)  # the newest of all its events
    assert (device.attributes, device.collected) == ({"color": "red"}, {"os": "14"})
    profile = ws.profile("u1")
    assert profile is not None and [d.device_id for d in profile.devices] == ["phone"]
    rows = ws.dump()
    ws.rebuild()
    assert ws.dump() == rows


def test_device_attribute_rows_of_another_layout_are_rebuilt_on_open(
    make_durable_ws: WorkspaceFactory,
) -> None:
    ws = make_durable_ws()
    traffic(ws, n=200)
    expected = ws.dump()
    with ws.rows.transaction("device_attributes") as tx:
        tx.write({("a", "d1"): b"\x93old"}, ws.log.head(), "rows=1")
    url = ws.url
    ws.close()
    reopened = make_durable_ws(url)
    assert reopened.dump() == expected
    assert reopened.projections["device_attributes"].config_of(
        reopened.rows.meta("device_attributes")) == reopened.projections["device_attributes"].meta


def test_small_working_sets_give_the_same_rows(
    make_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caches over their limit start cold (rows read back from the store): same rows."""
    expected = make_ws()
    traffic(expected)
    monkeypatch.setattr(DeviceAttributesProjection, "cache_limit", 5)
    monkeypatch.setattr(IdentityProjection, "cache_limit", 12)
    monkeypatch.setattr(runner, "PAGE_SIZE", 16)
    ws = make_ws()
    traffic(ws)
    assert ws.dump() == expected.dump()
    ws.rebuild(parallel=False)
    assert ws.dump() == expected.dump()
