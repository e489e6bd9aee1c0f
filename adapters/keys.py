"""The default :class:`~idstitch.domain.ports.KeyStore` implementations: in memory, and a table
in the workspace's SQL database (SQLite; PostgreSQL binds a batch's ids as one array).

A key row holds the 32 random bytes of one data subject's AES-GCM key; destroying it overwrites
the row with a tombstone (NULL key), so the id can never get a key again. On SQLite the delete
runs with ``PRAGMA secure_delete=ON`` and the WAL is checkpointed and truncated afterwards, so
the freed bytes of the key stay neither in the file's free pages nor in the WAL.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from idstitch.adapters.sqlstore import Cursor

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

    def get_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        """The keys that exist or were destroyed (None), by id; ids never created are left
        out."""
        keys = self._keys
        return {key_id: keys[key_id] for key_id in key_ids if key_id in keys}

    def create(self, key_id: str) -> bytes | None:
        """The key, created if new; None if destroyed."""
        with self._lock:
            if key_id not in self._keys:
                self._keys[key_id] = os.urandom(KEY_BYTES)
            return self._keys[key_id]

    def create_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        """:meth:`create` for each."""
        return {key_id: self.create(key_id) for key_id in key_ids}

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

    def suppressed_digests(self) -> set[bytes]:
        """Every remembered keyed hash."""
        with self._lock:
            return set(self._suppressed)


def keys_ddl(blob: str, clustered: str = "") -> tuple[str, str]:
    """The key store's tables in a SQL workspace database (NULL key: a tombstone);
    ``clustered`` ends each table's definition (SQLite's ``WITHOUT ROWID``)."""
    return (f"CREATE TABLE IF NOT EXISTS idstitch_keys (key_id TEXT PRIMARY KEY, key {blob})"
            f"{clustered}",
            f"CREATE TABLE IF NOT EXISTS idstitch_suppressed (digest {blob} PRIMARY KEY)"
            f"{clustered}")


KEYS_DDL = keys_ddl("BLOB", " WITHOUT ROWID")
"""SQLite's: the rows live in their primary key's B-tree. A table with a rowid kept them in a
second B-tree beside the key's index, so each new key (about one every four events, at random
places: key ids are random) dirtied a page in each, and the file held both. A file made before
keeps its tables as they are: the statements are the same on both."""


class KeyCursors(Protocol):
    """What the SQLite key store needs of the workspace's SQLite store: its connection."""

    def joined(self) -> AbstractContextManager[tuple[Cursor, bool]]:
        """A write cursor, in the open append transaction if any; True if committed after."""
        ...

    def read_cursor(self) -> AbstractContextManager[Cursor]:
        """A read cursor."""
        ...

    def checkpoint(self) -> bool:
        """Checkpoint and truncate the WAL; whether it ran to the end."""
        ...


class SqlKeyStore:
    """Keys in the ``idstitch_keys`` table of the workspace's database, on the store's own
    connections (SQLite: keys made while events are appended commit or roll back with them;
    PostgreSQL: a transaction of their own, before the events')."""

    def __init__(self, cursors: KeyCursors, param: str = "?") -> None:
        self._cursors = cursors
        self._p = param
        self.committed = True
        """Whether the keys the last :meth:`create_many` returned are committed (False when
        they joined an open append transaction: the caller must not cache them beyond it)."""

    def get(self, key_id: str) -> bytes | None:
        """The key, or None (never created, or destroyed)."""
        with self._cursors.read_cursor() as cur:
            row = cur.execute(f"SELECT key FROM idstitch_keys WHERE key_id = {self._p}",
                              (key_id,)).fetchone()
        return None if row is None else bytes(row[0]) if row[0] is not None else None

    def get_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        """The keys that exist or were destroyed (None: a tombstone), by id, in one statement
        per 500 ids; ids never created are left out (a replay reads a page's keys at once)."""
        out: dict[str, bytes | None] = {}
        with self._cursors.read_cursor() as cur:
            for start in range(0, len(key_ids), 500):
                chunk = list(key_ids[start:start + 500])
                out.update((k, None if v is None else bytes(v)) for k, v in cur.execute(
                    "SELECT key_id, key FROM idstitch_keys WHERE key_id IN "
                    f"({','.join([self._p] * len(chunk))})", chunk).fetchall())
        return out

    def create(self, key_id: str) -> bytes | None:
        """The key, created if new (a key created and never used is harmless); None if
        destroyed."""
        return self.create_many([key_id])[key_id]

    def create_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        """The keys, those that are new created, in one statement each way."""
        out: dict[str, bytes | None] = {}
        # One order for every writer: two writers creating the same new keys in opposite
        # orders would each wait for the other's row (a deadlock on PostgreSQL).
        key_ids = sorted(key_ids)
        with self._cursors.joined() as (cur, committed):
            cur.executemany(f"INSERT INTO idstitch_keys VALUES ({self._p}, {self._p}) "
                            "ON CONFLICT (key_id) DO NOTHING",
                            [(k, os.urandom(KEY_BYTES)) for k in key_ids])
            for start in range(0, len(key_ids), 500):
                chunk = list(key_ids[start:start + 500])
                out.update((k, None if v is None else bytes(v)) for k, v in cur.execute(
                    "SELECT key_id, key FROM idstitch_keys WHERE key_id IN "
                    f"({','.join([self._p] * len(chunk))})", chunk).fetchall())
        self.committed = committed
        return out

    def destroy(self, key_ids: Iterable[str]) -> None:
        """Tombstone the keys (the store's connection zeroes freed bytes: secure_delete), then
        empty the WAL."""
        key_ids = sorted(key_ids)
        with self._cursors.joined() as (cur, _):
            cur.executemany(f"INSERT INTO idstitch_keys VALUES ({self._p}, NULL) "
                            "ON CONFLICT(key_id) DO UPDATE SET key = NULL",
                            [(k,) for k in key_ids])
        self._cursors.checkpoint()

    def is_destroyed(self, key_id: str) -> bool:
        """True after :meth:`destroy`."""
        with self._cursors.read_cursor() as cur:
            row = cur.execute(f"SELECT key IS NULL FROM idstitch_keys WHERE key_id = {self._p}",
                              (key_id,)).fetchone()
        return row is not None and bool(row[0])

    def suppress(self, digests: Iterable[bytes]) -> None:
        """Remember keyed hashes of forgotten identifiers."""
        with self._cursors.joined() as (cur, _):
            cur.executemany(f"INSERT INTO idstitch_suppressed VALUES ({self._p}) "
                            "ON CONFLICT DO NOTHING",
                            [(d,) for d in digests])

    def suppressed(self, digest: bytes) -> bool:
        """True for a remembered keyed hash."""
        with self._cursors.read_cursor() as cur:
            return cur.execute(f"SELECT 1 FROM idstitch_suppressed WHERE digest = {self._p}",
                               (digest,)).fetchone() is not None

    def suppressed_digests(self) -> set[bytes]:
        """Every remembered keyed hash."""
        with self._cursors.read_cursor() as cur:
            return {bytes(row[0]) for row in
                    cur.execute("SELECT digest FROM idstitch_suppressed").fetchall()}

    def checkpoint(self) -> bool:
        """Copy the WAL into the file and truncate it (nothing deleted lingers in the WAL);
        whether it ran to the end (else the store owes it: it tries again)."""
        return self._cursors.checkpoint()


CREATE_KEYS = ("INSERT INTO idstitch_keys (key_id, key) SELECT * FROM unnest(%b::text[], "
               "%b::bytea[]) ON CONFLICT (key_id) DO NOTHING")
"""Every new key of a batch in one statement (rows in the array's order: sorted ids)."""
SELECT_KEYS = "SELECT key_id, key FROM idstitch_keys WHERE key_id = ANY(%b::text[])"


class PostgresKeyStore(SqlKeyStore):
    """PostgreSQL's: a batch's ids go as one array parameter, so a batch's keys take one
    statement each way. (``executemany`` runs one INSERT per key: a 100,000-message identity
    ingest made ~33,000 keys, a fifth of the recording process's time and as many statements
    for the server; the IN lists of the SQL store take one SELECT per 500 ids.)"""

    def __init__(self, cursors: KeyCursors) -> None:
        super().__init__(cursors, "%s")

    def get_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        """As :meth:`SqlKeyStore.get_many`, in one statement."""
        with self._cursors.read_cursor() as cur:
            rows = cur.execute(SELECT_KEYS, (list(key_ids),)).fetchall()
        return {k: None if v is None else bytes(v) for k, v in rows}

    def create_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        """As :meth:`SqlKeyStore.create_many`: one INSERT of every id, then one SELECT (a new
        statement: it sees the keys another writer committed while the INSERT waited for
        them, which that INSERT left alone)."""
        # One order for every writer (see SqlKeyStore.create_many): the array's.
        ordered = sorted(key_ids)
        with self._cursors.joined() as (cur, committed):
            cur.execute(CREATE_KEYS, (ordered, [os.urandom(KEY_BYTES) for _ in ordered]))
            rows = cur.execute(SELECT_KEYS, (ordered,)).fetchall()
        self.committed = committed
        return {k: None if v is None else bytes(v) for k, v in rows}
