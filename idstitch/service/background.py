"""A second process that folds the log into the projections while a bulk ingest appends.

Ingest has two halves that need not wait for each other: recording events (decode, validate,
run the device commands, append) and projecting them (the identity fold, row writes). On a
store that several processes can open (SQLite file, PostgreSQL), the second half runs in a
child process, so a bulk ingest uses two cores. The child is an ordinary catch-up loop: the
projection's optimistic catch-up keeps its writes safe against any other writer, and the
ingest waits for it to reach the head before it returns, so the workspace still reads its own
writes.

The child is a fresh interpreter (:data:`COMMAND`, which runs :func:`idstitch.child.serve`),
not a fork: forking a process with open database connections and pool threads is unsafe, and
the ``multiprocessing`` spawn method would re-import the caller's main module. This module is
the parent's side; it talks to the child over its stdin and stdout, a line at a time:

- parent -> child: the store URL, the projections (the registry's specs as one JSON line, so
  the child builds exactly the parent's set), and the job (the first three lines): ``follow``
  (a bulk ingest: fold every projection as the log grows) or ``replay NAMES UNTIL`` (a rebuild:
  replay the named projections, comma-separated, to position UNTIL, then exit). While
  following, ``until N`` (answer once the projections are at position N or beyond) or
  ``stop N`` (the same, then exit), ``ending`` (no answer: the input has ended, commit each
fold that reaches the head from now on), or ``idle`` (answer ``idle N`` once there is nothing
left to fold, N the head it reached: the ingest then commits what it has gathered early, so
that the child never waits for a full batch);
- child -> parent: ``warning <text>`` (before ``ready``: a custom projection it cannot
  import, which the parent then folds itself), ``ready``, ``at N``, ``folding N`` (still
  working: sent every couple of seconds, so the parent can tell a slow child from a stuck
  one), ``idle N`` (once per ``idle`` asked: at most one such line is ever unread), or
  ``error <reason>`` (then it exits).

A rebuild replays the identity projection here and the device attributes in the child: each
reads only its own events from the log, so the two halves of the work share nothing but the
database.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from pathlib import Path
from time import monotonic

import msgspec

from idstitch.projections.base import ProjectionSpec
from idstitch.service.pipe_lines import PipeLines, ready

POLL_SECONDS = 0.01
"""How long the child waits for a request before looking at the log again."""
START_SECONDS = 60.0
"""How long the parent waits for the child to open the store."""
HEARTBEAT_SECONDS = 2.0
"""While the parent waits, the child says how far it is at least this often."""
STALL_SECONDS = 60.0
"""A child silent this long while the parent waits is taken for stuck (and ended)."""
TERM_GRACE_SECONDS = 5.0
"""How long :meth:`BackgroundProjector.close` waits for the child to end after SIGTERM before
it sends SIGKILL. A stopped (SIGSTOP) or wedged process never acts on SIGTERM; SIGKILL needs
no cooperation, and the child holds nothing that outlives it (its leases are file locks and
database sessions, which the operating system and the server release)."""
KILL_WAIT_SECONDS = 5.0
"""How long close() waits for the child to go after SIGKILL (a process the kernel cannot end
at once, stuck in a device driver, say, is left to it rather than waited for)."""
CHILD_BATCH_SIZE = 30_000
"""Events the child folds between commits at most (it also commits when asked, and when its
working set is full). The ingest's last request waits for the commit of everything folded
since the one before: with 100k, that wait was 0.30-0.41 s at the end of a 100k-message
ingest, with 30k (and IDLE_COMMIT_EVENTS 5k) 0.19-0.31 s, for a little more of the child's
time (hot rows are written more often), on the core the parent does not use."""
IDLE_COMMIT_EVENTS = 5_000
"""At the head with nothing to fold, the child commits once it holds this many events: the
parent is busy recording its next batch then, and the commit the parent's last request waits
for stays small."""
COMMAND = [sys.executable, "-P", "-c", "import sys; from idstitch.child import serve; "
           "serve(sys.stdin, sys.stdout)"]
"""How the child is started (``-c`` rather than ``-m``: the package imports that module;
``-P``: no current directory on its path)."""


def available() -> bool:
    """Whether this platform can run the child (it waits on pipes with ``poll``)."""
    return os.name == "posix"


def child_env() -> dict[str, str]:
    """The environment a child interpreter of this package starts with."""
    # The child imports idstitch from where this process did, not whatever its own
    # environment would find (an older copy would take these rows for another layout).
    # First the folder this very package was imported from (site-packages, or the checkout
    # of an editable install), and no current directory (-P): run from a checkout, `import
    # idstitch` would otherwise find the source folder, which is not the installed package
    # (its layers install under it from folders of their own). Not resolved: a strict
    # editable install links each module file to the checkout, and the folder that holds
    # the links is the one with the layers under idstitch/.
    home = str(Path(__file__).absolute().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([home, *(p for p in sys.path if p)])}


def end(proc: subprocess.Popen[bytes]) -> None:
    """End a child now and close its pipes: SIGTERM, then SIGKILL if it has not ended within
    :data:`TERM_GRACE_SECONDS`; returns within TERM_GRACE_SECONDS + KILL_WAIT_SECONDS
    whatever the child does."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(TERM_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()  # stopped or wedged: SIGTERM waits for it to run again, this not
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(KILL_WAIT_SECONDS)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):  # a write still buffered for a dead child
                pipe.close()


class BackgroundProjector:
    """The parent's handle on the child process. Any failure of the child is reported as False
    by :meth:`wait_for` and :meth:`stop`, and the caller catches up itself: the child only ever
    saves work, it is never needed for a correct result.

    Every wait on the child is bounded, whatever state it is in (dead, busy, stopped with
    SIGSTOP): a reply within :data:`START_SECONDS` or :data:`STALL_SECONDS`, a request written
    within :data:`STALL_SECONDS` (the pipe is non-blocking), its end within
    :data:`TERM_GRACE_SECONDS` of SIGTERM and :data:`KILL_WAIT_SECONDS` of SIGKILL. The pipes
    are read and written as raw file descriptors, so that what ``poll`` sees is what is
    unread: a buffered reader could hold a second reply the next ``poll`` does not see."""

    def __init__(
        self, url: str, specs: list[ProjectionSpec], command: list[str] | None = None, *,
        replay: list[str] | None = None, until: int = 0,
    ) -> None:
        """Start the child, without waiting for it to open the store (the first request
        does). With ``replay``, it replays those projections to ``until`` right away (see
        :meth:`stop`); without, it follows the log."""
        self.failed: str | None = None
        self._ready = False
        self._replies: PipeLines | None = None
        """The child's output, a line at a time."""
        self._replaying = replay is not None
        self._idle_asked = False
        """An ``idle`` request is out, its answer not read yet."""
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                command or COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                env=child_env())
        except OSError as e:  # no interpreter to start (an embedded one, say)
            self._proc = None
            self.failed = f"cannot start: {e}"
            return
        if self._proc.stdout is not None:
            self._replies = PipeLines(self._proc.stdout.fileno())
        if self._proc.stdin is not None:
            # A child that stops reading (stopped, wedged) must not block a request forever.
            os.set_blocking(self._proc.stdin.fileno(), False)
        self._send(url)
        self._send(msgspec.json.encode(specs).decode())
        self._send("follow" if replay is None else f"replay {','.join(replay)} {until}")

    def _started(self) -> bool:
        if not self._ready and self.failed is None:
            reply = self._receive(START_SECONDS)
            while reply is not None and reply.startswith("warning "):
                # Something the child cannot do that this process will (a custom projection
                # it cannot import): said to the user, never skipped.
                warnings.warn(reply[len("warning "):], RuntimeWarning, stacklevel=5)
                reply = self._receive(START_SECONDS)
            if reply != "ready":
                self._fail(reply or "did not start")
            self._ready = self.failed is None
        return self._ready

    def ready(self) -> bool:
        """Whether the child has opened the store, without waiting for it (False while it is
        still starting, or once it failed)."""
        # Only the lines already written: a warning before ``ready`` is no reason to wait.
        while not self._ready and self.failed is None and self._proc is not None:
            reply = self._receive(0)
            if reply is None:
                return False  # still starting (or its output ended: the next wait says so)
            if reply.startswith("warning "):
                warnings.warn(reply[len("warning "):], RuntimeWarning, stacklevel=4)
            elif reply == "ready":
                self._ready = True
            else:
                self._fail(reply)
        return self._ready

    @property
    def running(self) -> bool:
        """Whether the child has not failed nor exited (a long-lived follower checks it between
        requests: a child that died is noticed before anything waits for it)."""
        return self.failed is None and self._proc is not None and self._proc.poll() is None

    def wait_for(self, position: int) -> bool:
        """Block until the projections are at ``position`` or beyond; False if the child
        failed."""
        return self._ask(f"until {position}")

    def ending(self) -> None:
        """Tell the child the input has ended (no answer): it commits each fold that reaches
        the head from now on, so that the wait for the head that follows finds little
        uncommitted."""
        if self.ready():
            self._send("ending")

    def ask_idle(self) -> None:
        """Ask the child to say when it has nothing left to fold (see :meth:`idle`); one
        question at a time, none before it is ready."""
        if not self._idle_asked and self.ready():
            self._send("idle")
            self._idle_asked = self.failed is None

    def idle(self) -> int | None:
        """The head the child had folded to when it answered the ``idle`` question asked last,
        or None if it has not answered (without waiting: only what it has sent already); each
        answer is returned once. With no question out, asks one (if the child is ready)."""
        if not self._idle_asked:
            self.ask_idle()
            return None
        while self._idle_asked and self.failed is None:
            reply = self._receive(0)
            if reply is None:
                return None
            verb, _, position = reply.partition(" ")
            if verb == "idle" and position.isdigit():
                self._idle_asked = False
                return int(position)
            if verb != "folding":
                self._fail(reply)
        return None

    def stop(self, position: int) -> bool:
        """Let the child reach ``position``, then end it; False if it failed on the way. (A
        replaying child goes to its ``until`` and ends by itself: this waits for it.)"""
        done = self._ask(None if self._replaying else f"stop {position}")
        self.close()
        return done

    def close(self) -> None:
        """End the child now (it holds no lock between its transactions): SIGTERM, then
        SIGKILL if it has not ended within :data:`TERM_GRACE_SECONDS`. Returns within
        TERM_GRACE_SECONDS + KILL_WAIT_SECONDS whatever the child does."""
        proc = self._proc
        if proc is None:
            return
        # Its reader goes with its pipe: a closed descriptor's number may be reused.
        self._replies = None
        end(proc)

    def _ask(self, request: str | None) -> bool:
        if not self._started():
            return False
        if request is not None:
            self._send(request)
        while True:
            # A working child says so every HEARTBEAT_SECONDS: silence means it is stuck.
            reply = self._receive(STALL_SECONDS)
            if reply is not None and reply.startswith("idle "):
                self._idle_asked = False  # answered, and no longer a question
                continue
            if reply is None or not reply.startswith(("at ", "folding ")):
                self._fail(reply or "stopped answering")
                return False
            if reply.startswith("at "):
                return True

    def _send(self, line: str) -> None:
        stdin = None if self._proc is None else self._proc.stdin
        if stdin is None or self.failed is not None:
            return
        data = (line + "\n").encode()
        deadline = monotonic() + STALL_SECONDS
        try:
            while data:
                if not ready(stdin.fileno(), deadline - monotonic(), write=True):
                    self._fail("does not read its requests")
                    return
                data = data[os.write(stdin.fileno(), data):]
        except (BlockingIOError, OSError) as e:  # BrokenPipeError: it is gone
            self._fail(f"cannot talk to it: {e}")

    def _receive(self, timeout: float) -> str | None:
        """The child's next line, or None if it sends none within ``timeout`` seconds (or its
        output ends)."""
        if self._replies is None or self.failed is not None:
            return None
        return self._replies.next(timeout) or None  # "": it exited

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self.close()
