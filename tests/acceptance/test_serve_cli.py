"""``idstitch serve`` as a process: its arguments, a missing extra, and kill -9 under load (every
message answered 200 is in the store after a restart)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import idstitch
from idstitch.cli import main
from idstitch.testing import TemporaryPostgres

from .conftest import Cli, descendants

# -P: a checkout's source folder idstitch/ must not shadow the installed package.
CLI = [sys.executable, "-P", "-c", "import sys; from idstitch.cli import main; sys.exit(main())"]


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(db: str, port: int, *keys: str, env: dict[str, str] | None = None,
          create: bool = False) -> subprocess.Popen[bytes]:
    """``idstitch serve`` in a process of its own (``--create``: on a new store); returns once
    it answers on the port."""
    argv = [*CLI, "serve", "--db", db, "--port", str(port), *(["--create"] if create else [])]
    for key in keys:
        argv += ["--write-key", key]
    process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE)
    _started.append(process)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.post(f"http://127.0.0.1:{port}/v1/batch", timeout=5)
            return process
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                assert process.stderr is not None
                said = process.stderr.read().decode()
                raise RuntimeError(f"idstitch serve did not start: {said}") from None
            time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM: uvicorn shuts down gracefully, then exits by the signal it caught (as it is
    conventional for a service to); a traceback on stderr would mean the shutdown failed."""
    server.send_signal(signal.SIGTERM)
    assert server.wait(30) in (0, -signal.SIGTERM)
    assert server.stderr is not None
    assert "Traceback" not in server.stderr.read().decode()


def test_serve_needs_a_write_key(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDSTITCH_WRITE_KEYS", raising=False)
    assert main(["serve", "--db", "memory:"]) == 2
    assert "--write-key" in capsys.readouterr().err


def test_a_bad_store_url_is_an_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--db", "foo://x", "--write-key", "k"]) == 2
    err = capsys.readouterr().err
    assert "unsupported store URL" in err and "Traceback" not in err


def test_without_the_extra_serve_says_how_to_get_it(tmp_path: Path) -> None:
    # uvicorn made unimportable, as in an install without the serve extra.
    code = ("import sys; sys.modules['uvicorn'] = None; from idstitch.cli import main; "
            "sys.exit(main(['serve', '--db', 'memory:', '--write-key', 'k']))")
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "pip install 'idstitch[serve]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_keys_from_the_environment_and_sigterm_drains(tmp_path: Path) -> None:
    db, port = f"sqlite:///{tmp_path}/identity.db", free_port()
    server = start(db, port, env={"IDSTITCH_WRITE_KEYS": "k1, k2"}, create=True)
    url = f"http://127.0.0.1:{port}/v1/batch"
    body = {"batch": [{"type": "identify", "userId": "u-1", "context": {"device": {"id": "d-1"}}}]}
    assert requests.post(url, json=body, auth=("k2", ""), timeout=30).status_code == 200
    assert requests.post(url, json=body, auth=("k3", ""), timeout=30).status_code == 401
    stop(server)
    with idstitch.open(db) as ws:
        assert ws.profile("u-1") is not None


def load(url: str, worker: int, answered: list[str], halt: threading.Event) -> None:
    """Post 50-message batches until stopped; keep the users of every batch answered 200."""
    batch_no = 0
    while not halt.is_set():
        users = [f"u-{worker}-{batch_no}-{i}" for i in range(50)]
        body = {"batch": [{"type": "identify", "userId": u, "messageId": u, "traits": {"n": i},
                           "context": {"device": {"id": f"d-{u}"}}} for i, u in enumerate(users)]}
        batch_no += 1
        try:
            answer = requests.post(url, json=body, auth=("k", ""), timeout=30)
        except requests.RequestException:
            return  # the server is gone
        if answer.status_code == 200:
            answered.extend(users)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_kill_9_under_load_loses_nothing_answered_200(tmp_path: Path, store: str,
                                                      request: pytest.FixtureRequest) -> None:
    if store == "sqlite":
        db = f"sqlite:///{tmp_path}/identity.db"
    else:
        postgres: TemporaryPostgres = request.getfixturevalue("postgres")
        db = postgres.url("idstitch_tests") + "?schema=serve_kill9"
    port = free_port()
    # A new store only with --create, on either store.
    server = start(db, port, "k", create=True)
    url = f"http://127.0.0.1:{port}/v1/batch"
    answered: list[list[str]] = [[] for _ in range(4)]
    halt = threading.Event()
    workers = [threading.Thread(target=load, args=(url, i, answered[i], halt)) for i in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while sum(map(len, answered)) < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    kids = descendants(server.pid)
    assert len(kids) == 2  # the writer process, and the projecting child it started
    server.send_signal(signal.SIGKILL)  # mid-load: requests are in flight, batches half read
    server.wait(30)
    # The writer sees the server gone, answers what it had taken, has the projecting child
    # stop, and exits: no process is left holding the store.
    deadline = time.monotonic() + 30
    while any(alive(kid) for kid in kids):
        assert time.monotonic() < deadline, "the writer or its projecting child outlived the server"
        time.sleep(0.05)
    halt.set()
    for worker in workers:
        worker.join(60)
    acked = [u for part in answered for u in part]
    assert len(acked) >= 1000

    # The restarted server opens the store (it exists now: no --create) and takes traffic again.
    server = start(db, port, "k")
    body: dict[str, Any] = {"batch": [{"type": "identify", "userId": "after",
                                       "context": {"device": {"id": "d"}}}]}
    assert requests.post(url, json=body, auth=("k", ""), timeout=30).status_code == 200
    stop(server)
    with idstitch.open(db) as ws:
        missing = [u for u in [*acked, "after"] if ws.profile(u) is None]
    assert missing == []


@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_a_port_out_of_range_is_a_bad_argument(capsys: pytest.CaptureFixture[str],
                                               port: str) -> None:
    """The OS would wrap 99999 to 34463 silently: a port is 1 to 65535, status 2."""
    with pytest.raises(SystemExit) as e:
        main(["serve", "--db", "memory:", "--write-key", "k", "--port", port])
    assert e.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_a_port_taken_or_an_unknown_host_is_one_error_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--db", "memory:", "--write-key", "k", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot listen on 127.0.0.1:") and len(err.splitlines()) == 1
    assert main(["serve", "--db", "memory:", "--write-key", "k", "--host", "999.1.1.1"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot listen on 999.1.1.1:")


@pytest.mark.parametrize("made", ["missing", "empty file"])
def test_serve_refuses_a_store_that_is_not_there_and_creates_nothing(tmp_path: Path, cli: Cli,
                                                                     made: str) -> None:
    """A mistyped --db must not send production traffic into a fresh empty store."""
    typo = tmp_path / "identiy.db"
    if made == "empty file":
        typo.touch()
    before = cli.files_in(tmp_path)
    ran = cli.run("serve", "--db", f"sqlite:///{typo}", "--write-key", "k",
                  "--port", str(free_port()), timeout=60)
    cli.clean_failure(ran, 2, str(typo), "--create")
    assert cli.files_in(tmp_path) == before  # no store, -wal, lock, lease or rejects file



@pytest.mark.parametrize(("option", "expected"), [
    (["--write-key", " "], "a write key is not blank"),
    (["--write-key", "k", "--rejects", "{store}"], "the store's database file"),
    (["--write-key", "k", "--rejects", "{store}-wal"], "the store's database file"),
    (["--write-key", "k", "--rejects", "{folder}/missing/rejects.ndjson"], "does not exist"),
])
def test_serve_refuses_bad_options_before_it_starts_a_store(
        tmp_path: Path, cli: Cli, option: list[str], expected: str) -> None:
    """Checked before the store is opened: nothing is created. (A rejects file in the live
    database was overwritten by SQLite; one in a missing folder made every refusal a 500.)"""
    store = tmp_path / "new.db"
    args = [a.format(store=store, folder=tmp_path) for a in option]
    ran = cli.run("serve", "--db", f"sqlite:///{store}", "--create", *args,
                  "--port", str(free_port()), timeout=60)
    cli.clean_failure(ran, 2, expected)
    assert cli.files_in(tmp_path) == []


def test_sigterm_stops_the_server_with_a_client_that_never_sends_its_body(tmp_path: Path) -> None:
    """uvicorn waited for the stalled connection for ever (and the shutdown for its slot):
    after the grace period it is closed, what was accepted is still drained and recorded."""
    from idstitch.cli.serve import SHUTDOWN_GRACE

    db, port = f"sqlite:///{tmp_path}/identity.db", free_port()
    server = start(db, port, "k", create=True)
    body = {"batch": [{"type": "identify", "userId": "u-1", "context": {"device": {"id": "d-1"}}}]}
    url = f"http://127.0.0.1:{port}/v1/batch"
    assert requests.post(url, json=body, auth=("k", ""), timeout=30).status_code == 200
    with socket.create_connection(("127.0.0.1", port), timeout=60) as stalled:
        stalled.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.3)  # admitted: it holds a slot, reading a body that never ends
        asked = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(SHUTDOWN_GRACE + 20) in (0, -signal.SIGTERM)
        assert time.monotonic() - asked < SHUTDOWN_GRACE + 15
    assert server.stderr is not None and "Traceback" not in server.stderr.read().decode()
    with idstitch.open(db) as ws:
        assert ws.profile("u-1") is not None
