"""A long catch-up of custom projections reads the log in a child process ahead of its fold
(idstitch.service.read_ahead): the same Changes as reading it here, exactly once, and the
catch-up reads the log itself whenever the child cannot serve (never started, killed)."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest
from idstitch.projections import custom_batches
from idstitch.projections.store import LoggedEvent

from idstitch.service import read_ahead
from idstitch.service.pipe_lines import ready
from idstitch.testing_projections import ChangeLog, Counter
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


def traffic(ws: Workspace) -> None:
    """Identifies that convert and merge, switches, clears, tokens, attributes, and a person
    forgotten (its events read erased): every kind of Change."""
    for i in range(40):
        device = f"d{i}"
        ws.set_profile_attributes(device, {"plan": f"p{i}"})
        ws.identify(device, f"user-{i % 4}", {"email": f"u{i % 4}@example.com", "n": i})
        ws.register_device_token(device, f"token-{i}", platform="ios")
        if i % 3 == 0:
            ws.identify(device, f"user-{(i + 1) % 4}")
        if i % 5 == 0:
            ws.clear_identify(device)
            ws.set_device_attributes(device, {"theme": {"dark": i % 2 == 0}})
    ws.forget("user-3", reason="erasure request")
    ws.identify("d1", "user-9", {"plan": "late"})


class Spy(read_ahead.ReadAhead):
    """The real read-ahead, remembered by the test; its first read waits until the child has
    opened the store (as the reads of a catch-up of many events outlast its start)."""

    made: ClassVar[list[Spy]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Spy.made.append(self)
        if self._proc is not None:
            ready(self._fd, 30)


@pytest.fixture
def reading_ahead(monkeypatch: pytest.MonkeyPatch) -> list[Spy]:
    """Every catch-up reads ahead, in frames of a few events (many frames per read)."""
    Spy.made = []
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 1)
    monkeypatch.setattr(read_ahead, "PAGE", 7)
    monkeypatch.setattr(read_ahead, "ReadAhead", Spy)
    return Spy.made


def reference(make_durable_ws: WorkspaceFactory) -> tuple[str, list[tuple[Any, ...]]]:
    """A store with the traffic, and its ChangeLog as a catch-up here reads it."""
    ws = make_durable_ws()
    traffic(ws)
    ws.run_projection(ChangeLog)
    rows = ChangeLog.rows_of(ws)
    assert len(rows) > 100  # (the forget itself is no Change of a person)
    return ws.url, rows


def test_a_catch_up_reading_ahead_folds_the_same_changes(
    make_durable_ws: WorkspaceFactory, reading_ahead: list[Spy], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 10**9)  # not while the store fills
    url, expected = reference(make_durable_ws)
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 1)
    ws = make_durable_ws(url, projections=[ChangeLog()])
    ws.rebuild(["change_log"])  # from position 0, reading ahead
    [ahead] = [a for a in reading_ahead if a.served]
    assert ahead.failed is None and ahead.served > len(expected) // 2
    # Position by position, the same Changes (erased values erased), each once: a position
    # given twice fails the projection's primary key, one missing fails the comparison.
    assert ChangeLog.rows_of(ws) == expected


def test_a_child_that_never_starts_leaves_the_reading_here(
    make_durable_ws: WorkspaceFactory, reading_ahead: list[Spy], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 10**9)
    url, expected = reference(make_durable_ws)
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 1)
    monkeypatch.setattr(read_ahead, "COMMAND", [sys.executable, "-c", "pass"])
    ws = make_durable_ws(url, projections=[ChangeLog()])
    with caplog.at_level(logging.WARNING, logger="idstitch.service.read_ahead"):
        ws.rebuild(["change_log"])
    assert reading_ahead and not any(a.served for a in reading_ahead)
    assert {a.failed for a in reading_ahead} == {"did not start"}
    assert "the read-ahead child failed (did not start)" in caplog.text  # said, not hidden
    assert ChangeLog.rows_of(ws) == expected


def test_a_child_that_stalls_is_given_up(
    make_durable_ws: WorkspaceFactory, reading_ahead: list[Spy], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child that opens the store and then sends nothing (stopped, wedged) holds the catch-up
    no longer than STALL_SECONDS: the log is read here."""
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 10**9)
    url, expected = reference(make_durable_ws)
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 1)
    monkeypatch.setattr(read_ahead, "STALL_SECONDS", 0.3)
    monkeypatch.setattr(read_ahead, "COMMAND", [
        sys.executable, "-c", "import os, time; os.write(1, b'R'); time.sleep(60)"])
    ws = make_durable_ws(url, projections=[ChangeLog()])
    began = time.monotonic()
    ws.rebuild(["change_log"])
    assert time.monotonic() - began < 10
    assert {a.failed for a in reading_ahead} == {"sent nothing in time"}
    assert ChangeLog.rows_of(ws) == expected


def test_a_child_killed_midway_leaves_the_rest_to_this_process(
    make_durable_ws: WorkspaceFactory, reading_ahead: list[Spy], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 10**9)
    url, expected = reference(make_durable_ws)
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 1)
    monkeypatch.setattr(read_ahead, "PIPE_BYTES", 4096)  # the child cannot send it all at once
    monkeypatch.setattr(custom_batches, "CHUNK", 10)  # nor a read take it all
    read = Spy.read

    def killed_after_a_page(self: Spy, after: int, limit: int) -> Sequence[LoggedEvent]:
        events = read(self, after, limit)
        if self.served and self._proc is not None:
            os.kill(self._proc.pid, signal.SIGKILL)
        return events

    monkeypatch.setattr(Spy, "read", killed_after_a_page)
    ws = make_durable_ws(url, projections=[ChangeLog()])
    ws.rebuild(["change_log"])
    [ahead] = [a for a in reading_ahead if a.served]
    assert ahead.failed == "ended early" and 0 < ahead.served < len(expected)
    assert ChangeLog.rows_of(ws) == expected


def test_a_read_behind_or_far_ahead_of_the_stream_is_read_from_the_log(
    make_durable_ws: WorkspaceFactory, reading_ahead: list[Spy], monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = make_durable_ws()
    traffic(ws)
    head = ws.log.head()
    monkeypatch.setattr(read_ahead, "SKIP_POSITIONS", 50)
    ahead = read_ahead.ReadAhead(ws.log, ws.url, head)
    try:
        first: Sequence[LoggedEvent] = []
        while not ahead.served:  # the child starting: read here meanwhile
            first = ahead.read(0, 10)
        assert [e.position for e in first] == [e.position for e in ws.log.read(0, 10)]
        again = ahead.read(0, 10)  # behind what the stream gave: from the log
        assert again == ws.log.read(0, 10) and ahead.served == 10
        on = ahead.read(first[-1].position, 5)  # lines up again
        assert on == ws.log.read(first[-1].position, 5) and ahead.served == 15
        far = head - 3  # far past what the child has sent: it is stopped, the log answers
        assert ahead.read(far, 5) == ws.log.read(far, 5)
        assert ahead.failed == "left behind: the catch-up reads far past it"
    finally:
        ahead.close()


def test_signals_that_interrupt_the_childs_writes_do_not_damage_its_stream(
    make_durable_ws: WorkspaceFactory, reading_ahead: list[Spy], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write to a full pipe that a signal interrupts returns what it wrote: the child writes
    the rest itself (through a buffered writer, frames arrived damaged)."""
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 10**9)
    url, expected = reference(make_durable_ws)
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 1)
    monkeypatch.setattr(read_ahead, "PIPE_BYTES", 4096)  # its writes block: room for signals
    monkeypatch.setattr(read_ahead, "PAGE", 60)  # frames longer than a pipe writes at once
    monkeypatch.setattr(custom_batches, "CHUNK", 10)
    monkeypatch.setattr(read_ahead, "COMMAND", [
        sys.executable, "-P", "-c", "import signal, sys; signal.signal(signal.SIGUSR1, "
        "lambda *a: None); from idstitch.reading import serve; "
        "serve(sys.stdin.buffer, sys.stdout.buffer)"])
    done = threading.Event()

    def pester() -> None:
        while not done.is_set():
            for ahead in reading_ahead:
                if ahead.flowing and ahead._proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(ahead._proc.pid, signal.SIGUSR1)
            time.sleep(0.0002)

    pesterer = threading.Thread(target=pester)
    pesterer.start()
    try:
        ws = make_durable_ws(url, projections=[ChangeLog()])
        ws.rebuild(["change_log"])
    finally:
        done.set()
        pesterer.join()
    [ahead] = [a for a in reading_ahead if a.served]
    assert ahead.failed is None and ahead.served > len(expected) // 2
    assert ChangeLog.rows_of(ws) == expected


def test_projections_at_different_positions_share_the_stream(
    make_durable_ws: WorkspaceFactory, reading_ahead: list[Spy], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One projection from 0 and another halfway: the first folds alone from the stream to
    where the second is, then both from the same pages (the runner's group path)."""
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 10**9)
    url, expected = reference(make_durable_ws)
    ws = make_durable_ws(url, projections=[ChangeLog(), Counter()])
    other = make_durable_ws(url)  # keeps neither: both are left halfway
    for i in range(60):
        other.set_profile_attributes(f"e{i}", {"plan": f"q{i}"})
        other.identify(f"e{i}", f"user-{5 + i % 4}", {"n": i})
        other.register_device_token(f"e{i}", f"token-e{i}")
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 1)
    ws.rebuild(["counter"])  # the counter from 0, the change log from halfway: one catch-up
    [ahead] = [a for a in reading_ahead if a.served]
    assert ahead.failed is None and ahead.served > len(expected)
    rows = ChangeLog.rows_of(ws)
    assert rows[:len(expected)] == expected
    assert len(rows) > len(expected) + 100
    # The counter folded every Change the log holds, the second half from the pages it
    # shared with the change log.
    events = collections.Counter(json.loads(change)["event"] for _, change in rows)
    assert dict(ws.projection_db("counter").query("SELECT event, n FROM counts")) == events
