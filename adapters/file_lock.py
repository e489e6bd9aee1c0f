"""An exclusive ``flock`` that is waited for in the kernel, for a limited time.

SQLite writers queue for a file's write lock with a blocking ``flock`` (see
:meth:`idstitch.adapters.sqlite.SqliteProjectionStore._writing`): the kernel wakes the next
writer the moment the lock is released. A blocking ``flock`` has no time limit, though, and a
holder that never releases (a process stopped with SIGSTOP, or wedged, in the middle of a
write) would hang every other writer for good. Here an uncontended lock is taken at once; a
contended one is waited for in a thread of its own, for at most the time given: the caller
then gets False, and the waiting thread, if it gets the lock later, gives it back and closes
its descriptor (each abandoned wait keeps a descriptor of its own, so it can never release a
lock a later wait took).
"""

from __future__ import annotations

import os
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager

from idstitch.domain.errors import StoreError

fcntl: types.ModuleType | None
try:
    import fcntl
except ImportError:  # no flock (Windows): callers fall back to SQLite's own wait
    fcntl = None


WRITE_LOCK_SECONDS = 30.0
"""How long a write waits for a SQLite file's write lock before it fails with StoreError: the
timeout SQLite's own wait has (the stores' ``timeout=30``, and the event recorder's)."""


class FileLock:
    """An exclusive lock on the file at ``path`` (created if missing), for one holder at a
    time in this process: callers serialise their own threads first."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._unavailable = fcntl is None
        """No flock, or the file cannot be opened (an unwritable folder): nothing to lock."""

    def acquire(self, timeout: float) -> bool | None:
        """Take the lock, waiting at most ``timeout`` seconds: True when held, False when
        another holder kept it that long, None when there is nothing to lock with (no flock,
        or the file cannot be opened: the caller goes on without it)."""
        if self._unavailable or fcntl is None:
            return None
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                self._unavailable = True
                return None
        fd = self._fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        got = threading.Event()
        guard = threading.Lock()
        abandoned = False

        def wait() -> None:
            assert fcntl is not None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                return  # the caller's wait runs out; nothing is held
            with guard:
                if abandoned:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                    return
                got.set()

        threading.Thread(target=wait, name=f"flock {self._path}", daemon=True).start()
        if got.wait(timeout):
            return True
        with guard:
            if got.is_set():
                return True  # it came at the last moment
            abandoned = True
        self._fd = None  # the waiting thread owns (and closes) that descriptor now
        return False

    def release(self) -> None:
        """Give the lock back."""
        if fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the descriptor (which releases the lock if held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextmanager
def queued(lock: FileLock | None, what: str) -> Iterator[None]:
    """Hold ``lock`` (None: nothing to hold) while the block runs, waiting at most
    :data:`WRITE_LOCK_SECONDS` for it: a holder that never lets go (a process stopped, or
    wedged, in the middle of a write) must not hang this one for good, the same limit as
    SQLite's own wait. StoreError naming ``what`` past it."""
    held = None if lock is None else lock.acquire(WRITE_LOCK_SECONDS)
    if held is False:
        raise StoreError(f"cannot write {what}: another process has held its write lock for "
                         f"{WRITE_LOCK_SECONDS:.0f} s (stopped or stuck?)")
    try:
        yield
    finally:
        if held and lock is not None:
            lock.release()


__all__ = ["WRITE_LOCK_SECONDS", "FileLock", "queued"]
