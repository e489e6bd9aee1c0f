"""The rejects log: every message the endpoint refused inside a batch, with its reason.

One JSON object a line, appended and synced before the request that carried the message is
answered, so a refusal the client was told about is never lost either. The operator reads it
with any NDJSON tool, fixes what can be fixed, and feeds the ``message`` fields back through
``idstitch ingest``. A message naming a forgotten person is not kept whole: see
:mod:`idstitch.service.withholding`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from idstitch.service.withholding import withheld

DEFAULT_NAME = "idstitch-rejects.ndjson"
"""The log's name in the working directory when the store is not a SQLite file."""


def default_path(url: str) -> Path:
    """Next to a SQLite store (``<file>.rejects.ndjson``); else ``./idstitch-rejects.ndjson``."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):] + ".rejects.ndjson")
    return Path(DEFAULT_NAME)


def entry(received_at: str, endpoint: str, index: int, reason: str, message: Any,
          forgotten: Callable[[str], bool] | None) -> dict[str, Any]:
    """One line of the log: the message as it was received; or, when it names a forgotten
    person (``forgotten``: the check of an identifier, None when nobody is forgotten), only
    its ``messageId`` and ``type``, marked ``"erased": true``."""
    if isinstance(message, (msgspec.Raw, bytes)):
        text = bytes(message)
        try:
            text.decode()
        except UnicodeDecodeError:
            # Refused for it (a byte that is not UTF-8 inside a string): the log stays text
            # that any NDJSON tool reads, with U+FFFD where those bytes were.
            message = msgspec.Raw(text.decode(errors="replace").encode())
    kept = None if forgotten is None else withheld(message, forgotten)
    line = {"received_at": received_at, "endpoint": endpoint, "index": index, "reason": reason,
            "message": message if kept is None else kept}
    if kept is not None:
        line["erased"] = True
    return line


class RejectsLog:
    """Appends refused messages to an NDJSON file (opened on first use, by the writer)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Append entries ``{"received_at", "endpoint", "index", "reason", "message"}``, synced."""
        if not entries:
            return
        encoder = msgspec.json.Encoder()
        data = b"".join(encoder.encode(entry) + b"\n" for entry in entries)
        # O_APPEND: each write lands at the end even if an operator truncates the file meanwhile.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["DEFAULT_NAME", "RejectsLog", "default_path", "entry"]
