"""Custom projections' tables in the workspace's SQLite file (or an in-memory database for
``memory:``); see :mod:`idstitch.adapters.projection_sql` for the namespaces and isolation."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from idstitch.adapters.file_lock import FileLock, queued
from idstitch.adapters.projection_sql import (
    CustomTransaction,
    Database,
    LiveDatabase,
    Namespace,
    Tracked,
)
from idstitch.adapters.sqlite_authorizer import Authorizer
from idstitch.adapters.sqlite_leases import FileHolds
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

_INT64 = range(-(2**63), 2**63)
"""The integers SQLite stores."""


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
        self._holds = FileHolds(path)
        """The keep files of the projections this process keeps (see keep)."""
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
        # Queued with the store's writers (see FileLock): writers waiting get the file between
        # two of a fold's batches.
        with self._lock, queued(self._write_lock, f"the custom projections' tables in "
                                                  f"{self._path!r}"):
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

    def keep(self, name: str) -> None:
        """A shared ``flock`` on the projection's keep file, held until close."""
        with self._lock:
            self._holds.keep(name)

    def unkept(self, name: str) -> AbstractContextManager[bool]:
        """An exclusive ``flock`` on the keep file, without waiting: held, no keeper."""
        return self._holds.unkept(name)

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
            self._holds.close()
