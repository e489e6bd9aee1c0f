"""A long catch-up of custom projections reads the log in a second process while it folds.

A custom projection's catch-up reads the log (its rows, decoding, unsealing each event's
personal values), builds the Changes and runs the handlers, all on one core. Far behind the
head (a projection registered on a large store, a new version, a rebuild), the reading moves
to a child (:mod:`idstitch.reading`) that reads ahead and sends the events as plain values,
which this process decodes in a fifth of the time reading them cost it (see
docs/performance.md, "Rebuild and catch-up").

The child only ever saves work: every read that its stream cannot answer (a page before what
it has sent, far past it, past where it stopped, or once it failed, stalled, ended early or
sent what does not decode) is read from the log here, as without it; a failure is logged. Its
stream is the log as the child read it, position by position: the same events and values a
read here would have given then, erased ones erased. It reads a little ahead of the fold:
what the pipe holds (about a megabyte) and one batch of the catch-up (5,000 events), as a read
here reads a batch ahead. A person forgotten in that window reaches the handlers with the
values read before the forget, as in a batch read here; the catch-up after it honours the
forget (the purge hook, or a rebuild). POSIX only, as the projecting child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from time import monotonic

import msgspec

from idstitch.domain.events import AnyDeviceEvent
from idstitch.projections.custom_runner import CustomRunner
from idstitch.projections.store import EventLog, LoggedEvent
from idstitch.service.background import child_env, end
from idstitch.service.pipe_lines import FRAME_HEADER, frame_size, ready, write_all

try:
    import fcntl
except ImportError:  # not POSIX: no child runs (can_fork is False), nothing to set
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

READ_AHEAD_EVENTS = 100_000
"""A catch-up of custom projections at least this many positions behind reads ahead in a
child: its start (~0.3 s, importing the package and opening the store) is then a small share."""
PAGE = 1_000
"""Events per frame the child sends."""
PIPE_BYTES = 1 << 20
"""The pipe's capacity asked for (Linux; 64 KiB otherwise): how far ahead the child reads."""
COMMAND = [sys.executable, "-P", "-c", "import sys; from idstitch.reading import serve; "
           "serve(sys.stdin.buffer, sys.stdout.buffer)"]
STALL_SECONDS = 5.0
"""A child silent this long (a frame takes it milliseconds) is given up: the log is read here
(the catch-up holds the projector's lock, which every query's catch-up waits for)."""
SKIP_POSITIONS = 50_000
"""A read this far past what the child has sent stops it (another projection, far ahead, is
folded now): the stream would be read and dropped up to there."""
FRAME_BYTES = 1 << 30
"""A frame longer than this is taken for a damaged length."""
_SET_PIPE_SIZE = 1031  # F_SETPIPE_SZ (Linux), not in Python's fcntl before 3.10 on every libc


class _Stalled(Exception):
    """The child sent nothing in time, or its stream ended early or damaged."""


class _LeftBehind(Exception):
    """The catch-up reads far past the child's stream: no use reading it any more."""


class ReadAhead:
    """The log up to ``until``, read by a child ahead of this process's reads, from where
    they are once the child has opened the store."""

    def __init__(self, log: EventLog, url: str, until: int,
                 command: list[str] | None = None) -> None:
        self._log = log
        self.at = until
        """The last position the stream gave (or where it starts): a read after it lines up."""
        self.served = 0
        """Events this process took from the stream (not read from the log itself)."""
        self.failed: str | None = None
        self.flowing = False
        """The child has opened the store and been told where to start: from then on a read
        that lines up waits for its stream. Before, while it starts (~0.3 s), reads are read
        here."""
        self._buffer: deque[LoggedEvent] = deque()
        self._received = until
        """The last position the child sent."""
        self._ended = False
        self._decode = msgspec.msgpack.Decoder(list[tuple[int, AnyDeviceEvent]]).decode
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                command or COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, bufsize=0, env=child_env())
        except OSError as e:  # no interpreter to start: read here
            self._proc = None
            self.failed = f"cannot start: {e}"
            return
        assert self._proc.stdout is not None
        self._fd = self._proc.stdout.fileno()
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, _SET_PIPE_SIZE, PIPE_BYTES)
        self._send(f"{url}\n{until} {PAGE}\n")

    def read(self, after: int, limit: int) -> Sequence[LoggedEvent]:
        """As :meth:`EventLog.read`: from the child's stream when the read lines up with it,
        else from the log."""
        if self.failed is None:
            try:
                events = self._stream(after, limit)
            except _LeftBehind as e:
                self._fail(str(e), warn=False)
            except Exception as e:  # anything: the child only ever saves work
                self._fail(str(e) if isinstance(e, _Stalled) else f"{type(e).__name__}: {e}")
            else:
                if events:
                    return events
        return self._log.read(after, limit)

    def _stream(self, after: int, limit: int) -> list[LoggedEvent]:
        """The stream's answer (none: it has none for this read)."""
        if not (self.flowing or self._ready(after)) or after < self.at:
            return []
        if after - self._received > SKIP_POSITIONS:
            raise _LeftBehind("left behind: the catch-up reads far past it")
        return self._take(after, limit)

    def _fail(self, reason: str, *, warn: bool = True) -> None:
        self.failed = reason
        if warn:
            log.warning("the read-ahead child failed (%s): the catch-up reads the log itself",
                        reason)
        self.close()

    def _ready(self, after: int) -> bool:
        """Whether the child has opened the store (without waiting); if so, it is told to
        stream the log from ``after`` on."""
        if self._proc is None or not ready(self._fd, 0):
            return False
        if os.read(self._fd, 1) != b"R":
            self._fail("did not start")
            return False
        self.at = self._received = after
        self._send(f"{after}\n")
        self.flowing = True
        return True

    def _send(self, text: str) -> None:
        stdin = None if self._proc is None else self._proc.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):  # gone already: its stream ends early
                write_all(stdin.fileno(), text.encode())

    def _take(self, after: int, limit: int) -> list[LoggedEvent]:
        """The next ``limit`` events after ``after`` from the stream (fewer where it stops)."""
        buffer = self._buffer
        while True:
            while buffer and buffer[0].position <= after:
                buffer.popleft()  # a read that skipped ahead: the stream follows it
            if len(buffer) >= limit or self._ended:
                break
            self._next_frame()
        taken = [buffer.popleft() for _ in range(min(limit, len(buffer)))]
        if taken:
            self.at = taken[-1].position
            self.served += len(taken)
        return taken

    def _next_frame(self) -> None:
        size = frame_size(self._exactly(FRAME_HEADER))
        if size > FRAME_BYTES:
            raise _Stalled(f"sent a frame of {size} bytes")
        if size == 0:
            self._ended = True
            return
        try:
            events = self._decode(self._exactly(size))
        except msgspec.DecodeError as e:
            raise _Stalled(f"sent a frame that does not decode: {e}") from e
        if not events or not self._received < events[0][0] <= events[-1][0]:
            raise _Stalled("sent a frame out of order")
        self._received = events[-1][0]
        self._buffer.extend(map(LoggedEvent._make, events))

    def _exactly(self, size: int) -> bytes:
        chunks: list[bytes] = []
        deadline = monotonic() + STALL_SECONDS
        while size:
            if not ready(self._fd, deadline - monotonic()):
                raise _Stalled("sent nothing in time")
            chunk = os.read(self._fd, size)
            if not chunk:
                raise _Stalled("ended early")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """End the child (done, or no longer needed)."""
        if self._proc is not None:
            end(self._proc)
            self._proc = None


@contextlib.contextmanager
def reading_ahead(custom: CustomRunner, log: EventLog, url: str | None, until: int,
                  names: Sequence[str]) -> Iterator[ReadAhead | None]:
    """While the block runs, ``custom`` reads its pages ahead in a child if the furthest
    behind of ``names`` is at least :data:`READ_AHEAD_EVENTS` positions behind ``until`` (and
    ``url`` names a store another process can open)."""
    ahead = None
    if url is not None and names:
        try:
            lowest = min(custom.position(n) for n in names)
        except Exception:  # the database: the catch-up meets it and reports it
            lowest = until
        if until - lowest >= READ_AHEAD_EVENTS:
            ahead = ReadAhead(log, url, until)
    pages: Callable[[int, int], Sequence[LoggedEvent]] = custom.pages
    if ahead is not None:
        custom.pages = ahead.read
    try:
        yield ahead
    finally:
        custom.pages = pages
        if ahead is not None:
            ahead.close()
