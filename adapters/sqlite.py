"""Projection rows in the SQLite file that holds the events (the embedded default)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
            self._conn.execute("PRAGMA synchronous=NORMAL")
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

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
