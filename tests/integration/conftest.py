"""Helpers of the integration tests: where one process records a person-level decision (a
forget, an unmerge) and another keeps custom projections, where the decision stands, and a
step of the deciding process held until the test releases it; the SQL statements a test's
SQLite connections run (``traced``); a built-in-style projection whose fold fails."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
from idstitch.domain.events import DECISIONS_STREAM, DeviceEvent, Identified
from idstitch.projections.base import RowProjection
from idstitch.projections.store import LoggedEvent

from idstitch.testing_projections import ChangeLog
from idstitch.workspace import Workspace


def decided(ws: Workspace, kind: type[DeviceEvent]) -> int:
    """The position of the (one) decision of this kind in the log."""
    [(pos, _)] = ws.log.read_spans([(DECISIONS_STREAM, 1, None)], frozenset({kind}))
    return pos


class Held:
    """The deciding process stopped right before a step that follows its decision (the purge,
    the rebuild, the replay), until released; what each run of the step returned."""

    def __init__(self) -> None:
        self.reached, self.release = threading.Event(), threading.Event()
        self.results: list[Any] = []

    def wrap(self, step: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            assert self.release.wait(timeout=60), "never released"
            done = step(*args, **kwargs)
            self.results.append(done)
            return done
        return held


@contextmanager
def deciding(held: Held, decide: Callable[[], Any]) -> Iterator[None]:
    """Run ``decide`` (a forget, an unmerge) in a thread of its own until it reaches the held
    step; the block runs meanwhile. On leaving, the step is released and the decision must end
    without an error."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            decide()
        except BaseException as e:  # reported by the test thread
            failed.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    assert held.reached.wait(timeout=30)
    try:
        yield
    finally:
        held.release.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and failed == []


def waits_right_before(keeper: Workspace, decision: int) -> None:
    """A catch-up of the keeper raises nothing and leaves its change_log right before the
    decision, with the lag saying so."""
    keeper.catch_up()  # no error: it waits
    assert ChangeLog.position_of(keeper) == decision - 1
    lag = next(s.lag for s in keeper.projection_status() if s.name == ChangeLog.name)
    assert lag >= 1


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the SQLite connections opened during the test run, in order."""
    statements: list[str] = []
    connect = sqlite3.connect

    def tracing(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", tracing)
    return statements


class Exploding(RowProjection):
    """A projection whose fold fails on an identify of ``boom`` (a disk that fills up, say)."""

    name = "exploding"
    row_types: ClassVar[dict[str, type[Any]]] = {"xx": str}
    event_types = frozenset({Identified})

    def apply_all(self, unit: Any, events: Sequence[LoggedEvent]) -> None:
        if any(isinstance(ev, Identified) and ev.user_id == "boom" for _, ev in events):
            raise RuntimeError("no space left on device")
