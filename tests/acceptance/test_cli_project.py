"""``idstitch project`` as a process of its own, ``idstitch projections`` and ``idstitch
rebuild NAME``: kill -9 at random points of a catch-up then a restart gives what a rebuild
gives; two projecting processes, one killed, the other takes over; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import idstitch
from idstitch.testing import TemporaryPostgres
from idstitch.testing_projections import ChangeLog
from idstitch.workspace import Workspace

from .conftest import IDSTITCH, environment, idstitch_cmd

CUSTOM = "idstitch.testing_projections:ChangeLog"


@pytest.fixture(params=("sqlite", "postgres"))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store another process can open."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/identity.db"
    server: TemporaryPostgres = request.getfixturevalue("postgres")
    return server.url("idstitch_tests") + f"?schema=p{os.getpid()}_{random.randrange(10**9)}"


def messages(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Identifies, anonymous traits and device updates over a few hundred devices."""
    rng = random.Random(seed)
    for i in range(n):
        device = f"d{rng.randrange(300)}"
        kind = rng.random()
        base: dict[str, Any] = {"anonymousId": f"a-{device}", "messageId": f"m{i}",
                                "context": {"device": {"id": device, "type": "ios"}}}
        if kind < 0.4:
            yield {**base, "type": "identify", "userId": f"u{rng.randrange(120)}",
                   "traits": {"plan": rng.choice(["a", "b"]), "n": i}}
        elif kind < 0.6:
            yield {**base, "type": "identify", "traits": {"seen": i}}
        else:
            yield {**base, "type": "track", "event": "Device Created or Updated",
                   "context": {"device": {"id": device, "type": "ios", "token": f"t{device}"}},
                   "properties": {"app_version": str(i % 5), "custom": i}}


def start_project(url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([IDSTITCH, "project", "--db", url, "--projection", CUSTOM, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment())


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM once it is following (it said so): a clean stop, status 0."""
    assert process.stderr is not None
    started = process.stderr.readline()
    assert "projecting" in started, started
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def custom_rows(url: str) -> list[tuple[Any, ...]]:
    with idstitch.open(url, projections="external") as ws:
        ws.run_projection(ChangeLog())  # registering resumes at the tracked position
        return sorted(ws.projection_db("change_log").query("SELECT position, change FROM "
                                                           "change_log"))


def wait_caught_up(writer: Workspace, timeout: float = 240) -> None:
    writer.wait_for(writer.log.head(), timeout=timeout)


def test_kill_9_during_catch_up_then_a_restart_equals_a_rebuild(url: str) -> None:
    with idstitch.open(url) as ws:
        ws.run_projection(ChangeLog())  # the custom projection's tables exist from the start
    with idstitch.open(url, projections="external") as writer:
        report = writer.ingest(messages(20_000))
        assert report.accepted == 20_000
        head = writer.log.head()
        rng = random.Random(11)
        midway = 0
        for _ in range(10):
            process = start_project(url)
            # Killed at a random point of the catch-up, but found by watching its commits, not
            # by a sleep: on a fast machine a fixed delay let the whole catch-up finish first.
            kill_after = rng.randint(1, 3)
            commits, last = 0, None
            deadline = time.monotonic() + 120
            while process.poll() is None and time.monotonic() < deadline:
                positions = [s.position for s in writer.projection_status()]
                if last is not None and positions != last:
                    commits += 1
                last = positions
                if commits >= kill_after or sum(positions) >= head * len(positions):
                    break
                time.sleep(rng.uniform(0.001, 0.02))
            kill(process)
            positions = [s.position for s in writer.projection_status()]
            if 0 < sum(positions) < head * len(positions):
                midway += 1  # killed with some batches committed and some not
                if midway == 3:
                    break
        process = start_project(url)
        try:
            wait_caught_up(writer)
        finally:
            stop(process)
        assert writer.lag() == 0
        assert midway >= 1, "no kill landed during the catch-up"
        followed = writer.dump()
    followed_custom = custom_rows(url)
    assert len(followed_custom) == head
    with idstitch.open(url, projections=[ChangeLog()]) as ws:
        ws.rebuild(parallel=False)
        assert ws.dump() == followed
    assert custom_rows(url) == followed_custom


def test_sigterm_during_the_first_catch_up_is_a_clean_stop(url: str) -> None:
    # A supervisor's SIGTERM while a new custom projection is far behind: it once came during
    # registration, which caught up in one go: exit 130 and the batch under way thrown away.
    with idstitch.open(url, projections="external") as writer:
        assert writer.ingest(messages(1_000)).accepted == 1_000
        head = writer.log.head()
    process = subprocess.Popen(
        [IDSTITCH, "project", "--db", url, "--projection", "idstitch.testing_projections:Paced"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**environment(), "IDSTITCH_TEST_PACE": "0.002"})
    try:
        time.sleep(1.5)  # started, and folding: 2 ms a Change, several seconds in all
        with idstitch.open(url, projections="external") as writer:
            assert paced_position(writer) < head  # mid catch-up
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "stopped at position" in err, err


def paced_position(ws: Workspace) -> int:
    return next((s.position for s in ws.projection_status() if s.name == "paced"), 0)


def test_a_second_process_takes_over_when_the_first_dies(url: str) -> None:
    with idstitch.open(url) as ws:
        ws.run_projection(ChangeLog())
    first = start_project(url)
    time.sleep(1.5)
    second = start_project(url)
    try:
        with idstitch.open(url, projections="external") as writer:
            writer.ingest(messages(500, seed=1))
            wait_caught_up(writer, 60)
            kill(first)
            writer.ingest(messages(500, seed=2))
            wait_caught_up(writer, 60)  # the survivor keeps them
            profile = writer.profile("u3")
            assert profile is not None
    finally:
        if first.poll() is None:
            kill(first)
        stop(second)


def test_projections_lists_version_position_and_lag_and_rebuild_takes_names(url: str) -> None:
    with idstitch.open(url, projections="external") as writer:
        writer.ingest(messages(50))
        head = writer.log.head()
        # The device attributes hold the log up to the first event they fold.
        first = next(e.position for e in writer.log.read(0, head)
                     if type(e.event).__name__.startswith("DeviceAttributes"))
    ran = idstitch_cmd("projections", "--db", url, "--json")
    assert ran.status == 0, ran.err
    listed = json.loads(ran.out)
    assert listed["head"] == head
    # The command line's one JSON style: compact, keys sorted.
    assert ran.out == json.dumps(listed, separators=(",", ":"), sort_keys=True) + "\n"
    assert {p["name"]: (p["position"], p["lag"]) for p in listed["projections"]} == {
        "identity": (0, head), "device_attributes": (first - 1, head - first + 1)}
    ran = idstitch_cmd("rebuild", "--db", url, "identity")
    assert ran.status == 0, ran.err
    listed = json.loads(idstitch_cmd("projections", "--db", url, "--json").out)
    positions = {p["name"]: p["position"] for p in listed["projections"]}
    assert positions["identity"] == head
    table = idstitch_cmd("projections", "--db", url)
    assert table.status == 0 and "identity" in table.out and "lag" in table.out
    bad = idstitch_cmd("rebuild", "--db", url, "nosuch")
    assert bad.status == 2 and "nosuch" in bad.err and "Traceback" not in bad.err
    bad = idstitch_cmd("project", "--db", url, "--projection", "nosuch.module:X")
    assert bad.status == 2 and "--projection" in bad.err and "Traceback" not in bad.err



def test_a_forget_by_a_writer_reaches_the_custom_projection_of_idstitch_project(
        url: str) -> None:
    """The writer appends only; `idstitch project` keeps a custom projection of the Changes
    (no purge hook): after the writer forgets a person, the projection holds none of its
    values, and equals a rebuild."""
    with idstitch.open(url) as ws:
        ws.run_projection(ChangeLog())
    project = start_project(url)
    try:
        with idstitch.open(url, projections="external") as writer:
            writer.ingest(messages(600, seed=3))
            writer.identify("d-dana", "dana-77", {"email": "dana.77@example.com"})
            wait_caught_up(writer, 120)
            assert any("dana.77@example.com" in change for _, change in custom_rows(url))
            writer.forget("dana-77", reason="erasure request")
            writer.identify("d-sam", "sam-5", {"plan": "team"})
            wait_caught_up(writer, 120)
            assert writer.profile("dana-77") is None
    finally:
        stop(project)
    rows = custom_rows(url)
    # (Its device id stays: device ids are plaintext in every event, a device is not a person.)
    assert not any("dana-77" in change or "dana.77@" in change for _, change in rows), [
        change for _, change in rows if "dana" in change]
    assert any("sam-5" in change for _, change in rows)
    with idstitch.open(url) as ws:
        ws.run_projection(ChangeLog())
        ws.rebuild(["change_log"])
        assert sorted(ws.projection_db("change_log").query(
            "SELECT position, change FROM change_log")) == rows


@pytest.mark.parametrize("poll", ["0", "-1", "nan", "inf", "soon"])
def test_a_poll_interval_is_a_finite_number_of_seconds_above_0(
        capsys: pytest.CaptureFixture[str], poll: str) -> None:
    """0 or -1 once spun a core, inf died on time_t, nan could hang past SIGTERM."""
    from idstitch.cli import main

    with pytest.raises(SystemExit) as e:
        main(["project", "--db", "memory:", "--poll", poll])
    assert e.value.code == 2 and "--poll" in capsys.readouterr().err


def test_listing_the_projections_leaves_the_file_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It once created the custom projections' tracking tables in a store that had none."""
    import hashlib

    import idstitch
    from idstitch.cli import main

    path = tmp_path / "ws.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        ws.identify("phone", "kim", {})
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["projections", "--db", f"sqlite:///{path}"]) == 0
    assert "identity" in capsys.readouterr().out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_project_refuses_a_store_that_does_not_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --db would have followed a new, empty file forever."""
    from idstitch.cli import main

    typo = tmp_path / "identiy.db"
    assert main(["project", "--db", f"sqlite:///{typo}"]) == 2
    err = capsys.readouterr().err
    assert str(typo) in err and "no idstitch store" in err
    assert list(tmp_path.iterdir()) == []


FAILING = '''
import idstitch


class Failing(idstitch.Projection):
    name = "failing"

    def setup(self, db):
        db.execute("CREATE TABLE t (x INTEGER)")

    def handle(self, db, change):
        raise RuntimeError("always")
'''


def test_project_reports_a_failing_projection_once(url: str, tmp_path: Path) -> None:
    """It was reported when registered, then again by the first catch-up that met it."""
    (tmp_path / "failing_mod.py").write_text(FAILING)
    with idstitch.open(url) as ws:
        ws.identify("phone", "kim")
    project = subprocess.Popen(
        [IDSTITCH, "project", "--db", url, "--projection", "failing_mod:Failing", "--poll", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**environment(), "PYTHONPATH": str(tmp_path)})
    assert project.stderr is not None
    lines = [project.stderr.readline()]
    while "failed" not in lines[-1]:  # the first report (its first step, or registering)
        assert lines[-1], lines  # the process ended
        lines.append(project.stderr.readline())
    time.sleep(1.0)  # ten polls, each meeting the failure again
    err = "".join(lines) + stop_following(project)
    assert err.count("projection 'failing' failed") == 1, err
    assert "failed at position 1: RuntimeError: always" in err


def stop_following(process: subprocess.Popen[str]) -> str:
    """SIGTERM a process already following; what it wrote on stderr after."""
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return err


def test_project_refuses_memory(capsys: pytest.CaptureFixture[str]) -> None:
    """Nobody else can write to it: it would follow nothing, forever."""
    from idstitch.cli import main

    assert main(["project", "--db", "memory:"]) == 2
    assert "memory:" in capsys.readouterr().err


def test_project_adopts_the_policy_a_writer_records_after_it_started(url: str) -> None:
    """Started first on a store with nothing folded and no policy recorded, it folds under
    the default; a writer then opens with "switch" and records it: the process adopts it
    (it was asked for none) instead of stopping on the mismatch."""
    idstitch.open(url).close()  # a store, nothing recorded yet
    process = start_project(url)
    try:
        assert process.stderr is not None
        assert "anonymous_merge=merge" in process.stderr.readline()
        with idstitch.open(url, projections="external", anonymous_merge="switch") as writer:
            writer.identify("p0", "dana")
            writer.set_profile_attributes("p1", {"plan": "trial"})
            position = writer.identify("p1", "dana")
            assert position is not None
            writer.wait_for(position, timeout=60)
            assert [m.kind for m in writer.merges("dana")] == ["converted", "switched"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "following the store's policy" in err and "anonymous_merge=switch" in err


def test_project_asked_for_a_policy_records_it_on_a_store_that_records_none(url: str) -> None:
    """The process that keeps the projections is where a policy is chosen for a store its
    writers opened without one (a read may not record one; `project` may)."""
    with idstitch.open(url, projections="external") as writer:
        writer.identify("p0", "dana")
        writer.set_profile_attributes("p1", {"plan": "trial"})
        position = writer.identify("p1", "dana")
        assert position is not None and writer.rows.meta("identity") is None
        process = start_project(url, "--policy", "switch")
        try:
            assert process.stderr is not None
            assert "anonymous_merge=switch" in process.stderr.readline()
            writer.wait_for(position, timeout=60)
            assert [m.kind for m in writer.merges("dana")] == ["converted", "switched"]
        finally:
            stop_following(process)

