"""The default :class:`~idstitch.domain.ports.KeyStore` implementations: in memory, and a table
in the workspace's SQLite file.

A key row holds the 32 random bytes of one data subject's AES-GCM key; destroying it overwrites
the row with a tombstone (NULL key), so the id can never get a key again. On SQLite the delete
runs with ``PRAGMA secure_delete=ON`` and the WAL is checkpointed and truncated afterwards, so
the freed bytes of the key stay neither in the file's free pages nor in the WAL.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable

from idstitch.domain.errors import StoreError

KEY_BYTES = 32
"""AES-256-GCM."""


class MemoryKeyStore:
    """Keys in a dict: the memory store's (a product feature, gone with the process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, bytes | None] = {}
        self._suppressed: set[bytes] = set()

    def get(self, key_id: str) -> bytes | None:
        """The key, or None (never created, or destroyed)."""
        return self._keys.get(key_id)

    def create(self, key_id: str) -> bytes | None:
        """The key, created if new; None if destroyed."""
        with self._lock:
            if key_id not in self._keys:
                self._keys[key_id] = os.urandom(KEY_BYTES)
            return self._keys[key_id]

    def destroy(self, key_ids: Iterable[str]) -> None:
        """Tombstone the keys."""
        with self._lock:
            for key_id in key_ids:
                self._keys[key_id] = None

    def is_destroyed(self, key_id: str) -> bool:
        """True after :meth:`destroy`."""
        return key_id in self._keys and self._keys[key_id] is None

    def suppress(self, digests: Iterable[bytes]) -> None:
        """Remember keyed hashes of forgotten identifiers."""
        with self._lock:
            self._suppressed.update(digests)

    def suppressed(self, digest: bytes) -> bool:
        """True for a remembered keyed hash."""
        return digest in self._suppressed


KEYS_DDL = ("CREATE TABLE IF NOT EXISTS idstitch_keys (key_id TEXT PRIMARY KEY, key BLOB)",
            "CREATE TABLE IF NOT EXISTS idstitch_suppressed (digest BLOB PRIMARY KEY)")


class SqliteKeyStore:
    """Keys in the ``idstitch_keys`` table of the workspace's SQLite file (own connection)."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        try:
            self._con = sqlite3.connect(path, timeout=30, isolation_level=None,
                                        check_same_thread=False)
            self._con.execute("PRAGMA journal_mode=WAL")
            # Freed cells and pages are zeroed, so a destroyed key leaves no bytes behind.
            self._con.execute("PRAGMA secure_delete=ON")
            for ddl in KEYS_DDL:
                self._con.execute(ddl)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the key store: {e}") from e

    def get(self, key_id: str) -> bytes | None:
        """The key, or None (never created, or destroyed)."""
        with self._lock:
            row = self._con.execute("SELECT key FROM idstitch_keys WHERE key_id = ?",
                                    (key_id,)).fetchone()
        return None if row is None else row[0]

    def create(self, key_id: str) -> bytes | None:
        """The key, created if new (a key created and never used is harmless); None if
        destroyed."""
        with self._lock:
            try:
                self._con.execute("INSERT OR IGNORE INTO idstitch_keys VALUES (?, ?)",
                                  (key_id, os.urandom(KEY_BYTES)))
                row = self._con.execute("SELECT key FROM idstitch_keys WHERE key_id = ?",
                                        (key_id,)).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"cannot create a key: {e}") from e
        return None if row is None else row[0]

    def destroy(self, key_ids: Iterable[str]) -> None:
        """Tombstone the keys, zero the freed bytes, and empty the WAL."""
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.executemany(
                    "INSERT INTO idstitch_keys VALUES (?, NULL) "
                    "ON CONFLICT(key_id) DO UPDATE SET key = NULL", [(k,) for k in key_ids])
                self._con.execute("COMMIT")
                self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                if self._con.in_transaction:
                    self._con.execute("ROLLBACK")
                raise StoreError(f"cannot destroy keys: {e}") from e

    def is_destroyed(self, key_id: str) -> bool:
        """True after :meth:`destroy`."""
        with self._lock:
            row = self._con.execute("SELECT key IS NULL FROM idstitch_keys WHERE key_id = ?",
                                    (key_id,)).fetchone()
        return row is not None and bool(row[0])

    def suppress(self, digests: Iterable[bytes]) -> None:
        """Remember keyed hashes of forgotten identifiers."""
        with self._lock:
            self._con.executemany("INSERT OR IGNORE INTO idstitch_suppressed VALUES (?)",
                                  [(d,) for d in digests])

    def suppressed(self, digest: bytes) -> bool:
        """True for a remembered keyed hash."""
        with self._lock:
            return self._con.execute("SELECT 1 FROM idstitch_suppressed WHERE digest = ?",
                                     (digest,)).fetchone() is not None

    def checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it (nothing deleted lingers in the WAL)."""
        with self._lock:
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the connection."""
        self._con.close()
