"""The HTTP process's handle on the writer process (:mod:`idstitch.serve.worker`).

The same face as :class:`idstitch.serve.writer.Writer` (``start``, ``submit``, ``coming``,
``stop``, ``running``, ``groups``, ``rejects``), so the HTTP layer does not know which one it
has. With a store URL the writer runs in a process of its own: the requests' HTTP parsing, body
decoding and checks then no longer share one interpreter lock with the commits.

A request's messages cross as a frame of JSON lines (:mod:`idstitch.serve.frames`), written by
a sender thread (a full pipe never blocks the event loop); a reader thread answers each
request's future when the writer's answer comes. If the writer process ends unasked (killed,
crashed), every request it had not answered gets :class:`WriterGone` (a 500: its messages may
or may not be recorded, and the clients retry; a duplicate ``messageId`` records nothing), and
the next request starts a new writer process.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgspec

from idstitch.serve import frames
from idstitch.serve.rejects import RejectsLog
from idstitch.serve.writer import GROUP_MESSAGES, Outcome, Submission

COMMAND = [sys.executable, "-P", "-c", "from idstitch.serve.worker import main; main()"]
"""How the writer process is started (``-P``: no current directory on its path)."""

log = logging.getLogger("idstitch.serve")


class WriterGone(RuntimeError):
    """The writer process ended before it answered: the request's messages may or may not be
    recorded."""


class WriterFailed(RuntimeError):
    """The writer process could not open the store, or its group's commit failed."""


_STOP = object()


class WriterProcess:
    """Starts, feeds and stops the writer process; restartable after it died."""

    def __init__(self, url: str | None, *, external: bool, rejects: RejectsLog,
                 group_messages: int = GROUP_MESSAGES, create: bool = True) -> None:
        self.url = url
        self.external = external
        self.create = create
        """Whether the next start may start a new store (only the first start, if at all)."""
        self.rejects = rejects
        self.group_messages = group_messages
        self.groups = 0
        """Commits the writer process made so far (as its last answer said)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._pending: dict[int, Future[Outcome]] = {}
        self._next = 0
        self._coming = 0
        self._gone = True
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        """The writer process's id while it runs."""
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def running(self) -> bool:
        """Started, and neither stopped nor gone."""
        return not self._gone and self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the writer process and wait until it has opened the store; raises
        WriterFailed if it could not."""
        with self._start_lock:
            if self.running:
                return
            self._reap()
            # The child imports idstitch from where this process did (as the projecting child
            # does, see idstitch.service.background): the folder this package came from first.
            home = str(Path(__file__).absolute().parents[2])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([home, *(p for p in sys.path if p)])}
            proc = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    bufsize=0, env=env)
            assert proc.stdin is not None
            assert proc.stdout is not None
            try:
                frames.write(proc.stdin.fileno(), frames.Config(
                    self.url, self.external, str(self.rejects.path.absolute()),
                    self.group_messages, self.create))
                first = frames.read_from_writer(proc.stdout.fileno())
            except OSError:
                first = None
            if not isinstance(first, frames.Ready):
                proc.kill()
                proc.wait()
                reason = first.reason if isinstance(first, frames.Failed) else "it exited"
                raise WriterFailed(f"the writer process could not open the store: {reason}")
            self._proc = proc
            self.create = False
            self._outbox = queue.SimpleQueue()
            self._gone = False
            self._threads = [
                threading.Thread(target=self._send, args=(proc, self._outbox),
                                 name="idstitch-serve-sender", daemon=True),
                threading.Thread(target=self._receive, args=(proc,),
                                 name="idstitch-serve-receiver", daemon=True)]
            for thread in self._threads:
                thread.start()

    def coming(self, change: int) -> None:
        """Count requests admitted whose messages are on their way (see Writer.coming)."""
        with self._lock:
            self._coming += change

    def submit(self, submission: Submission) -> Future[Outcome]:
        """Send a request's messages; the future is answered once they are committed."""
        future: Future[Outcome] = Future()
        with self._lock:
            if self._gone:
                future.set_exception(WriterGone("the writer process is not running"))
                return future
            self._next += 1
            self._pending[self._next] = future
            frame = frames.Sent(
                self._next, submission.endpoint, submission.received_at, submission.lines,
                submission.indices, [(index, reason, _json(message))
                                     for index, reason, message in submission.refused],
                submission.names_person, self._coming)
        self._outbox.put(frame)
        return future

    def stop(self) -> None:
        """Answer everything sent so far, then end the writer process (it closes the store)."""
        with self._start_lock:
            if self._proc is None:
                return
            if self.running:
                self._outbox.put(_STOP)
            self._reap()

    def _reap(self) -> None:
        """Wait for the writer process and its threads to end (after a stop, or its death)."""
        proc = self._proc
        if proc is None:
            return
        proc.wait()
        for thread in self._threads:
            thread.join()
        self._proc = None

    def _send(self, proc: subprocess.Popen[bytes], outbox: queue.SimpleQueue[Any]) -> None:
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        try:
            while True:
                frame = outbox.get()
                if frame is _STOP:
                    frames.write(fd, frames.Stop())
                    return
                frames.write(fd, frame)
        except OSError:
            pass  # it is gone: the receiver fails what it had not answered
        finally:
            proc.stdin.close()

    def _receive(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            frame = frames.read_from_writer(fd)
            if not isinstance(frame, frames.Answer):
                break
            with self._lock:
                future = self._pending.pop(frame.id, None)
                self.groups = max(self.groups, frame.groups)
            if future is None:
                continue
            if frame.failed is not None:
                future.set_exception(WriterFailed(frame.failed))
            else:
                future.set_result(Outcome(frame.received, list(frame.rejected)))
        proc.stdout.close()
        with self._lock:
            self._gone = True
            pending, self._pending = self._pending, {}
        self._outbox.put(_STOP)  # the sender ends too
        if pending:
            log.error("the writer process ended with %d requests unanswered: they are answered "
                      "500 (their messages may or may not be recorded)", len(pending))
        for future in pending.values():
            future.set_exception(WriterGone("the writer process ended before it answered"))


def _json(message: Any) -> bytes:
    """A refused message as JSON text for the frame (msgspec.Raw: its text already)."""
    return bytes(message) if isinstance(message, msgspec.Raw) else msgspec.json.encode(message)


__all__ = ["COMMAND", "WriterFailed", "WriterGone", "WriterProcess"]
