"""Fixtures of the acceptance tests.

``cli``: the installed ``idstitch`` command run as a user runs it, a process of its own with
stdout and stderr on pipes (not a terminal), and what to check of a run.

``serve``: a real uvicorn server on a free loopback port, for the ``idstitch serve`` tests. Not a
TestClient: the clients under test open TCP connections, send their own headers, gzip and
retries, and the server runs its lifespan (the writer thread opens and closes the store).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest
import uvicorn

from idstitch.serve import app

IDSTITCH = str(Path(sys.executable).with_name("idstitch"))
if not os.path.exists(IDSTITCH):  # a venv-less run: whichever idstitch is on PATH
    IDSTITCH = shutil.which("idstitch") or IDSTITCH


class Ran(NamedTuple):
    """What a run of the command left: exit status, stdout, stderr."""

    status: int
    out: str
    err: str


def environment() -> dict[str, str]:
    """The caller's environment without what would pick a store or a width for the command."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("IDSTITCH_DATABASE_URL", "COLUMNS", "LINES", "IDSTITCH_DEBUG")}
    env["PYTHONUNBUFFERED"] = "0"
    return env


def idstitch_cmd(*argv: str, cwd: Path | None = None, stdin: str | None = None,
                 timeout: float = 120) -> Ran:
    """Run ``idstitch ARGV...`` to the end; stdout and stderr are pipes."""
    done = subprocess.run([IDSTITCH, *argv], capture_output=True, text=True, cwd=cwd,
                          env=environment(), input=stdin, timeout=timeout, check=False)
    return Ran(done.returncode, done.stdout, done.stderr)


def assert_clean_failure(ran: Ran, status: int, *phrases: str) -> None:
    """A failure as the command line promises: its status, one message, no traceback."""
    assert ran.status == status, ran
    assert "Traceback" not in ran.err and "Traceback" not in ran.out, ran.err
    for phrase in phrases:
        assert phrase in ran.err, (phrase, ran.err)


def house_json(line: str) -> bool:
    """Whether a line is JSON in the command line's one style: compact, keys sorted, UTF-8."""
    value = msgspec.json.decode(line)
    return line == msgspec.json.encode(value, order="sorted").decode()


def files_in(folder: Path) -> list[str]:
    """The names of the files in a folder, sorted."""
    return sorted(p.name for p in folder.iterdir())


class Cli:
    """The command line as a process (the ``cli`` fixture): run it, check what it left."""

    run = staticmethod(idstitch_cmd)
    clean_failure = staticmethod(assert_clean_failure)
    house_json = staticmethod(house_json)
    files_in = staticmethod(files_in)
    path = IDSTITCH


@pytest.fixture
def cli() -> Cli:
    """The ``idstitch`` command, run for real (see :class:`Cli`)."""
    return Cli()


class RunningServer:
    """``idstitch.serve.app(...)`` served by uvicorn in a thread of the test process."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it
        # every answer waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False,
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the host the clients are given."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """What SIGTERM does: stop accepting, finish the requests in flight, drain, close."""
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not shut down"


Serve = Callable[..., RunningServer]


@pytest.fixture
def serve_asgi() -> Iterator[Callable[[Any], RunningServer]]:
    """Start servers of any ASGI app; stopped after the test."""
    running: list[RunningServer] = []

    def start(asgi: Any) -> RunningServer:
        server = RunningServer(asgi)
        running.append(server)
        return server

    yield start
    for server in running:
        if server.thread.is_alive():
            server.stop()


@pytest.fixture
def serve(serve_asgi: Callable[[Any], RunningServer], tmp_path_factory: pytest.TempPathFactory) -> Serve:
    """Start servers: ``serve(ws_or_url, write_keys=[...], **app_options)``; stopped after the test.

    Beside a SQLite file the rejects log takes its default place; for other stores (whose
    default is the working directory) it goes to a temporary directory."""
    def start(ws_or_url: Any, write_keys: list[str] | None = None, **options: Any) -> RunningServer:
        if not (isinstance(ws_or_url, str) and ws_or_url.startswith("sqlite:///")):
            options.setdefault("rejects", tmp_path_factory.mktemp("rejects") / "rejects.ndjson")
        return serve_asgi(app(ws_or_url, write_keys or ["test-key"], **options))

    return start


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (a server's writer, its projecting child)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            kids = [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found
