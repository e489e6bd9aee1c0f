"""``ingest --rejects FILE``: where the rejected lines and their reasons go.

The file is checked before anything is ingested (a folder that does not exist, the input
itself under any name, the store), and written whole or not at all: to a temporary file beside
it, renamed over it when complete. A device or pipe (``/dev/stderr``) is written directly.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable

from idstitch.bootstrap import resolve_url
from idstitch.cli.failures import CommandFailed
from idstitch.cli.opening import sqlite_path
from idstitch.render import to_json_bytes


def _same(a: str, b: str) -> bool:
    """Whether two paths name one file (a symlink, a hard link, another spelling)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_rejects_path(rejects: str, source: str, url: str | None) -> None:
    """Refuse a rejects file that cannot be written or would overwrite what must be kept."""
    where = f"--rejects {rejects}"
    if _same(rejects, source):
        raise CommandFailed(f"{where}: that is the input file; writing the rejects there would "
                            "destroy it (name another file)")
    store = sqlite_path(resolve_url(url))
    if store and any(_same(rejects, store + suffix) for suffix in ("", "-wal", "-shm")):
        raise CommandFailed(f"{where}: that is the store's database file (name another file)")
    if os.path.isdir(rejects):
        raise CommandFailed(f"{where}: is a directory")
    if os.path.exists(rejects):
        if not os.access(rejects, os.W_OK):
            raise CommandFailed(f"{where}: the file is not writable")
        return
    folder = os.path.dirname(os.path.abspath(rejects))
    if not os.path.isdir(folder):
        raise CommandFailed(f"{where}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CommandFailed(f"{where}: cannot create a file in {folder} (not writable)")


def _records(lines: Iterable[bytes], rejected: list[tuple[int, str]]) -> Iterable[bytes]:
    """Each rejected line as one JSON line: its line number, the reason, and the line."""
    reasons = dict(rejected)
    seen: set[int] = set()
    for index, line in enumerate(lines):
        if index in reasons:
            seen.add(index)
            raw = line.rstrip(b"\r\n").decode("utf-8", "replace")
            yield to_json_bytes({"line": index + 1, "raw": raw, "reason": reasons[index]})
    # A rejection the report numbers past the last line (a message inside a batch envelope)
    # still gets its reason written.
    for index, reason in rejected:
        if index not in seen:
            yield to_json_bytes({"line": None, "message": index, "raw": None, "reason": reason})


def write_rejects(lines: Iterable[bytes], rejects: str, rejected: list[tuple[int, str]]) -> None:
    """Write the rejects file whole (an empty one when nothing was rejected, so that a file
    left by an earlier run never passes for this run's)."""
    try:
        mode = os.stat(rejects).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        with open(rejects, "ab") as out:
            for record in _records(lines, rejected):
                out.write(record + b"\n")
        return
    folder = os.path.dirname(os.path.abspath(rejects))
    fd, temporary = tempfile.mkstemp(prefix=".rejects-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            for record in _records(lines, rejected):
                out.write(record + b"\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, rejects)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise CommandFailed(f"--rejects {rejects}: cannot write it: {e.strerror or e} (the "
                            "accepted messages were ingested)") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


__all__ = ["check_rejects_path", "write_rejects"]
