"""A real uvicorn server on a free loopback port, for the ``idstitch serve`` tests.

Not a TestClient: the clients under test open TCP connections, send their own headers, gzip and
retries, and the server runs its lifespan (the writer thread opens and closes the store).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from idstitch.serve import app


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
