"""Custom projections' tables in the workspace's SQLite file (or an in-memory database for
``memory:``); see :mod:`idstitch.adapters.projection_sql` for the namespaces and isolation."""

from __future__ import annotations

import os
import sqlite3
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from idstitch.adapters.file_lock import WRITE_LOCK_SECONDS, FileLock
from idstitch.adapters.projection_sql import (
    CustomTransaction,
    Database,
    LiveDatabase,
    Namespace,
    Tracked,
)
from idstitch.adapters.sqlite_scrub import WalScrub
from idstitch.domain.errors import InvalidCommand, StoreError
from idstitch.projections.custom import replaced

TRACKING = ("CREATE TABLE IF NOT EXISTS idstitch_custom (name TEXT NOT NULL, version INTEGER NOT "
            "NULL, position INTEGER NOT NULL, live INTEGER NOT NULL, PRIMARY KEY (name, version))")
MADE = ("CREATE TABLE IF NOT EXISTS idstitch_custom_made (name TEXT NOT NULL, version INTEGER NOT "
        "NULL, made_at INTEGER NOT NULL, PRIMARY KEY (name, version))")
"""When each version's tables were made (see projection_sql): created on open, so that a store
from before it gains it."""
_TRACKED = ("SELECT c.name, c.version, c.position, c.live, m.made_at FROM idstitch_custom c LEFT "
            "JOIN idstitch_custom_made m ON m.name = c.name AND m.version = c.version")
# Internal statements carry a comment: a projection's SQL never does (the rewrite drops its
# comments), so a statement prepared (and cached) without the authorizer is never one of its.
_INTERNAL = " /* idstitch */"

_TABLE_ACTIONS = {
    sqlite3.SQLITE_READ: 0, sqlite3.SQLITE_UPDATE: 0, sqlite3.SQLITE_INSERT: 0,
    sqlite3.SQLITE_DELETE: 0, sqlite3.SQLITE_CREATE_TABLE: 0, sqlite3.SQLITE_DROP_TABLE: 0,
    sqlite3.SQLITE_CREATE_INDEX: 1, sqlite3.SQLITE_DROP_INDEX: 1, sqlite3.SQLITE_CREATE_VIEW: 0,
    sqlite3.SQLITE_DROP_VIEW: 0, sqlite3.SQLITE_CREATE_TRIGGER: 1, sqlite3.SQLITE_DROP_TRIGGER: 1,
    sqlite3.SQLITE_ALTER_TABLE: 1, sqlite3.SQLITE_ANALYZE: 0, sqlite3.SQLITE_REINDEX: 0,
}
"""Actions on a table, and which argument names it."""
_FREE = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_READS = {sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION,
          sqlite3.SQLITE_RECURSIVE}


_INT64 = range(-(2**63), 2**63)
"""The integers SQLite stores."""


class Authorizer:
    """The connection's one authorizer: while a projection's statement is prepared, it admits
    only that projection's namespace (and reads of the schema); otherwise (idstitch's own
    statements) everything.

    Installed once: SQLite expires every prepared statement when the authorizer is set, and
    authorizes a statement when it is prepared, not each time it runs. So a statement keeps the
    verdict it was prepared under; the texts of idstitch's statements and of each scope's (a
    comment naming the projection's prefix, read-only or not, and the longer prefixes it
    must not reach, ends every one) never coincide."""

    def __init__(self) -> None:
        self.scope: tuple[str, bool, tuple[str, ...]] | None = None
        """(the namespace's prefix, whether writes are allowed, the longer prefixes of other
        projections that begin with it), or None: idstitch itself."""

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None,
                 trigger: str | None) -> int:
        if self.scope is None:
            return sqlite3.SQLITE_OK
        prefix, writable, foreign = self.scope
        if not writable and action not in _READS:
            return sqlite3.SQLITE_DENY
        if action in _FREE:
            return sqlite3.SQLITE_OK
        if db not in (None, "main"):
            return sqlite3.SQLITE_DENY
        index = _TABLE_ACTIONS.get(action)
        if index is None:
            return sqlite3.SQLITE_DENY  # transactions, PRAGMA, ATTACH, temporary objects
        table = (arg1, arg2)[index] or ""
        # The schema table: SQLite itself writes it for CREATE and DROP (and refuses a
        # statement's own writes to it, PRAGMA writable_schema being refused here).
        if (table.startswith(prefix) and not table.startswith(foreign)) or table in (
                "sqlite_master", "sqlite_schema"):
            return sqlite3.SQLITE_OK
        # Inside a trigger too: its body runs with the statement that fired it, and must reach
        # no more than that statement may.
        return sqlite3.SQLITE_DENY


fcntl: types.ModuleType | None
try:
    import fcntl
except ImportError:  # no flock (Windows): no keeper is told apart, none is dropped
    fcntl = None

WRITE_BUDGET = 0.5
"""See :attr:`SqliteTables.write_budget`."""


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise StoreError(f"{what}: {e}") from e


class SqliteTables:
    """The custom projections' tables and tracking in one SQLite database."""

    write_budget: float | None = WRITE_BUDGET
    """Seconds a fold's transaction may hold the file's write lock before it ends early (see
    :meth:`~idstitch.projections.custom_runner.CustomRunner._fold_alone`)."""

    def __init__(self, path: str) -> None:
        self._path = path
        if path == ":memory:":
            self.write_budget = None  # no other process waits for this one's lock
        self._write_lock = FileLock(f"{path}-write.lock") if path != ":memory:" else None
        """The lock file the store's writers queue on: a fold's transaction queues there
        too, so that writers waiting get the file between two of its batches."""
        self._kept: dict[str, int] = {}
        """The keep file of each projection this process keeps, held shared (see keep)."""
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._authorizer = Authorizer()
        self._scrub = WalScrub()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self._path, isolation_level=None, timeout=30,
                                       check_same_thread=False)
                # As the store's own rows: WAL (the store set it on the file) without an fsync
                # per commit; a crash loses at most the last batches, rows and position alike.
                conn.execute("PRAGMA synchronous=NORMAL")
                # As the store's own connection: what a purge hook deletes, or a dropped
                # table held, is zeroed in the pages it freed (a forget leaves no byte of it).
                conn.execute("PRAGMA secure_delete=ON")
                conn.execute(TRACKING)
                conn.execute(MADE)
                conn.set_authorizer(self._authorizer)
            except sqlite3.Error as e:
                raise StoreError(f"cannot open the custom projections' tables: {e}") from e
            self._conn = conn
        return self._conn

    @staticmethod
    def prefix(name: str, version: int) -> str:
        """The table-name prefix of one version of a projection."""
        return f"p_{name}_v{version}_"

    def _foreign(self, conn: sqlite3.Connection, prefix: str) -> tuple[str, ...]:
        """The tracked prefixes longer than a version's that begin with it: a prefix is not
        unique (``p_stats_v1_`` begins every name of projection ``stats_v1_daily``, which is
        ``p_stats_v1_daily_v1_...``), and a name such a prefix begins is that projection's."""
        return tuple(p for p in (self.prefix(n, v) for n, v in conn.execute(
            "SELECT name, version FROM idstitch_custom" + _INTERNAL).fetchall())
            if len(p) > len(prefix) and p.startswith(prefix))

    def _namespace(self, conn: sqlite3.Connection, name: str, version: int) -> Namespace:
        prefix = self.prefix(name, version)
        foreign = self._foreign(conn, prefix)
        found = conn.execute("SELECT name FROM sqlite_master WHERE substr(name, 1, ?) = ?"
                             + _INTERNAL, (len(prefix), prefix)).fetchall()
        return Namespace(prefix, {n[len(prefix):].lower() for (n,) in found
                                  if not n.startswith(foreign)}, postgres=False,
                         foreign=foreign)

    def _database(self, conn: sqlite3.Connection, name: str, version: int, writable: bool
                  ) -> Database:
        namespace = self._namespace(conn, name, version)
        scope = (namespace.prefix, writable, namespace.foreign)
        # sqlite3 reuses a prepared statement of the same text, and the authorizer judges a
        # statement when it is prepared: every projection's statements end with its own scope,
        # so another projection (or its read-only reader, or the same projection once a longer
        # prefix is tracked) sending the same text never gets a statement judged for this one.
        marker = (f" /* {namespace.prefix}{'' if writable else ' read'} "
                  f"{' '.join(namespace.foreign)} */")
        authorizer = self._authorizer
        # One cursor for every statement (a handler runs one or more a Change: a cursor each
        # cost a tenth of the call). A statement that returns rows is always run to its end,
        # so that none stays open (and keeps its read snapshot) until the next.
        cursor = conn.cursor()
        lock = self._lock

        def run(sql: str, params: tuple[Any, ...], rows: bool) -> Any:
            with lock:
                authorizer.scope = scope
                try:
                    cursor.execute(sql + marker, params)
                    if cursor.description is None:
                        return [] if rows else None
                    found = cursor.fetchall()
                    return found if rows else None
                except sqlite3.ProgrammingError as e:
                    # The driver's refusal of the values (their number, a type it cannot
                    # bind), before SQLite saw the statement, is the caller's values; its
                    # other refusals (a second statement) are the SQL's.
                    raise InvalidCommand("params" if "binding" in str(e) else "sql",
                                         str(e)) from e
                except sqlite3.DatabaseError as e:
                    if any(type(v) is int and not _INT64.start <= v < _INT64.stop
                           for v in params):
                        # sqlite3 refuses such a value at bind time, but after an earlier
                        # refused statement on this connection it reports that statement's
                        # error text (the connection's last): said as the first time.
                        raise InvalidCommand("params", "Python int too large to convert to "
                                                       "SQLite INTEGER") from e
                    if any(m in str(e) for m in ("not authorized", "prohibited", "no such table")):
                        what = ("a projection reaches only its own tables" if writable else
                                "projection_db is read-only, and reaches only its own tables")
                        raise InvalidCommand("sql", f"{e}: {what}") from e
                    if isinstance(e, sqlite3.OperationalError) and any(
                            m in str(e) for m in ("locked", "disk", "unable to open")):
                        raise StoreError(f"the custom projections' tables: {e}") from e
                    raise InvalidCommand("sql", str(e)) from e
                except (sqlite3.Error, OverflowError, UnicodeEncodeError) as e:
                    # The driver's own refusals (a wrong number of parameters, a value it
                    # cannot bind): the caller's statement or values.
                    raise InvalidCommand("params", str(e)) from e
                finally:
                    authorizer.scope = None

        return Database(namespace, run)

    def _tracked_here(self) -> bool:
        """Whether the database holds the tracking table, read without creating anything
        (an in-memory database is this object's own: it has it once connected)."""
        if self._path == ":memory:":
            return False
        try:
            conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)
            try:
                return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'idstitch_custom'"
                                    ).fetchone() is not None
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the custom projections' tables: {e}") from e

    def versions(self, name: str) -> list[Tracked]:
        """Every tracked version of the projection."""
        with self._lock:
            rows = self._connection().execute(_TRACKED + " WHERE c.name = ?" + _INTERNAL,
                                              (name,)).fetchall()
        return [Tracked(v, p, bool(live), made) for _, v, p, live, made in rows]

    def every(self) -> list[tuple[str, Tracked]]:
        """Every tracked version of every custom projection, by name (none, on a store that
        never had one, without creating the tracking: `idstitch projections` reads only)."""
        with self._lock:
            if self._conn is None and not self._tracked_here():
                return []
            rows = self._connection().execute(
                _TRACKED + " ORDER BY c.name, c.version" + _INTERNAL).fetchall()
        return [(n, Tracked(v, p, bool(live), made)) for n, v, p, live, made in rows]

    @contextmanager
    def _begin(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._queued():
            conn = self._connection()
            # The database's own failures (locked past the busy timeout, a full disk) as the
            # store's typed error; what the block raises (a handler's, setup's) passes as is.
            with _translated("cannot write the custom projections' tables"):
                conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:  # nothing of the block stays half done
                    conn.execute("ROLLBACK")
                raise StoreError(f"cannot commit the custom projections' tables: {e}") from e
            self._scrub.retry(conn)

    @contextmanager
    def _queued(self) -> Iterator[None]:
        """Hold the lock file the store's writers queue on (as theirs: bounded, a StoreError
        past it), so that the kernel hands the file's write lock over in turn."""
        lock = self._write_lock
        held = None if lock is None else lock.acquire(WRITE_LOCK_SECONDS)
        if held is False:
            raise StoreError(f"cannot write the custom projections' tables in {self._path!r}: "
                             f"another process has held its write lock for "
                             f"{WRITE_LOCK_SECONDS:.0f} s (stopped or stuck?)")
        try:
            yield
        finally:
            if held and lock is not None:
                lock.release()

    def _keep_file(self, name: str) -> int | None:
        """A descriptor of ``<database>-<name>.keep`` (None: nothing to lock with)."""
        if fcntl is None or self._path == ":memory:":
            return None
        try:
            return os.open(f"{self._path}-{name}.keep", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None  # an unwritable folder

    def keep(self, name: str) -> None:
        """A shared ``flock`` on the projection's keep file, held until close."""
        with self._lock:
            if name in self._kept:
                return
            fd = self._keep_file(name)
            if fd is None or fcntl is None:
                return
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a forget's drop under way (short)
            self._kept[name] = fd

    @contextmanager
    def unkept(self, name: str) -> Iterator[bool]:
        """An exclusive ``flock`` on the keep file, without waiting: held, no keeper."""
        fd = self._keep_file(name)
        if fd is None or fcntl is None:
            yield False  # cannot tell: taken as kept
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # (releases the lock)

    def create(self, name: str, version: int, live: bool,
               setup: Callable[[Database], None], made_at: int, *,
               replace: bool = False) -> None:
        """Track a new version at 0 and create its tables, in one transaction (with
        ``replace``, after dropping every tracked version of the projection)."""
        with self._begin() as conn:
            if replace:
                for (other,) in conn.execute("SELECT version FROM idstitch_custom WHERE name = ?"
                                             + _INTERNAL, (name,)).fetchall():
                    self._drop_version(conn, name, other)
            if conn.execute("SELECT 1 FROM idstitch_custom WHERE name = ? AND version = ?"
                            + _INTERNAL, (name, version)).fetchone():
                return
            # Tables of the version without its tracking are damage (a version's tables and
            # tracking are made and dropped together): they go, and the version is made
            # afresh, so registering it again repairs them.
            self._drop_tables(conn, name, version)
            conn.execute("INSERT INTO idstitch_custom VALUES (?, ?, 0, ?)" + _INTERNAL,
                         (name, version, int(live)))
            # (A row left by an idstitch from before made_at, which dropped the version
            # without it, is replaced.)
            conn.execute("INSERT OR REPLACE INTO idstitch_custom_made VALUES (?, ?, ?)"
                         + _INTERNAL, (name, version, made_at))
            setup(self._database(conn, name, version, True))

    @contextmanager
    def transaction(self, name: str, version: int) -> Iterator[CustomTransaction]:
        """A batch: the version's tables and tracking, committed together."""
        with self._begin() as conn:
            found = conn.execute(_TRACKED + " WHERE c.name = ? AND c.version = ?" + _INTERNAL,
                                 (name, version)).fetchone()
            tx = CustomTransaction(-1 if found is None else found[2],
                                   self._database(conn, name, version, True),
                                   None if found is None else found[4])
            yield tx
            if tx.moved_to is not None and found is not None:
                conn.execute("UPDATE idstitch_custom SET position = ? WHERE name = ? AND "
                             "version = ?" + _INTERNAL, (tx.moved_to, name, version))
            if tx.unmarked:
                self._unmark(conn, name, version)

    def _drop_tables(self, conn: sqlite3.Connection, name: str, version: int) -> None:
        prefix = self.prefix(name, version)
        found = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE substr(name, 1, ?) "
                                  "= ? AND type IN ('table', 'view')" + _INTERNAL,
                                  (len(prefix), prefix)).fetchall())
        foreign = self._foreign(conn, prefix)
        for table, kind in found.items():
            if table.startswith(foreign):
                continue  # another projection's
            quoted = '"' + table.replace('"', '""') + '"'
            conn.execute(f"DROP {'VIEW' if kind == 'view' else 'TABLE'} IF EXISTS {quoted}")

    def swap(self, name: str, version: int) -> None:
        """Make ``version`` live; drop every other version, in one transaction. Untracked
        (nothing changed) when ``version`` itself is no longer tracked."""
        with self._begin() as conn:
            if not conn.execute("SELECT 1 FROM idstitch_custom WHERE name = ? AND version = ?"
                                + _INTERNAL, (name, version)).fetchone():
                raise replaced(name, version)
            others = conn.execute("SELECT version FROM idstitch_custom WHERE name = ? AND "
                                  "version != ?" + _INTERNAL, (name, version)).fetchall()
            for (other,) in others:
                self._drop_tables(conn, name, other)
            conn.execute("DELETE FROM idstitch_custom WHERE name = ? AND version != ?" + _INTERNAL,
                         (name, version))
            conn.execute("DELETE FROM idstitch_custom_made WHERE name = ? AND version != ?"
                         + _INTERNAL, (name, version))
            conn.execute("UPDATE idstitch_custom SET live = 1 WHERE name = ? AND version = ?"
                         + _INTERNAL, (name, version))

    def drop(self, name: str, version: int) -> None:
        """Drop one version's tables and tracking."""
        with self._begin() as conn:
            self._drop_version(conn, name, version)

    def _drop_version(self, conn: sqlite3.Connection, name: str, version: int) -> None:
        self._drop_tables(conn, name, version)
        conn.execute("DELETE FROM idstitch_custom WHERE name = ? AND version = ?" + _INTERNAL,
                     (name, version))
        self._unmark(conn, name, version)

    @staticmethod
    def _unmark(conn: sqlite3.Connection, name: str, version: int) -> None:
        conn.execute("DELETE FROM idstitch_custom_made WHERE name = ? AND version = ?"
                     + _INTERNAL, (name, version))

    def reader(self, name: str) -> Database:
        """Read-only access to the live version's tables (followed across a swap)."""
        return LiveDatabase(lambda: self._live_reader(name))

    def _live_reader(self, name: str) -> Database:
        with self._lock:
            conn = self._connection()
            live = conn.execute("SELECT version FROM idstitch_custom WHERE name = ? AND live = 1"
                                + _INTERNAL, (name,)).fetchone()
            version = 0 if live is None else live[0]
            return self._database(conn, name, version, False)

    def scrub(self) -> None:
        """Copy the WAL into the file and truncate it: the pages a forget's purge freed, zeroed,
        replace the old ones in the file. A reader's snapshot in another connection can hold
        it back: it is then owed, and tried again after this connection's later commits and
        when it closes (see :mod:`idstitch.adapters.sqlite_scrub`)."""
        with self._lock:
            if self._conn is None or self._path == ":memory:":
                return
            try:
                self._scrub.run(self._conn)
            except sqlite3.Error as e:
                raise StoreError(f"cannot checkpoint the custom projections' tables: {e}") from e

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._scrub.settle(self._conn)
                self._conn.close()
                self._conn = None
            if self._write_lock is not None:
                self._write_lock.close()
            for fd in self._kept.values():
                os.close(fd)
            self._kept.clear()
