"""The writer process behind ``app(url, ...)``: where it runs, and what the server does when it
dies (the requests it had not answered get a 500 at once, the next request starts a new one),
and that a Workspace passed in keeps its writer in a thread of the caller's process."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import requests

import idstitch

KEY = "test-key"


def post(server: Any, user: str) -> requests.Response:
    body = {"batch": [{"type": "identify", "userId": user, "context": {"device": {"id": f"d-{user}"}}}]}
    return requests.post(server.url + "/v1/batch", json=body, auth=(KEY, ""), timeout=60)


def writer_pid(server: Any) -> int:
    pid = server.asgi.state.gate.writer.pid
    assert isinstance(pid, int)
    return pid


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def recorded(url: str, *users: str) -> list[str]:
    with idstitch.open(url) as ws:
        return [u for u in users if ws.profile(u) is not None]


def test_the_writer_runs_in_a_process_of_its_own(serve: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/identity.db"
    server = serve(url)
    pid = writer_pid(server)
    assert pid != os.getpid()
    assert b"idstitch.serve.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    # A signal to the whole process group (Ctrl-C, a service manager) leaves the writer to
    # the server's shutdown: it keeps taking requests meanwhile.
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    assert post(server, "u-1").status_code == 200
    assert writer_pid(server) == pid
    server.stop()
    assert gone(pid)  # the shutdown ended it, after it closed the store
    assert recorded(url, "u-1") == ["u-1"]


def test_a_request_the_dead_writer_had_not_answered_gets_a_500_then_a_new_writer_takes_over(
        serve: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/identity.db"
    server = serve(url)
    assert post(server, "u-0").status_code == 200
    first = writer_pid(server)
    lock = sqlite3.connect(f"{tmp_path}/identity.db", isolation_level=None, timeout=30)
    lock.execute("BEGIN IMMEDIATE")  # the writer's next commit waits for this
    answers: list[requests.Response] = []
    waiting = threading.Thread(target=lambda: answers.append(post(server, "u-1")))
    waiting.start()
    until(lambda: server.asgi.state.gate.admitted == 1, "the request to be admitted")
    time.sleep(0.3)  # its messages reach the writer, which waits for the lock
    os.kill(first, signal.SIGKILL)
    waiting.join(30)
    assert not waiting.is_alive()  # answered, not left hanging
    assert answers[0].status_code == 500
    assert answers[0].json()["code"] == "store_error"
    lock.rollback()
    lock.close()
    # The next request starts a new writer process, which opens the store again.
    assert post(server, "u-2").status_code == 200
    assert writer_pid(server) != first
    server.stop()
    assert recorded(url, "u-0", "u-2") == ["u-0", "u-2"]


def test_while_no_writer_can_open_the_store_requests_get_503(serve: Any, tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    url = f"sqlite:///{folder}/identity.db"
    server = serve(url, rejects=tmp_path / "rejects.ndjson")
    assert post(server, "u-0").status_code == 200
    pid = writer_pid(server)
    os.kill(pid, signal.SIGKILL)
    until(lambda: gone(pid) and not server.asgi.state.gate.writer.running, "the writer to be gone")
    away = tmp_path / "moved"
    folder.rename(away)  # the next writer cannot open it
    answer = post(server, "u-1")
    assert answer.status_code == 503
    assert answer.json()["code"] == "store_unavailable"
    # The folder is back, empty: a restarted writer never starts a new store there (the
    # traffic would go into it, and the store it wrote would be left behind).
    folder.mkdir()
    assert post(server, "u-1").status_code == 503
    assert list(folder.iterdir()) == []
    folder.rmdir()
    away.rename(folder)  # the store is back: the next request starts a writer on it
    assert post(server, "u-2").status_code == 200
    server.stop()
    assert recorded(url, "u-0", "u-1", "u-2") == ["u-0", "u-2"]


def test_a_workspace_passed_in_keeps_its_writer_in_a_thread(serve: Any, tmp_path: Path) -> None:
    with idstitch.open(f"sqlite:///{tmp_path}/identity.db") as ws:
        server = serve(ws)
        writer = server.asgi.state.gate.writer
        assert not hasattr(writer, "pid")  # no process: the caller's object stays in its process
        assert post(server, "u-1").status_code == 200
        server.stop()
        assert ws.profile("u-1") is not None  # still open: its owner closes it
