"""The embedded default: events and projection rows in one SQLite file.

The log's tables (:mod:`idstitch.adapters.sqlite_layout`), the projection tables and the log's
reads and appends (``FastLog``, :mod:`idstitch.adapters.sqlite_log`) over one connection of its
own (eventsourcing's SQLite recorder is opened on the file but holds no events), and the
projection leases (:mod:`idstitch.adapters.sqlite_leases`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager, nullcontext

from idstitch.adapters import sqlite_layout
from idstitch.adapters.chain import ChainedLog
from idstitch.adapters.crypto import codec_for
from idstitch.adapters.eventlog import DeviceLog
from idstitch.adapters.file_lock import FileLock, queued
from idstitch.adapters.keys import KEYS_DDL, SqlKeyStore
from idstitch.adapters.sqlchain import SqlChainView, chained, upgrade
from idstitch.adapters.sqlite_leases import FileLeases
from idstitch.adapters.sqlite_log import CHAIN, SqliteLog
from idstitch.adapters.sqlite_reads import translated
from idstitch.adapters.sqlite_scrub import WalScrub
from idstitch.adapters.sqlstore import Cursor, SqlProjectionStore, SqlTransaction
from idstitch.adapters.stores import Stores
from idstitch.domain.errors import StoreError
from idstitch.domain.ports import WriteConflict


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
WAL_SECONDS = 30.0
"""How long an open tries to put a new file in WAL mode while other processes open it too."""
CACHE_KIB = 65_536
"""The connection's page cache, at most (64 MiB; SQLite's default is 2 MiB). Memory-mapped
reads (``mmap_size``) are left off: every mapped page read counts in the process's resident
size, which would then grow with the file instead of staying bounded."""
WAL_PAGES = 10_000
"""Pages the WAL gathers before a commit copies them into the file (~40 MB of 4 KiB pages).
A longer interval copies fewer pages per event on a large ingest (50,000 pages: 11-17% fewer
bytes written per identity-mix event), but the WAL file then keeps growing, and a commit that
extends the file syncs its size too: a single identify took 0.58-0.67 ms p50 instead of
0.49-0.50 (same run). At 10,000 pages the WAL is reset after its checkpoint and commits
overwrite it in place."""
WANT = ("INSERT INTO idstitch_wanted (name, position) VALUES (?, ?) ON CONFLICT (name) "
        "DO UPDATE SET position = max(position, excluded.position)")


class SqliteProjectionStore(SqliteLog, SqlProjectionStore):
    """One connection, one lock: SQLite has one writer anyway, and this keeps reads cheap."""

    head_sql = sqlite_layout.HEAD

    def __init__(self, path: str) -> None:
        self._path = path
        self._file = os.path.abspath(path)
        """The file for connections opened later (a verification's): the same file even if
        the working directory changed since."""
        self._leases = FileLeases(path)
        self._write_lock = FileLock(f"{path}-write.lock") if path != ":memory:" else None
        """The lock file writers queue on (see _writing)."""
        self._landing = False
        """Set while a command's rows land inside its append (see SqliteLog._land)."""
        self._scrub = WalScrub()
        self._landing_tracked: dict[str, tuple[int, str | None]] = {}
        """The tracking rows the open append read under its write lock (see write_if)."""
        self._topic_codes: dict[str, int] = {}
        self.upgraded_layout = False
        """Whether this open moved a store of an earlier idstitch to the log's tables (see
        :meth:`_upgrade_layout`): ``idstitch upgrade`` reports it."""
        with translated(f"cannot open SQLite database {path!r}"):
            # isolation_level=None: we issue BEGIN ourselves, so a write transaction starts with
            # BEGIN IMMEDIATE and takes the file's write lock before reading the tracking row.
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                         timeout=30)
            self._wal()
            # Deleted rows' bytes are zeroed: a forgotten person's purged rows leave no trace.
            self._conn.execute("PRAGMA secure_delete=ON")
            # Projection rows are derived data: a commit of theirs lost to a power cut is
            # replayed from the log. Appends to the log itself sync (see append_events).
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # Bulk batches write thousands of pages; checkpointing (and syncing) the WAL after
            # every one of them cost ~6 ms a commit. Checkpoint every WAL_PAGES instead.
            self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            # SQLite's default page cache is 2 MB: a batch dirtying more pages than that (the
            # random keys of its rows, of the log's (stream, version) index) spilled them to
            # the WAL before its commit wrote them again, and read them back through system
            # calls. The cache grows only as pages are used, up to CACHE_KIB.
            self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            for ddl in self.schema():
                self._conn.execute(ddl)
        self._lock = threading.RLock()
        try:
            with translated(f"cannot open SQLite database {path!r}"):
                former = sqlite_layout.old_layout(self._conn)
            if former:
                self._upgrade_layout()
        except BaseException:
            self._conn.close()
            if self._write_lock is not None:
                self._write_lock.close()
            raise

    def _wal(self) -> None:
        """Put the file in WAL mode. A new file's first switch needs it alone for a moment,
        and SQLite answers "database is locked" at once, without waiting, to another process
        opening it then: tried again for up to WAL_SECONDS."""
        deadline = time.monotonic() + WAL_SECONDS
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def schema(self) -> list[str]:
        """The shared tables, the positions other processes wait for (see want), the chain."""
        return [*sqlite_layout.DDL, sqlite_layout.VIEW, sqlite_layout.TOMBSTONE,
                *super().schema(), WANTED_DDL, *KEYS_DDL]

    def _upgrade_layout(self) -> None:
        """Move a store made before the log's tables into them (see
        :func:`idstitch.adapters.sqlite_layout.upgrade`), once, under the write lock: a second
        process opening the same file meanwhile finds it done."""
        try:
            with self._cursor(write=True):
                self.upgraded_layout = sqlite_layout.upgrade(self._conn) is not None
        except WriteConflict as e:  # rows the former key held twice: damaged around idstitch
            raise StoreError(f"cannot upgrade the log of {self._file}: its stored_events holds "
                             f"rows the new key refuses ({e}); the earlier idstitch's `idstitch "
                             "verify` names where it was changed") from e

    def try_lease(self, name: str) -> bool:
        """Take the lease of a projection unless another holder has it (without waiting)."""
        return self._leases.try_lease(name)

    def release_lease(self, name: str) -> None:
        """Give the lease back (nothing if this store does not hold it)."""
        self._leases.release_lease(name)

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
        with queued(self._write_lock, repr(self._path)):
            yield

    @contextmanager
    def _statement(self) -> Iterator[Cursor]:
        """One read statement in autocommit: SQLite runs a lone SELECT in a read transaction
        of its own, so a BEGIN and a COMMIT around it were two more statements (a catch-up
        reads its tracking row this way, before every command's and query's fold)."""
        with self._lock, self._translated("SQLite failed"):
            cur = self._conn.cursor()
            try:
                yield cur
            finally:
                cur.close()

    def write_if(
        self, name: str, expected: tuple[int, str | None],
        rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None,
        fresh: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> tuple[int, str | None] | None:
        """As SqlProjectionStore.write_if; while a command's rows land, the tracking row the
        append read in its own transaction, under the write lock nobody else can take
        meanwhile, stands for the compare-and-set: no statement to lock it again."""
        known = self._landing_tracked.get(name) if self._landing else None
        if known is None or known[0] <= 0:  # not landing; or no row yet (made by the lock)
            return super().write_if(name, expected, rows, position, meta, fresh)
        if known != expected:
            return known
        with self._cursor(write=True) as cur:
            SqlTransaction(self, cur, name, known).write(rows, position, meta)
        self._landing_tracked[name] = (position, meta)
        return None

    @contextmanager
    def _cursor(self, *, write: bool, join: bool = False) -> Iterator[Cursor]:
        """A cursor in a transaction of its own (``write``: the file's write lock, BEGIN
        IMMEDIATE), or in the transaction this thread has open on the connection: while a
        command's rows land inside its append, or always with ``join`` (the key store)."""
        with self._lock:
            if self._conn.in_transaction and (join or self._landing):
                # Inside this thread's open append (its rows landing with the events, see
                # SqliteLog.append_events): part of that transaction, which the append commits
                # or rolls back; nobody else can hold one on this connection (the lock).
                with self._translated("SQLite failed"):
                    joined = self._conn.cursor()
                    try:
                        yield joined
                    finally:
                        joined.close()
                return
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
                self._scrub.retry(self._conn)
            finally:
                cur.close()

    @contextmanager
    def joined(self) -> Iterator[tuple[Cursor, bool]]:
        """A write cursor for the key store: inside the open append transaction when this
        thread holds one (keys then commit or roll back with the events), else a transaction
        of its own. Yields the cursor and whether it is committed at the end of the block."""
        with self._lock:
            inside = self._conn.in_transaction
            with self._cursor(write=True, join=True) as cur:
                yield cur, not inside

    def read_cursor(self) -> AbstractContextManager[Cursor]:
        """A read cursor for the key store (inside the open append transaction, if any: the
        key store reads while events are being appended)."""
        return self._cursor(write=False, join=True)

    def checkpoint(self) -> bool:
        """Copy the WAL into the file and truncate it (nothing deleted lingers in the WAL);
        False when a reader's snapshot held it back: then owed, and tried again after later
        commits (see :mod:`idstitch.adapters.sqlite_scrub`)."""
        with self._lock, translated("cannot checkpoint"):
            return self._scrub.run(self._conn)

    # The hash chain (idstitch.adapters.chain).

    def upgrade_chain(self) -> int:
        """Make the chain's tables on a new store, or on one made before the chain (chaining
        the events already there), once; how many events were chained."""
        with self._lock, self._translated("cannot read the log's chain"):
            if chained(self._conn, CHAIN):
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
            self._scrub.settle(self._conn)
            self._conn.close()
            self._leases.close()
            if self._write_lock is not None:
                self._write_lock.close()
