"""The embedded default: events and projection rows in one SQLite file.

eventsourcing's SQLite recorder owns the events table (``stored_events``) and loads single
devices; this module adds the projection tables and the batch path of the log (``FastLog``) on
the same table, over one connection of its own, and the projection leases: an exclusive
``flock`` on a file beside the database per projection (``<file>-<projection>.lease``), so that
one process at a time folds a projection (see :mod:`idstitch.projections.runner`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from uuid import UUID

from idstitch.adapters.chain import ChainedLog
from idstitch.adapters.crypto import codec_for
from idstitch.adapters.eventlog import DeviceLog
from idstitch.adapters.file_lock import FileLock
from idstitch.adapters.keys import KEYS_DDL, SqlKeyStore
from idstitch.adapters.sqlchain import ChainSql, SqlChainView, chain_ddl, started, upgrade
from idstitch.adapters.sqlchain import append as chain_append
from idstitch.adapters.sqlstore import Cursor, SqlProjectionStore
from idstitch.adapters.stores import Stores
from idstitch.domain.errors import StoreError
from idstitch.domain.ports import WriteConflict

fcntl: types.ModuleType | None
try:
    import fcntl
except ImportError:  # no flock (Windows): every process folds, the optimistic commits keep it safe
    fcntl = None


@contextmanager
def translated(what: str) -> Iterator[None]:
    """The one place where sqlite3's errors become idstitch's: a taken (device, version) is
    a WriteConflict, anything else a StoreError saying what failed."""
    try:
        yield
    except sqlite3.IntegrityError as e:
        raise WriteConflict(str(e)) from e
    except sqlite3.Error as e:
        raise StoreError(f"{what}: {e}") from e


def connect(path: str) -> Stores:
    """The event log and projection store of the SQLite file at ``path``."""
    rows = SqliteProjectionStore(path)
    try:
        codec, cipher = codec_for(SqlKeyStore(rows))
        log = DeviceLog({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path,
                         "SQLITE_LOCK_TIMEOUT": "30"}, codec, fast=rows)
    except BaseException:
        rows.close()
        raise
    stores = Stores(f"sqlite:///{path}", log, rows, f"sqlite:///{os.path.abspath(path)}",
                    cipher=cipher)
    try:
        rows.upgrade_chain()
    except BaseException:
        stores.close()
        raise
    return stores


WANTED_DDL = ("CREATE TABLE IF NOT EXISTS idstitch_wanted (name TEXT PRIMARY KEY, "
              "position BIGINT NOT NULL)")
"""Per projection, the furthest position a process waiting for it asked the lease holder to
commit: a hint, never read for the rows themselves."""
WRITE_LOCK_SECONDS = 30.0
"""How long a write waits for the file's write lock before it fails with StoreError: the
timeout SQLite's own wait has (``timeout=30`` below, and the event recorder's lock timeout)."""
CHAIN = ChainSql.of(
    events="stored_events", position="rowid", originator="originator_id", param="?",
    last="substr(hashes, -32)",
    # OR REPLACE: if someone deleted the last events, SQLite hands their rowids out again; an
    # append's run then replaces the orphaned one that starts there (verify reports the break,
    # instead of every later append failing).
    insert="INSERT OR REPLACE INTO idstitch_chain (position, hashes) VALUES (?, ?)")
"""The hash chain's statements (see idstitch.adapters.sqlchain): eventsourcing's SQLite
recorder keeps the originator id as text, and idstitch writes it as 32 hex digits."""
WANT = ("INSERT INTO idstitch_wanted (name, position) VALUES (?, ?) ON CONFLICT (name) "
        "DO UPDATE SET position = max(position, excluded.position)")


class SqliteProjectionStore(SqlProjectionStore):
    """One connection, one lock: SQLite has one writer anyway, and this keeps reads cheap."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._file = os.path.abspath(path)
        """The file for connections opened later (a verification's): the same file even if
        the working directory changed since."""
        self._lease_files: dict[str, int] = {}
        self._write_lock = FileLock(f"{path}-write.lock") if path != ":memory:" else None
        """The lock file writers queue on (see _writing)."""
        """A file descriptor per projection whose lease this store took at least once."""
        self._held: set[str] = set()
        with translated(f"cannot open SQLite database {path!r}"):
            # isolation_level=None: we issue BEGIN ourselves, so a write transaction starts with
            # BEGIN IMMEDIATE and takes the file's write lock before reading the tracking row.
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                         timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # Deleted rows' bytes are zeroed: a forgotten person's purged rows leave no trace.
            self._conn.execute("PRAGMA secure_delete=ON")
            # Projection rows are derived data: a commit of theirs lost to a power cut is
            # replayed from the log. Appends to the log itself sync (see append_events).
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # Bulk batches write thousands of pages; checkpointing (and syncing) the WAL after
            # every one of them cost ~6 ms a commit. Checkpoint every ~40 MB instead.
            self._conn.execute("PRAGMA wal_autocheckpoint=10000")
            for ddl in self.schema():
                self._conn.execute(ddl)
        self._lock = threading.RLock()

    def _translated(self, what: str) -> AbstractContextManager[None]:
        """:func:`translated`, the message naming the file (a damaged or foreign file's
        errors then say which one)."""
        return translated(f"{what} ({self._file})")

    def schema(self) -> list[str]:
        """The shared tables, the positions other processes wait for (see want), the chain."""
        return [*super().schema(), WANTED_DDL, *chain_ddl("INTEGER", "BLOB"), *KEYS_DDL]

    # Projection leases (runner.Leases): flock is per open file, so two stores in one process
    # exclude each other as two processes do, and a process that dies releases its leases.

    def try_lease(self, name: str) -> bool:
        """Take the lease of a projection unless another holder has it (without waiting)."""
        if name in self._held:
            return True
        if fcntl is None or self._path == ":memory:":
            return True  # nobody else can open this store, or nothing to lock it with
        fd = self._lease_files.get(name)
        if fd is None:
            try:
                fd = os.open(f"{self._path}-{name}.lease", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                return True  # an unwritable folder: fold anyway (optimistic commits stay safe)
            self._lease_files[name] = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held.add(name)
        return True

    def release_lease(self, name: str) -> None:
        """Give the lease back (nothing if this store does not hold it)."""
        if name in self._held:
            self._held.discard(name)
            fd = self._lease_files.get(name)
            if fd is not None and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def want(self, name: str, position: int) -> None:
        """Ask whoever holds the lease to commit the projection up to ``position``."""
        with self._cursor(write=True) as cur:
            cur.execute(WANT, (name, position))

    def wanted(self, name: str) -> int:
        """The furthest position somebody asked the projection to be committed at (0: none)."""
        with self._cursor(write=False) as cur:
            row = cur.execute("SELECT position FROM idstitch_wanted WHERE name = ?",
                              (name,)).fetchone()
        return int(row[0]) if row else 0

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Queue for the file's write lock in the kernel before asking SQLite for it.

        Two processes writing one file (two ingests, an ingest and its projecting child) take
        turns at SQLite's write lock; SQLite's own wait polls with sleeps that grow to tens of
        milliseconds, so a writer often slept well past the moment the lock came free. A
        blocking flock on a file beside the database wakes the next writer when the lock is
        released. Every idstitch write transaction takes it first; a writer that is not
        idstitch still meets SQLite's own lock and wait. The wait is bounded (StoreError after
        WRITE_LOCK_SECONDS), as SQLite's own is: see :mod:`idstitch.adapters.file_lock`."""
        lock = self._write_lock
        held = None if lock is None else lock.acquire(WRITE_LOCK_SECONDS)
        if held is False:
            # A holder that never lets go (a process stopped, or wedged, in the middle of a
            # write) must not hang this one for good: the same limit as SQLite's own wait.
            raise StoreError(f"cannot write {self._path!r}: another process has held its write "
                             f"lock for {WRITE_LOCK_SECONDS:.0f} s (stopped or stuck?)")
        try:
            yield
        finally:
            if held and lock is not None:
                lock.release()

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Cursor]:
        with self._lock, (self._writing() if write else nullcontext()), \
                self._translated("SQLite failed"):
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

    @contextmanager
    def joined(self) -> Iterator[tuple[Cursor, bool]]:
        """A write cursor for the key store: inside the open append transaction when this
        thread holds one (keys then commit or roll back with the events), else a transaction
        of its own. Yields the cursor and whether it is committed at the end of the block."""
        with self._lock:
            if self._conn.in_transaction:
                joined = self._conn.cursor()
                try:
                    yield joined, False
                finally:
                    joined.close()
                return
        with self._cursor(write=True) as own:
            yield own, True

    @contextmanager
    def read_cursor(self) -> Iterator[Cursor]:
        """A read cursor for the key store (inside the open append transaction, if any: the
        key store reads while events are being appended)."""
        with self._lock:
            if self._conn.in_transaction:
                joined = self._conn.cursor()
                try:
                    yield joined
                finally:
                    joined.close()
                return
        with self._cursor(write=False) as own:
            yield own

    def checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it (nothing deleted lingers in the WAL)."""
        with self._lock, translated("cannot checkpoint"):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # The batch path of the event log (FastLog): the recorder's own stored_events table,
    # written with executemany in one transaction instead of one statement per event.

    @contextmanager
    def exclusive(self) -> Iterator[Callable[[list[tuple[str, int, str, bytes]]], list[int]]]:
        """Hold the file's write lock: nobody else appends until the block ends. Yields an
        insert function (its rows commit, synced, when the block ends); reads of the log run
        on this connection meanwhile, inside the transaction."""
        with self._lock, self._writing():
            try:
                with self._translated("cannot append events"):
                    self._conn.execute("PRAGMA synchronous=FULL")
                    self._conn.execute("BEGIN IMMEDIATE")
                    yield self._insert
                    self._conn.commit()
            finally:
                if self._conn.in_transaction:
                    self._conn.rollback()
                self._conn.execute("PRAGMA synchronous=NORMAL")

    def _insert(self, rows: list[tuple[str, int, str, bytes]]) -> list[int]:
        """Insert events and their chain entries inside the open write transaction."""
        with self._translated("cannot append events"):
            self._conn.executemany(
                "INSERT INTO stored_events (originator_id, originator_version, topic, "
                "state) VALUES (?, ?, ?, ?)", rows)
            last = self._conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            # Under the write lock, with no AUTOINCREMENT and no deletes, the rowids of one
            # transaction's inserts are consecutive.
            positions = list(range(last - len(rows) + 1, last + 1))
            # The chain goes on from its last committed entry, read under the same lock: two
            # processes appending to one file never fork it.
            chain_append(self._conn, CHAIN, positions, rows)
        return positions

    def append_events(self, rows: list[tuple[str, int, str, bytes]]) -> list[int]:
        """Insert events in one transaction; their positions (rowids)."""
        with self._lock:
            try:
                with self._translated("cannot append events"):
                    # The log is the source of truth: an append that returned survives a power
                    # cut (the WAL is synced at this commit, as eventsourcing's recorder does).
                    self._conn.execute("PRAGMA synchronous=FULL")
                    self._conn.execute("BEGIN IMMEDIATE")
                    positions = self._insert(rows)
                    self._conn.commit()
            finally:
                if self._conn.in_transaction:
                    # Whatever failed (a conflict, an interrupt) got here mid-transaction: end
                    # it, or the connection keeps the write lock (and refuses the PRAGMA).
                    self._conn.rollback()
                self._conn.execute("PRAGMA synchronous=NORMAL")
        return positions

    def read_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(position, state) after a position."""
        with self._lock, self._translated("cannot read the log"):
            rows: list[tuple[int, bytes]] = self._conn.execute(
                "SELECT rowid, state FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit)).fetchall()
        return rows

    def read_selected(
        self, after: int, until: int, limit: int, topics: list[str], first: bool
    ) -> list[tuple[int, bytes]]:
        """(position, state) of the events with these topics (and, with ``first``, every
        device's first event) in ``after < position <= until``."""
        marks = ", ".join("?" * len(topics))
        also = " OR originator_version = 1" if first else ""
        with self._lock, self._translated("cannot read the log"):
            # The table is scanned in rowid order and the other events skipped in C: a
            # replay then decodes only the events it folds.
            rows: list[tuple[int, bytes]] = self._conn.execute(
                "SELECT rowid, state FROM stored_events WHERE rowid > ? AND rowid <= ? "
                f"AND (topic IN ({marks}){also}) ORDER BY rowid LIMIT ?",
                (after, until, *topics, limit)).fetchall()
        return rows

    def head(self) -> int:
        """The last position (0 when empty)."""
        with self._lock, self._translated("cannot read the log"):
            row = self._conn.execute("SELECT max(rowid) FROM stored_events").fetchone()
        return int(row[0] or 0)

    def device_events(self, aggregate_ids: list[UUID]) -> list[tuple[int, bytes]]:
        """(version, state) of these aggregates' events, by aggregate then version."""
        return self._by_aggregates(
            "cannot load devices", aggregate_ids,
            "SELECT originator_version, state FROM stored_events WHERE originator_id IN ({}) "
            "ORDER BY originator_id, originator_version")

    def device_versions(self, aggregate_ids: list[UUID]) -> dict[str, int]:
        """The last version of each of these aggregates that has events, by UUID hex."""
        return dict(self._by_aggregates(
            "cannot read the log", aggregate_ids,
            "SELECT originator_id, max(originator_version) FROM stored_events "
            "WHERE originator_id IN ({}) GROUP BY originator_id"))

    def _by_aggregates(self, what: str, aggregate_ids: list[UUID], sql: str) -> list[Any]:
        """The rows of ``sql`` (its ``{}`` the aggregate ids' placeholders), a chunk of ids at a
        time (SQLite caps a statement's parameters)."""
        out: list[Any] = []
        with self._lock, translated(what):
            for i in range(0, len(aggregate_ids), self.chunk):
                part = [a.hex for a in aggregate_ids[i : i + self.chunk]]
                out.extend(self._conn.execute(sql.format(", ".join("?" * len(part))), part)
                           .fetchall())
        return out

    def read_spans(
        self, spans: list[tuple[str, int, int]], topics: list[str] | None
    ) -> list[tuple[int, bytes]]:
        """(position, state) of each (aggregate hex, start, end) span's events (of these
        topics, or all): one indexed range per span (the primary key leads with the id)."""
        also = "" if topics is None else f" AND topic IN ({', '.join('?' * len(topics))})"
        sql = ("SELECT rowid, state FROM stored_events WHERE originator_id = ? "
               f"AND rowid >= ? AND rowid < ?{also}")
        out: list[tuple[int, bytes]] = []
        with self._lock, self._translated("cannot read the log"):
            for aggregate, start, end in spans:
                out.extend(self._conn.execute(sql, (aggregate, start, end, *(topics or ())))
                           .fetchall())
        return out

    def events_after(self, since: list[tuple[UUID, int]]) -> list[tuple[int, bytes]]:
        """(version, state) of each aggregate's events after the version given with it."""
        out: list[tuple[int, bytes]] = []
        with self._lock, self._translated("cannot load devices"):
            step = self.chunk // 2  # two parameters a device
            for i in range(0, len(since), step):
                part = since[i : i + step]
                values = ", ".join(["(?, ?)"] * len(part))
                out.extend(self._conn.execute(
                    f"WITH c(id, v) AS (VALUES {values}) SELECT e.originator_version, e.state "
                    "FROM c JOIN stored_events e ON e.originator_id = c.id "
                    "AND e.originator_version > c.v ORDER BY e.originator_id, "
                    "e.originator_version",
                    [x for a, v in part for x in (a.hex, v)]).fetchall())
        return out

    # The hash chain (idstitch.adapters.chain).

    def upgrade_chain(self) -> int:
        """Chain the events of a store made before the chain, once; how many were chained."""
        with self._lock, self._translated("cannot read the log's chain"):
            if started(self._conn, CHAIN):
                return 0  # the usual case: no write lock taken, a read-only file opens
        with self._cursor(write=True) as cur:
            return upgrade(cur, CHAIN)

    @contextmanager
    def chain_view(self) -> Iterator[ChainedLog]:
        """The events and the chain in one read transaction, on a connection of its own: a
        verification sees one state of the log however long it takes, and the workspace's
        connection stays free meanwhile."""
        if self._path == ":memory:":
            with self._cursor(write=False) as cur:
                yield SqlChainView(cur, CHAIN)
            return
        with self._translated("cannot read the log's chain"):
            conn = sqlite3.connect(self._file, isolation_level=None, check_same_thread=False,
                                   timeout=30)
        try:
            with self._translated("cannot read the log's chain"):
                cur = conn.cursor()
                cur.execute("BEGIN")
                yield SqlChainView(cur, CHAIN)
        finally:
            conn.close()

    def close(self) -> None:
        """Close the connection and the lease files (which releases the leases)."""
        with self._lock:
            self._conn.close()
            self._held.clear()
            for fd in self._lease_files.values():
                os.close(fd)
            if self._write_lock is not None:
                self._write_lock.close()
            self._lease_files.clear()
