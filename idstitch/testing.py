"""Helpers for users who embed idstitch in their own tests (after structlog's ``testing``).

- :class:`FrozenClock`: a clock you set and advance, so recorded times are repeatable.
- :func:`memory_workspace`: an in-memory workspace (a product feature, nothing on disk).
- :func:`recorded_events`: the events of the log, in order, to assert on what was recorded.
- :class:`TemporaryPostgres`: a throwaway PostgreSQL server from the machine's binaries.
- :func:`following`: what ``idstitch project`` runs, in a thread, for tests of writers opened
  with ``projections="external"``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType

from idstitch.domain.events import DeviceEvent
from idstitch.projections.identity import Policy
from idstitch.service.following import Follower
from idstitch.workspace import Workspace
from idstitch.workspace import open as open_workspace


class FrozenClock:
    """A clock that stands still until told to move."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move forward, e.g. ``clock.advance(seconds=5)``; the new time."""
        self.now += timedelta(**delta)
        return self.now


def memory_workspace(
    *, anonymous_merge: Policy = "merge", clock: FrozenClock | None = None
) -> Workspace:
    """An in-memory workspace with a frozen clock."""
    return open_workspace("memory:", anonymous_merge=anonymous_merge, clock=clock or FrozenClock())


def recorded_events(ws: Workspace, after: int = 0) -> list[tuple[int, DeviceEvent]]:
    """(position, event) for every event after a position, in log order."""
    out: list[tuple[int, DeviceEvent]] = []
    while True:
        batch = ws.log.read(after, 1000)
        if not batch:
            return out
        out.extend((e.position, e.event) for e in batch)
        after = batch[-1].position


@contextmanager
def following(ws: Workspace, *, poll: float | None = None) -> Iterator[Follower]:
    """Keep the projections of ``ws``'s store (the built-in ones, and the custom ones ``ws``
    registered) at the head of the log, as ``idstitch project`` does, in a thread of this
    process until the block ends (``poll``: seconds between looks at the log when no
    notification wakes it). RuntimeError if it does not stop within 30 seconds."""
    follower = Follower(ws._services.projector, ws._services.stores.listen, poll=poll,
                        report=lambda line: None)
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    try:
        yield follower
    finally:
        follower.stop()
        thread.join(timeout=30)
        if thread.is_alive():
            raise RuntimeError("the follower did not stop within 30 seconds")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TemporaryPostgres:
    """Starts a PostgreSQL server on loopback in a temporary directory; stops and removes it.

    Uses ``initdb`` and ``pg_ctl`` from PATH. Run as root, it runs them as the ``postgres``
    system user (PostgreSQL refuses to run as root). ``url(db)`` gives a connection URL;
    ``create_database(name)`` makes a fresh database.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="idstitch-pg-")
        self.data = os.path.join(self.dir, "data")
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._as_root:
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> TemporaryPostgres:
        """initdb and start; raises when PostgreSQL cannot start (tests must not skip)."""
        for tool in ("initdb", "pg_ctl"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not on PATH: cannot start PostgreSQL for tests")
        if self._as_root:
            shutil.chown(self.dir, "postgres")
            os.chmod(self.dir, 0o700)
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", self.data, "-o", opts, "-l",
                  os.path.join(self.dir, "log"), "-w", "-t", "60", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        """A connection URL for a database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove its files."""
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
