"""Who keeps the read models while ``idstitch serve`` records: a projecting child process that
follows the log (a SQLite file, PostgreSQL), the writer thread itself where no child can run
or the child died, and nobody with ``external``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests

import idstitch
from idstitch.testing import TemporaryPostgres

from .conftest import descendants

KEY = "test-key"


def identify(user: str, device: str) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": {"plan": "pro"},
            "context": {"device": {"id": device}}}


def post(server: Any, users: list[str]) -> None:
    body = {"batch": [identify(u, f"d-{u}") for u in users]}
    answer = requests.post(server.url + "/v1/batch", json=body, auth=(KEY, ""), timeout=30)
    assert answer.status_code == 200, answer.text


def children(kind: bytes = b"idstitch.child") -> list[int]:
    """The live projecting children under this process (the servers run in its threads, their
    writer in a process of its own), or the processes of another ``kind``."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if state != "Z" and kind in command:
            found.append(pid)
    return found


def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def folded(url: str, user: str) -> bool:
    """Whether the committed read models hold the user (read without catching up)."""
    with idstitch.open(url, auto_catch_up=False) as reader:
        return reader.profile(user) is not None


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/identity.db"
    postgres: TemporaryPostgres = request.getfixturevalue("postgres")
    return postgres.url("idstitch_tests") + f"?schema=serve_child_{os.getpid()}_{time.time_ns()}"


def test_a_child_process_folds_the_log_and_ends_with_the_server(serve: Any, url: str) -> None:
    server = serve(url)
    assert len(children()) == 1  # started with the server, before the first request
    post(server, ["u-1"])
    # When requests pause, the child commits what it folded: a reader that does not fold
    # the log itself sees it.
    until(lambda: folded(url, "u-1"), "the child to commit the projections")
    server.stop()
    assert children() == []
    with idstitch.open(url, projections="external") as ws:
        assert ws.lag() == 0  # the shutdown left the projections at the head


def test_the_writer_folds_itself_once_the_child_died(serve: Any, url: str) -> None:
    server = serve(url)
    [child] = children()
    os.kill(child, signal.SIGKILL)
    until(lambda: children() == [], "the child to be gone")
    # Past the writer's catch-up interval, and then a pause: both are the writer's now.
    post(server, [f"u-{i}" for i in range(600)])
    post(server, ["last"])
    until(lambda: folded(url, "u-599") and folded(url, "last"), "the writer to fold the log")
    server.stop()


def test_no_child_for_the_memory_store_nor_with_external(serve: Any, tmp_path: Path) -> None:
    with idstitch.open("memory:") as ws:
        server = serve(ws)
        post(server, ["u-1"])
        assert children() == []
        server.stop()
        assert ws.profile("u-1") is not None  # folded by the writer thread
    db = f"sqlite:///{tmp_path}/identity.db"
    server = serve(db, external=True)
    post(server, ["u-2"])
    assert children() == []
    server.stop()


def test_with_external_a_cio_id_waits_briefly_then_is_refused_saying_why(
        serve: Any, tmp_path: Path) -> None:
    # Nobody keeps the projections: the group's cio_ message waits EXTERNAL_WAIT (5 s), not
    # the library's 30 s on top of it, and is refused saying why; its other message lands.
    db = f"sqlite:///{tmp_path}/identity.db"
    with idstitch.open(db) as ws:
        ws.identify("phone", "kim")
        profile = ws.profile("kim")
        assert profile is not None
        person_id = profile.person_id
    server = serve(db, external=True)
    post(server, ["sam"])  # the log is now ahead of the projections
    began = time.monotonic()
    body = {"batch": [identify(f"cio_{person_id}", "tablet"), identify("lee", "laptop")]}
    answer = requests.post(server.url + "/v1/batch", json=body, auth=(KEY, ""), timeout=60)
    waited = time.monotonic() - began
    server.stop()
    assert answer.status_code == 200, answer.text
    assert waited < 15.0, waited
    [refused] = answer.json()["rejected"]
    assert refused["index"] == 0 and "idstitch project" in refused["reason"]
    with idstitch.open(db) as ws:
        assert ws.profile("lee") is not None and ws.profile("tablet") is None


def test_a_new_child_is_started_some_time_after_the_child_died(
        serve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed (or cut off from PostgreSQL), the child was never replaced: the writer folded
    the log itself for the rest of the server's life."""
    from idstitch.serve import keeping

    monkeypatch.setattr(keeping, "RESTART_SECONDS", 0.0)
    url = f"sqlite:///{tmp_path}/identity.db"
    with idstitch.open(url) as ws:
        server = serve(ws)  # the writer in this process: the delay above applies
        [child] = children()
        os.kill(child, signal.SIGKILL)
        until(lambda: children() == [], "the child to be gone")
        post(server, ["u-1"])
        until(lambda: len(children()) == 1, "a new child")
        assert children() != [child]
        post(server, ["u-2"])
        until(lambda: folded(url, "u-2"), "the new child to fold")
        server.stop()


def test_a_committed_group_is_answered_200_when_keeping_the_projections_fails(
        serve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the commit, a failure to keep the projections (the store lost a moment, say)
    answered the group 500: its clients sent committed messages again."""
    from idstitch.serve import keeping

    def failing(self: Any, messages: int) -> None:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(keeping.Keeper, "recorded", failing)
    url = f"sqlite:///{tmp_path}/identity.db"
    with idstitch.open(url) as ws:
        server = serve(ws)
        post(server, ["u-1"])  # answered 200
        server.stop()
        assert ws.profile("u-1") is not None
