"""``ingest --rejects FILE``: where the rejected lines and their reasons go.

The file is checked before anything is ingested (a folder that does not exist, the input
itself under any name, the store), and written whole or not at all: to a temporary file beside
it, renamed over it when complete. A device or pipe (``/dev/stderr``) is written directly. A
rejected message naming a forgotten person is written without its text (see
:mod:`idstitch.service.withholding`).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator

from idstitch.adapters import batches
from idstitch.bootstrap import resolve_url
from idstitch.cli.failures import CommandFailed
from idstitch.errors import IdstitchError
from idstitch.opening import sqlite_path
from idstitch.render import to_json_bytes
from idstitch.service.withholding import withheld


def _same(a: str, b: str) -> bool:
    """Whether two paths name one file (a symlink, a hard link, another spelling)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


BESIDE = ("", "-wal", "-shm", "-journal", "-write.lock")
"""The store's file and those SQLite and idstitch keep beside it (and its ``-*.lease`` and
``-*.keep`` files)."""


def _beside(rejects: str, store: str) -> bool:
    """Whether ``rejects`` names the store's file or one kept beside it (:data:`BESIDE`, the
    lease and keep files): by identity (a link, another spelling), and by path, also when none exists
    yet (an ingest that starts the store would write the rejects over it). Other names that
    begin like the store's (``app.db-rejects.ndjson``) are the caller's."""
    if any(_same(rejects, store + suffix) for suffix in BESIDE):
        return True
    mine, base = os.path.realpath(rejects), os.path.realpath(store)
    return mine in {base + s for s in BESIDE} or (mine.startswith(base + "-")
                                                  and mine.endswith((".lease", ".keep")))


def check_rejects_path(rejects: str, source: str | None, url: str | None) -> None:
    """Refuse a rejects file that cannot be written or would overwrite what must be kept:
    the input file (``source``; None for ``serve``, which has none), the store's files."""
    where = f"--rejects {rejects}"
    if source is not None and _same(rejects, source):
        raise CommandFailed(f"{where}: that is the input file; writing the rejects there would "
                            "destroy it (name another file)")
    store = sqlite_path(resolve_url(url))
    if store and _beside(rejects, store):
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


def _messages(line: bytes) -> tuple[list[bytes | None], bool]:
    """The messages a line is to ``ws.ingest``, as their raw text where it is known, and
    whether the line is a batch envelope: none for a blank line, each message of an envelope
    (the rule is ingest's own, :func:`idstitch.adapters.batches.envelope`), else the line."""
    text = line.rstrip(b"\r\n")
    if not text.strip():
        return [], False
    try:
        found = batches.envelope(text)
    except IdstitchError:
        found = None  # an envelope refused whole: one rejection, the line's
    if found is None:
        return [text], False
    try:
        inner = json.loads(text)["batch"]
        return [json.dumps(m, ensure_ascii=False).encode() for m in inner], True
    except (ValueError, KeyError, TypeError):
        return [None] * len(found), True


def located(lines: Iterable[bytes], wanted: Iterable[int]
            ) -> Iterator[tuple[int, int, int | None, bytes | None]]:
    """(message index, line number, place in its batch envelope or None, its raw text) of
    each wanted message, in input order, numbered as ``ws.ingest`` numbers messages (blank
    lines count none, an envelope its messages)."""
    wanted = set(wanted)
    index = 0
    for number, line in enumerate(lines, 1):
        if not wanted:
            return
        messages, envelope = _messages(line)
        for place, raw in enumerate(messages):
            if index in wanted:
                wanted.discard(index)
                yield index, number, place if envelope else None, raw
            index += 1


def _records(lines: Iterable[bytes], rejected: list[tuple[int, str]],
             forgotten: Callable[[str], bool] | None) -> Iterable[bytes]:
    """Each rejected message as one JSON line: its line number, the reason, and its text (for
    a message inside a batch envelope, that message's, with its place in the batch); a
    message naming a forgotten person without its text, marked ``"erased": true``."""
    reasons = dict(rejected)
    seen: set[int] = set()
    for index, number, place, raw in located(lines, reasons):
        seen.add(index)
        record: dict[str, object] = {"line": number}
        if place is not None:
            record["batch_index"] = place
        if raw is not None and forgotten is not None and withheld(raw, forgotten) is not None:
            raw = None
            record["erased"] = True
        record["raw"] = None if raw is None else raw.decode("utf-8", "replace")
        record["reason"] = reasons[index]
        yield to_json_bytes(record)
    # A rejection numbered past the last message (the input changed since) still gets its
    # reason written.
    for index, reason in rejected:
        if index not in seen:
            yield to_json_bytes({"line": None, "message": index, "raw": None, "reason": reason})


def write_rejects(lines: Iterable[bytes], rejects: str, rejected: list[tuple[int, str]],
                  forgotten: Callable[[str], bool] | None = None) -> None:
    """Write the rejects file whole (an empty one when nothing was rejected, so that a file
    left by an earlier run never passes for this run's). ``forgotten``: the check of an
    identifier against the forgotten ones (None: nobody is forgotten)."""
    try:
        mode = os.stat(rejects).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        # A pipe or a device (/dev/stdout, a FIFO): written as it is, and its failure named.
        try:
            with open(rejects, "ab") as out:
                for record in _records(lines, rejected, forgotten):
                    out.write(record + b"\n")
        except OSError as e:
            raise CommandFailed(f"--rejects {rejects}: cannot write it: {e.strerror or e} (the "
                                "messages were ingested; the first reasons are above)") from e
        return
    folder = os.path.dirname(os.path.abspath(rejects))
    fd, temporary = tempfile.mkstemp(prefix=".rejects-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            for record in _records(lines, rejected, forgotten):
                out.write(record + b"\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, rejects)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise CommandFailed(f"--rejects {rejects}: cannot write it: {e.strerror or e} (the "
                            "accepted messages were ingested; the first reasons are "
                            "above)") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


__all__ = ["check_rejects_path", "located", "write_rejects"]
