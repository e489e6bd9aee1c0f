"""Lines read from a raw pipe: the one reader of both ends of the projecting child's pipes.

The parent (:class:`idstitch.service.background.BackgroundProjector`) reads the child's replies
with it, and the child (:mod:`idstitch.child`) the parent's requests. Both wait with ``poll``,
so both read the raw file descriptor: what ``poll`` sees is then exactly what is unread. A
buffered reader takes whatever the pipe holds, and a second line sent right after the first
would wait in its buffer, unseen by ``poll`` (two requests arriving together left the child
deaf to the second).

It also holds what the children's pipes share besides lines: waiting with ``poll``
(:func:`ready`), whole writes (:func:`write_all`), and the read-ahead child's frame format.
"""

from __future__ import annotations

import os
import select
from time import monotonic

CHUNK_BYTES = 65536
"""How much one read takes from the pipe at most."""


def ready(fd: int, timeout: float | None, *, write: bool = False) -> bool:
    """Whether the pipe ``fd`` can be read (or, with ``write``, written) within ``timeout``
    seconds (None: however long it takes); its end counts as ready (the read or write then
    says so). ``poll``, not ``select``: select refuses descriptors past 1023, which a process
    holding many connections (a server) gives its pipes."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))


FRAME_HEADER = 8
"""The bytes of a frame's length, before its data (little-endian): the read-ahead child's
frames (:mod:`idstitch.reading` writes them, :mod:`idstitch.service.read_ahead` reads them)."""


def framed(data: bytes) -> bytes:
    """``data`` as one frame: its length, then itself."""
    return len(data).to_bytes(FRAME_HEADER, "little") + data


def frame_size(header: bytes) -> int:
    """The length a frame's header (:data:`FRAME_HEADER` bytes) announces."""
    return int.from_bytes(header, "little")


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the blocking descriptor ``fd``: a write a signal interrupts
    midway returns what it wrote, and the rest is written next (a buffered writer on a full
    pipe sent damaged frames instead)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class PipeLines:
    """The lines arriving on the pipe ``fd`` (not closed by this reader: its owner does)."""

    def __init__(self, fd: int) -> None:
        """Read from the raw file descriptor ``fd``."""
        self._fd = fd
        self._unread = b""
        """What arrived after the last whole line returned."""

    def next(self, timeout: float | None) -> str | None:
        """The next non-blank line, stripped; None if no whole line came within ``timeout``
        seconds (0: only what has arrived; None: wait for it, however long); "" once the pipe
        has ended (the other process is gone, or the pipe cannot be read).

        Blank lines are skipped, not returned: neither end sends one, and a blank line is no
        answer to wait on nor a reason to give up. Bytes that are not UTF-8 are replaced, not
        raised: the line still tells the reader something went wrong."""
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            while b"\n" not in self._unread:
                left = None if deadline is None else max(0.0, deadline - monotonic())
                if not ready(self._fd, left):
                    return None
                try:
                    chunk = os.read(self._fd, CHUNK_BYTES)
                except OSError:
                    return ""
                if not chunk:
                    return ""
                self._unread += chunk
            line, _, self._unread = self._unread.partition(b"\n")
            text = line.decode(errors="replace").strip()
            if text:
                return text
