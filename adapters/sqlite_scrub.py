"""The WAL checkpoint a forget owes the SQLite file, until it has run to the end.

A forget purges a person's rows and destroys its keys; the new pages (freed bytes zeroed by
``secure_delete``) go to the WAL, and the file keeps the old ones until a checkpoint copies the
new ones over them. ``PRAGMA wal_checkpoint(TRUNCATE)`` does that at once, unless a reader in
another connection (a backup, a replication tool, a long query) holds a snapshot older than the
purge: SQLite then waits for it (:data:`WAIT_SECONDS`) and gives up, saying so only in
the row the pragma returns. Such a checkpoint is *owed*: tried again, without waiting, after
this connection's later commits (at most once per :data:`RETRY_SECONDS`) and when it closes,
until one runs to the end; the forget reports whether it did (``ShredReport.scrubbed``).
"""

from __future__ import annotations

import sqlite3
import time

WAIT_SECONDS = 30.0
"""How long a forget's checkpoint waits for the readers that hold it back."""
RETRY_SECONDS = 1.0
"""How often, at most, an owed checkpoint is tried again after a commit."""


class WalScrub:
    """One connection's owed checkpoint (see the module)."""

    def __init__(self) -> None:
        self.owed = False
        self._next = 0.0

    def run(self, conn: sqlite3.Connection, *, wait: bool = True) -> bool:
        """Checkpoint and truncate the WAL; whether it ran to the end (else it is owed).
        Waits up to :data:`WAIT_SECONDS` for the readers that hold it back; ``wait=False``:
        gives up at once (after a commit, at close)."""
        busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute(f"PRAGMA busy_timeout={int(WAIT_SECONDS * 1000) if wait else 0}")
        try:
            # (busy, WAL frames, frames copied): busy is 1 when a reader held it back.
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        self.owed = bool(busy)
        self._next = time.monotonic() + RETRY_SECONDS
        return not busy

    def retry(self, conn: sqlite3.Connection) -> None:
        """After a commit: the owed checkpoint, without waiting, when it is due. Its failure
        is not the commit's: tried again later."""
        if self.owed and time.monotonic() >= self._next:
            self.settle(conn)

    def settle(self, conn: sqlite3.Connection) -> None:
        """The owed checkpoint now, without waiting (before the connection closes)."""
        if self.owed:
            try:
                self.run(conn, wait=False)
            except sqlite3.Error:
                self._next = time.monotonic() + RETRY_SECONDS


__all__ = ["RETRY_SECONDS", "WalScrub"]
