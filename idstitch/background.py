"""A second process that folds the log into the projections while a bulk ingest appends.

Ingest has two halves that need not wait for each other: recording events (decode, validate,
run the device commands, append) and projecting them (the identity fold, row writes). On a
store that several processes can open (SQLite file, PostgreSQL), the second half runs in a
child process, so a bulk ingest uses two cores. The child is an ordinary catch-up loop: the
projection's optimistic catch-up keeps its writes safe against any other writer, and the
ingest waits for it to reach the head before it returns, so the workspace still reads its own
writes.

The child is a fresh interpreter (:data:`COMMAND`), not a fork: forking a
process with open database connections and pool threads is unsafe, and the ``multiprocessing``
spawn method would re-import the caller's main module. It talks over its stdin and stdout, a
line at a time:

- parent -> child: the store URL, then the policy (the first two lines); then ``until N``
  (answer once the projection is at position N or beyond) or ``stop N`` (the same, then exit);
- child -> parent: ``ready``, ``at N``, ``folding N`` (still working on a request: sent every
  couple of seconds, so the parent can tell a slow child from a stuck one), or
  ``error <reason>`` (then it exits).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from typing import IO

POLL_SECONDS = 0.01
"""How long the child waits for a request before looking at the log again."""
START_SECONDS = 60.0
"""How long the parent waits for the child to open the store."""
HEARTBEAT_SECONDS = 2.0
"""While the parent waits, the child says how far it is at least this often."""
STALL_SECONDS = 60.0
"""A child silent this long while the parent waits is taken for stuck (and ended)."""
CHILD_BATCH_SIZE = 100_000
"""Events the child folds between commits at most (it also commits when asked, and when its
working set is full)."""
COMMAND = [sys.executable, "-c", "import sys; from idstitch.background import serve; "
           "serve(sys.stdin, sys.stdout)"]
"""How the child is started (``-c`` rather than ``-m``: the package imports this module)."""


def available() -> bool:
    """Whether this platform can run the child (it waits on pipes with ``select``)."""
    return os.name == "posix"


class BackgroundProjector:
    """The parent's handle on the child process. Any failure of the child is reported as False
    by :meth:`wait_for` and :meth:`stop`, and the caller catches up itself: the child only ever
    saves work, it is never needed for a correct result."""

    def __init__(self, url: str, policy: str, command: list[str] | None = None) -> None:
        self.failed: str | None = None
        # The child imports idstitch from where this process did, not whatever its own
        # environment would find (an older copy would take these rows for another layout).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self._proc: subprocess.Popen[str] | None = subprocess.Popen(
                command or COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                bufsize=1, env=env)
        except OSError as e:  # no interpreter to start (an embedded one, say)
            self._proc = None
            self.failed = f"cannot start: {e}"
            return
        self._send(url)
        self._send(policy)
        reply = self._receive(START_SECONDS)
        if reply != "ready":
            self._fail(reply or "did not start")

    def wait_for(self, position: int) -> bool:
        """Block until the projection is at ``position`` or beyond; False if the child failed."""
        return self._ask(f"until {position}")

    def stop(self, position: int) -> bool:
        """Let the child reach ``position``, then end it; False if it failed on the way."""
        done = self._ask(f"stop {position}")
        self.close()
        return done

    def close(self) -> None:
        """End the child now (it holds no lock between its transactions)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a write still buffered for a dead child
                    pipe.close()

    def _ask(self, request: str) -> bool:
        if self.failed is not None:
            return False
        self._send(request)
        while True:
            # A working child says so every HEARTBEAT_SECONDS: silence means it is stuck.
            reply = self._receive(STALL_SECONDS)
            if reply is None or not reply.startswith(("at ", "folding ")):
                self._fail(reply or "stopped answering")
                return False
            if reply.startswith("at "):
                return True

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            self._fail(f"cannot talk to it: {e}")

    def _receive(self, timeout: float | None) -> str | None:
        stdout = None if self._proc is None else self._proc.stdout
        if stdout is None or self.failed is not None:
            return None
        if timeout is not None and not select.select([stdout], [], [], timeout)[0]:
            return None
        line = stdout.readline()
        return line.strip() or None

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self.close()


def serve(requests: IO[str], replies: IO[str]) -> None:
    """The child: catch up, answer requests, until told to stop (or the parent goes away)."""
    # Imported here: the parent imports this module without paying for the whole library twice.
    from idstitch.projections.identity import PAGE_SIZE, IdentityProjection
    from idstitch.workspace import bulk_gc
    from idstitch.workspace import open as open_workspace

    def reply(line: str) -> None:
        replies.write(line + "\n")
        replies.flush()

    url = requests.readline().strip()
    policy = IdentityProjection.policy_of(f"anonymous_merge={requests.readline().strip()}")
    try:
        ws = open_workspace(url, anonymous_merge=policy)
    except Exception as e:  # reported to the parent, which then catches up itself
        reply(f"error cannot open the store: {e}")
        return
    reply("ready")
    waiting_for: int | None = None
    stopping = False
    heard = time.monotonic()
    with ws, bulk_gc():
        try:
            stretch = ws.identity.stretch(ws.log, ws.rows)
            while True:
                folded = stretch.fold(PAGE_SIZE)
                # Commit rarely: every commit holds the write lock the ingest's appends wait
                # for, and rewrites the hot rows. Reaching the head is no reason to commit;
                # the parent asking for a position, or a full working set, is.
                if stretch.pending >= CHILD_BATCH_SIZE or stretch.full:
                    stretch.commit()
                if waiting_for is None:
                    # A request may come at any time, also while there is a backlog: look
                    # without waiting then, and wait a moment at the head.
                    if not select.select([requests], [], [], 0 if folded else POLL_SECONDS)[0]:
                        continue
                    line = requests.readline()
                    if not line:
                        return  # the parent is gone
                    verb, _, arg = line.strip().partition(" ")
                    waiting_for, stopping = int(arg), verb == "stop"
                    heard = time.monotonic()
                if stretch.position >= waiting_for:
                    if not stretch.commit():
                        continue  # somebody else committed: fold again from there
                    reply(f"at {stretch.position}")
                    waiting_for = None
                    if stopping:
                        return
                elif not folded and ws.log.head() < waiting_for:
                    # The parent appended up to there before asking: a log without that
                    # position is not the parent's store.
                    reply(f"error the store at {url} has no position {waiting_for}")
                    return
                elif time.monotonic() - heard > HEARTBEAT_SECONDS:
                    reply(f"folding {stretch.position}")
                    heard = time.monotonic()
        except Exception as e:  # reported to the parent, which then catches up itself
            reply(f"error {type(e).__name__}: {e}")
