"""A projecting child that stops (SIGSTOP) never hangs its ingest or rebuild (issue 16, item 6).

The child is a real second interpreter on a real SQLite file or PostgreSQL schema. A stopped
process never acts on SIGTERM: the parent must notice the stall, escalate to SIGKILL, fold what
the child did not, and return the same result as an ingest without the child, within a bounded
time, leaving no process behind.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from idstitch.adapters import file_lock, sqlite
from idstitch.domain.device import anonymous_id_for, anonymous_person_id

import idstitch
from idstitch.errors import StoreError
from idstitch.service import background, ingest
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
BOUND_SECONDS = 60.0
"""Far more than the stall (1 s) + SIGTERM grace (1 s) + the parent's own folding."""


def identify(device: str, user: str | None, traits: dict[str, Any], n: int) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "identify", "anonymousId": device, "traits": traits,
                           "messageId": f"m{n}", "timestamp": (T0 + timedelta(seconds=n)).isoformat(),
                           "context": {"device": {"id": device}}}
    if user is not None:
        msg["userId"] = user
    return msg


def traffic(n: int, offset: int) -> list[dict[str, Any]]:
    return [identify(f"d{i % 97}", f"u{i % 41}" if i % 3 else None, {"n": i, "plan": f"p{i % 5}"},
                     offset + i) for i in range(n)]


SYNC = identify("cio-tablet", f"cio_{anonymous_person_id(anonymous_id_for('cio-phone', 0))}",
                {"via": "cio"}, 5000)
"""A cio_ id: checking it needs the projections caught up, so the ingest waits for the child
to have committed everything before it (then the child sits between transactions)."""
MESSAGES = [identify("cio-phone", "u-cio", {}, 0), *traffic(400, 1), SYNC, *traffic(600, 6000)]
FREEZE_AT = MESSAGES.index(SYNC) + 1


def run_bounded(job: Callable[[], Any], child: Callable[[], int | None]) -> Any:
    """Run ``job`` in a thread; fail if it does not end within BOUND_SECONDS (then kill the
    child from here, so that the test itself ends)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = job()
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(BOUND_SECONDS)
    if thread.is_alive():
        pid = child()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        thread.join(30)
        pytest.fail(f"still running after {BOUND_SECONDS} s with a stopped child")
    if "error" in outcome:
        raise outcome["error"]
    assert time.monotonic() - started < BOUND_SECONDS
    return outcome["result"]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def quick_stall(monkeypatch: pytest.MonkeyPatch) -> list[background.BackgroundProjector]:
    """Short stall and grace periods; records every child started."""
    monkeypatch.setattr(background, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(background, "TERM_GRACE_SECONDS", 1.0)
    started: list[background.BackgroundProjector] = []
    real = background.BackgroundProjector

    def recording(*args: Any, **kwargs: Any) -> background.BackgroundProjector:
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(background, "BackgroundProjector", recording)
    return started


def pid_of(started: list[background.BackgroundProjector]) -> int | None:
    proc = started[0]._proc if started else None
    return None if proc is None else proc.pid


def test_an_ingest_whose_child_is_stopped_finishes_with_the_same_result(
    make_durable_ws: WorkspaceFactory, quick_stall: list[background.BackgroundProjector]
) -> None:
    here = make_durable_ws(None)
    there = make_durable_ws(None)
    expected = here.ingest(MESSAGES, batch_size=100, parallel=False)

    def stream() -> Iterator[dict[str, Any]]:
        for index, message in enumerate(MESSAGES):
            if index == FREEZE_AT:
                pid = pid_of(quick_stall)
                assert pid is not None and quick_stall[0].failed is None  # it did the work so far
                os.kill(pid, signal.SIGSTOP)
            yield message

    report = run_bounded(lambda: there.ingest(stream(), batch_size=100, parallel=True),
                         lambda: pid_of(quick_stall))
    assert len(quick_stall) == 1
    assert quick_stall[0].failed is not None  # taken for stuck, and ended
    pid = pid_of(quick_stall)
    assert pid is not None and gone(pid)  # ended and reaped: no zombie, no stopped process
    assert report == expected
    assert there.rows.position("identity") == there.log.head() == here.log.head()
    assert there.dump() == here.dump()


STOPS_ITSELF = ("print('ready', flush=True); import os, signal; "
                "os.kill(os.getpid(), signal.SIGSTOP)")
"""A child that answers it is ready, then stops: it holds no lock and never acts on SIGTERM."""


def test_a_rebuild_whose_child_is_stopped_replays_here(
    make_durable_ws: WorkspaceFactory, quick_stall: list[background.BackgroundProjector],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = make_durable_ws(None)
    ws.ingest(MESSAGES, batch_size=100, parallel=False)
    before = ws.dump()
    monkeypatch.setattr(background, "COMMAND", [sys.executable, "-c", STOPS_ITSELF])
    position = run_bounded(lambda: ws.rebuild(parallel=True), lambda: pid_of(quick_stall))
    assert position == ws.log.head()
    assert len(quick_stall) == 1 and quick_stall[0].failed is not None
    pid = pid_of(quick_stall)
    assert pid is not None and gone(pid)
    assert ws.dump() == before


def test_closing_a_stopped_child_takes_the_grace_period_not_forever(
    quick_stall: list[background.BackgroundProjector], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "COMMAND", [sys.executable, "-c", STOPS_ITSELF])
    helper = background.BackgroundProjector("memory:", [])
    # Ready, then silent for STALL_SECONDS: taken for stuck and ended.
    assert not run_bounded(lambda: helper.wait_for(1), lambda: pid_of([helper]))
    proc = helper._proc
    assert proc is not None and proc.returncode == -signal.SIGKILL
    started = time.monotonic()
    helper.close()  # again: nothing left to wait for
    assert time.monotonic() - started < 1.0


HOLDS_THE_WRITE_LOCK = (
    "import fcntl, os, signal, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
    "os.kill(os.getpid(), signal.SIGSTOP)")
"""A writer stopped in the middle of a write: it holds the SQLite file's write lock for good."""


def test_a_writer_stopped_holding_the_sqlite_write_lock_does_not_hang_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every idstitch write transaction on a SQLite file queues for the lock file beside it
    (projection commits, the batch append, the lease wants): a holder that never lets go makes
    it a StoreError after WRITE_LOCK_SECONDS, not a wait without end."""
    monkeypatch.setattr(file_lock, "WRITE_LOCK_SECONDS", 1.0)
    path = tmp_path / "identity.db"
    ws = idstitch.open(f"sqlite:///{path}")
    rows = ws.rows
    assert isinstance(rows, sqlite.SqliteProjectionStore)
    try:
        ws.identify("d1", "u1", {"plan": "free"})
        before = ws.dump()
        holder = subprocess.Popen([sys.executable, "-c", HOLDS_THE_WRITE_LOCK,
                                   f"{path}-write.lock"], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            for _ in range(2):  # and again: an abandoned wait leaves nothing behind
                with pytest.raises(StoreError, match="write lock"):
                    run_bounded(lambda: rows.want("identity", 99), lambda: holder.pid)
                assert rows.wanted("identity") == 0 and ws.dump() == before
        finally:
            holder.kill()
            holder.wait(10)
        # The holder is gone: writes go through again.
        rows.want("identity", 99)
        assert rows.wanted("identity") == 99
        ws.identify("d1", "u1", {"plan": "pro"})
        assert ws.profile("u1").attributes == {"plan": "pro"}  # type: ignore[union-attr]
    finally:
        ws.close()


@contextmanager
def caught_up_child(tmp_path: Path) -> Iterator[tuple[Workspace, background.BackgroundProjector]]:
    """A SQLite workspace that does not catch up itself, 300 messages in it, and a projecting
    child that has folded them; afterwards, the rows are at the head once the child has
    gone."""
    ws = idstitch.open(f"sqlite:///{tmp_path / 'identity.db'}", auto_catch_up=False)
    try:
        ws.ingest(traffic(300, 0), parallel=False)
        helper = ws._services.projector.helper()
        try:
            assert helper.wait_for(ws.log.head())  # ready, and caught up
            yield ws, helper
            assert helper.failed is None
        finally:
            helper.close()
        assert ws.rows.position("identity") == ws.log.head()
    finally:
        ws.close()


def answer(helper: background.BackgroundProjector, seconds: float = 30) -> int | None:
    """The child's answer to the ``idle`` question out, waited for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    answered = None
    while answered is None and time.monotonic() < deadline:
        time.sleep(0.01)
        answered = helper.idle()
    return answered


def test_the_child_answers_requests_that_reach_it_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ending`` and the wait that follows it can sit in the pipe together (the child was
    busy, or descheduled): the child must see the second request, not leave it in a buffer
    that ``select`` does not see (the parent would wait STALL_SECONDS, then fold itself)."""
    monkeypatch.setattr(background, "STALL_SECONDS", 5.0)
    with caught_up_child(tmp_path) as (ws, helper):
        ws.ingest(traffic(300, 1000), parallel=False)
        pid = pid_of([helper])
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # both requests arrive while it cannot read
        helper.ending()
        threading.Timer(0.3, os.kill, (pid, signal.SIGCONT)).start()
        assert helper.wait_for(ws.log.head())


def test_asking_whether_the_child_is_ready_never_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that said a warning and is still starting is not ready yet: the question is
    answered at once (it decides whether a short ingest projects here), the warning said."""
    monkeypatch.setattr(background, "COMMAND", [
        sys.executable, "-c", "print('warning cannot fold x', flush=True); import time; "
        "time.sleep(60)"])
    helper = background.BackgroundProjector("memory:", [])
    try:
        time.sleep(0.5)  # the warning is written by now
        began = time.monotonic()
        with pytest.warns(RuntimeWarning, match="cannot fold x"):
            assert not helper.ready()
        assert time.monotonic() - began < 1.0
        assert helper.failed is None
    finally:
        helper.close()


def test_the_child_says_when_it_has_folded_everything_committed(tmp_path: Path) -> None:
    """``idle``: the child answers once it has nothing left to fold, with the head it reached
    (the ingest commits early on that answer); a wait for a position that follows an
    unanswered question is not confused by the answer."""
    with caught_up_child(tmp_path) as (ws, helper):
        ws.ingest(traffic(300, 1000), parallel=False)  # appended, not folded
        head = ws.log.head()
        assert helper.idle() is None  # asks; never waits for the answer
        assert answer(helper) == head  # it folded what was appended before it was asked
        assert helper.idle() is None  # each answer once: this asks again
        ws.ingest(traffic(50, 2000), parallel=False)
        assert helper.wait_for(ws.log.head())  # the answer to that question is skipped


def test_an_ingest_commits_early_when_its_child_is_idle(
    make_durable_ws: WorkspaceFactory
) -> None:
    """While the child waits for the batch being gathered, the ingest commits what it has (a
    full batch would leave the child idle, then fold it while the recording has ended)."""
    here = make_durable_ws(None)
    there = make_durable_ws(None)
    messages = traffic(9000, 0)
    expected = here.ingest(messages, parallel=False)
    read = 0
    committed_while_reading: list[int] = []

    def stream() -> Iterator[dict[str, Any]]:
        nonlocal read
        for i, message in enumerate(messages):
            if i == 7000:
                # The child has started (it folds when the ingest next speaks to it), and
                # the first batch is committed: 5 s, for a loaded machine (3 s once was not).
                time.sleep(5)
            read = i + 1
            yield message

    def progress(count: int) -> None:
        if read < len(messages):
            committed_while_reading.append(count)

    report = there.ingest(stream(), progress=progress, parallel=True)
    assert report == expected
    assert there.dump() == here.dump()
    # The first batch (4,000 messages) starts the child; the second is committed early, well
    # before its 20,000 messages and before the input ends, once the child has said it is idle.
    first, *early = committed_while_reading
    assert first == ingest.CHILD_START_MESSAGES
    assert early and ingest.EARLY_COMMIT_MESSAGES <= early[0] < 5000


def test_an_idle_answer_older_than_the_ingest_s_last_commit_is_asked_again(
    tmp_path: Path
) -> None:
    """The child answered for a head the ingest has since committed past (it is folding the
    newer batch): the ingest does not take that answer for idleness, asks again, and takes
    the answer that comes once the child has folded its last commit."""
    with caught_up_child(tmp_path) as (ws, helper):
        child = ingest._ChildProjects(ws._services.projector, helper)
        child.committed(ws.log.head())  # the question, for the head folded already
        assert helper._proc is not None and helper._proc.stdout is not None
        # Its answer is in the pipe, unread, when the ingest commits more.
        assert select.select([helper._proc.stdout.fileno()], [], [], 30)[0]
        ws.ingest(traffic(300, 1000), parallel=False)
        child.committed(ws.log.head())
        assert not child.idle()  # the answer is for the older head: asked again
        deadline = time.monotonic() + 30
        while not child.idle():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert helper.wait_for(ws.log.head())  # folded is not committed: the ingest's last wait
