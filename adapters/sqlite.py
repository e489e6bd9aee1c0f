"""Projection rows in the SQLite file that holds the events (the embedded default)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from idstitch.adapters.eventlog import WriteConflict
from idstitch.adapters.sqlstore import Cursor, SqlProjectionStore
from idstitch.domain.errors import StoreError


class SqliteProjectionStore(SqlProjectionStore):
    """One connection, one lock: SQLite has one writer anyway, and this keeps reads cheap."""

    def __init__(self, path: str) -> None:
        try:
            # isolation_level=None: we issue BEGIN ourselves, so a write transaction starts with
            # BEGIN IMMEDIATE and takes the file's write lock before reading the tracking row.
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                         timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # Projection rows are derived data: a commit of theirs lost to a power cut is
            # replayed from the log. Appends to the log itself sync (see append_events).
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # Bulk batches write thousands of pages; checkpointing (and syncing) the WAL after
            # every one of them cost ~6 ms a commit. Checkpoint every ~40 MB instead.
            self._conn.execute("PRAGMA wal_autocheckpoint=10000")
            for ddl in self.schema():
                self._conn.execute(ddl)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite database {path!r}: {e}") from e
        self._lock = threading.RLock()

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield cur
            except BaseException:
                self._conn.rollback()
                raise
            else:
                self._conn.commit()
            finally:
                cur.close()

    # The batch path of the event log (FastLog): the recorder's own stored_events table,
    # written with executemany in one transaction instead of one statement per event.

    def append_events(self, rows: list[tuple[str, int, str, bytes]]) -> list[int]:
        """Insert events in one transaction; their positions (rowids)."""
        with self._lock:
            try:
                # The log is the source of truth: an append that returned survives a power cut
                # (the WAL is synced at this commit, as eventsourcing's own recorder does).
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
                    "VALUES (?, ?, ?, ?)", rows)
                last = self._conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                self._conn.commit()
            except sqlite3.IntegrityError as e:
                self._conn.rollback()
                raise WriteConflict(str(e)) from e
            except sqlite3.Error as e:
                self._conn.rollback()
                raise StoreError(f"cannot append events: {e}") from e
            finally:
                if self._conn.in_transaction:
                    # Anything but a SQLite error (an interrupt, say) got here mid-transaction:
                    # end it, or the connection keeps the write lock (and refuses the PRAGMA).
                    self._conn.rollback()
                self._conn.execute("PRAGMA synchronous=NORMAL")
        # Under the write lock, with no AUTOINCREMENT and no deletes, the rowids of one
        # transaction's inserts are consecutive.
        return list(range(last - len(rows) + 1, last + 1))

    def read_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(position, state) after a position."""
        with self._lock:
            try:
                rows: list[tuple[int, bytes]] = self._conn.execute(
                    "SELECT rowid, state FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (after, limit)).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read the log: {e}") from e
        return rows

    def read_selected(
        self, after: int, until: int, limit: int, topics: list[str], first: bool
    ) -> list[tuple[int, bytes]]:
        """(position, state) of the events with these topics (and, with ``first``, every
        device's first event) in ``after < position <= until``."""
        marks = ", ".join("?" * len(topics))
        also = " OR originator_version = 1" if first else ""
        with self._lock:
            try:
                # The table is scanned in rowid order and the other events skipped in C: a
                # replay then decodes only the events it folds.
                rows: list[tuple[int, bytes]] = self._conn.execute(
                    "SELECT rowid, state FROM stored_events WHERE rowid > ? AND rowid <= ? "
                    f"AND (topic IN ({marks}){also}) ORDER BY rowid LIMIT ?",
                    (after, until, *topics, limit)).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read the log: {e}") from e
        return rows

    def head(self) -> int:
        """The last position (0 when empty)."""
        with self._lock:
            try:
                row = self._conn.execute("SELECT max(rowid) FROM stored_events").fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read the log: {e}") from e
        return int(row[0] or 0)

    def device_events(self, aggregate_ids: list[UUID]) -> list[tuple[int, bytes]]:
        """(version, state) of these aggregates' events, by aggregate then version."""
        out: list[tuple[int, bytes]] = []
        with self._lock:
            try:
                for i in range(0, len(aggregate_ids), self.chunk):
                    part = [a.hex for a in aggregate_ids[i : i + self.chunk]]
                    marks = ", ".join("?" * len(part))
                    out.extend(self._conn.execute(
                        "SELECT originator_version, state FROM stored_events "
                        f"WHERE originator_id IN ({marks}) "
                        "ORDER BY originator_id, originator_version", part).fetchall())
            except sqlite3.Error as e:
                raise StoreError(f"cannot load devices: {e}") from e
        return out

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
