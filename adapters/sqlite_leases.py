"""Projection leases and holds beside a SQLite file (``runner.Leases``): an exclusive ``flock`` on a file
``<database>-<projection>.lease`` per projection, so that one process at a time folds a
projection (see :mod:`idstitch.projections.runner`).

flock is per open file, so two stores in one process exclude each other as two processes do,
and a process that dies releases its leases with its files.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from contextlib import contextmanager

fcntl: types.ModuleType | None
try:
    import fcntl
except ImportError:  # no flock (Windows): every process folds, the optimistic commits keep it safe
    fcntl = None


def beside(path: str, suffix: str) -> int | None:
    """A descriptor of the file ``<path>-<suffix>`` (created if missing); None where there is
    nothing to lock with: no flock, an in-memory database, an unwritable folder."""
    if fcntl is None or path == ":memory:":
        return None
    try:
        return os.open(f"{path}-{suffix}", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None


class FileLeases:
    """The leases of the store at ``path`` (``:memory:``: no other process can open it)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._files: dict[str, int] = {}
        """A file descriptor per projection whose lease was taken at least once."""
        self._held: set[str] = set()

    def try_lease(self, name: str) -> bool:
        """Take the lease of a projection unless another holder has it (without waiting)."""
        if name in self._held:
            return True
        if fcntl is None or self._path == ":memory:":
            return True  # nobody else can open this store, or nothing to lock it with
        fd = self._files.get(name)
        if fd is None:
            fd = beside(self._path, f"{name}.lease")
            if fd is None:
                return True  # an unwritable folder: fold anyway (optimistic commits stay safe)
            self._files[name] = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held.add(name)
        return True

    def release_lease(self, name: str) -> None:
        """Give the lease back (nothing if it is not held here)."""
        if name in self._held:
            self._held.discard(name)
            fd = self._files.get(name)
            if fd is not None and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lease files, which releases the leases."""
        self._held.clear()
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


class FileHolds:
    """Which processes keep a custom projection (see
    :meth:`~idstitch.projections.custom.CustomTables.keep`): a shared ``flock`` on
    ``<database>-<projection>.keep`` per projection kept, held until :meth:`close`."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._kept: dict[str, int] = {}

    def keep(self, name: str) -> None:
        """Hold the projection's keep file shared (once; waits out a forget's drop under way,
        which holds it exclusively for a moment)."""
        if name in self._kept:
            return
        fd = beside(self._path, f"{name}.keep")
        if fd is None or fcntl is None:
            return
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._kept[name] = fd

    @contextmanager
    def unkept(self, name: str) -> Iterator[bool]:
        """Hold the keep file exclusively while the block runs, without waiting: True when
        held (nobody keeps the projection), False when a keeper has it or nothing can tell."""
        fd = beside(self._path, f"{name}.keep")
        if fd is None or fcntl is None:
            yield False  # cannot tell: taken as kept
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # (releases the lock)

    def close(self) -> None:
        """Close the keep files, which releases the holds."""
        for fd in self._kept.values():
            os.close(fd)
        self._kept.clear()


__all__ = ["FileHolds", "FileLeases", "beside"]
