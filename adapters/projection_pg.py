"""Custom projections' tables in the workspace's PostgreSQL database: a schema per projection
(``<store schema>_p_<name>``), a table prefix per version; see
:mod:`idstitch.adapters.projection_sql` for the namespaces and what isolation is enforced."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from idstitch.adapters.pg_holds import AdvisoryHolds
from idstitch.adapters.postgres import DDL_LOCK, conninfo_of
from idstitch.adapters.projection_sql import (
    CustomTransaction,
    Database,
    LiveDatabase,
    Namespace,
    Tracked,
)
from idstitch.adapters.urls import PostgresTarget
from idstitch.domain.errors import InvalidCommand, StoreError
from idstitch.projections.custom import replaced
from psycopg import sql


class PostgresTables:
    """The custom projections' tables and tracking in one PostgreSQL database."""

    def __init__(self, target: PostgresTarget) -> None:
        self._schema = target.schema
        self._conninfo = conninfo_of(target)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.RLock()
        self._home = ""
        self._holds = AdvisoryHolds(self._conninfo, self._schema)
        """The keep holds of the projections kept here, in a session of their own."""

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and self._conn.closed:
            # Lost (a server restart, a failover, an idle-connection killer): a new one, or
            # every later call would fail on the dead one until the process restarts.
            self._conn = None
        if self._conn is None:
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
                if self._schema:
                    conn.execute(sql.SQL("SET search_path TO {}").format(
                        sql.Identifier(self._schema)))
                row = conn.execute("SELECT current_schema()").fetchone()
                self._home = str(row[0]) if row and row[0] else "public"
                # Under the schema's DDL lock: CREATE ... IF NOT EXISTS is not safe against
                # itself (a parent and its projecting child opening an upgraded store at once).
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
                    conn.execute(sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {}.idstitch_custom (name TEXT NOT NULL, "
                        "version INTEGER NOT NULL, position BIGINT NOT NULL, live BOOLEAN NOT "
                        "NULL, PRIMARY KEY (name, version))").format(sql.Identifier(self._home)))
                    # When each version's tables were made (see projection_sql): created on
                    # open, so that a store from before it gains it.
                    conn.execute(sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {}.idstitch_custom_made (name TEXT NOT NULL, "
                        "version INTEGER NOT NULL, made_at BIGINT NOT NULL, "
                        "PRIMARY KEY (name, version))").format(sql.Identifier(self._home)))
            except psycopg.Error as e:
                raise StoreError(f"cannot open the custom projections' tables: {e}") from e
            self._conn = conn
        return self._conn

    def _tracking(self) -> sql.Composed:
        return sql.SQL("{}.idstitch_custom").format(sql.Identifier(self._home))

    def _made(self) -> sql.Composed:
        return sql.SQL("{}.idstitch_custom_made").format(sql.Identifier(self._home))

    def _tracked(self, where: str) -> sql.Composed:
        """The tracking rows with their made_at (``c`` and ``m``), then ``where``."""
        return sql.SQL("SELECT c.name, c.version, c.position, c.live, m.made_at FROM {} c "
                       "LEFT JOIN {} m ON m.name = c.name AND m.version = c.version " + where
                       ).format(self._tracking(), self._made())

    def schema_of(self, name: str) -> str:
        """The projection's own schema."""
        return f"{self._home}_p_{name}"[:63]

    def _own_schema(self, conn: psycopg.Connection[Any], name: str) -> None:
        """Refuse a name whose schema another tracked projection has: a schema name is cut at
        PostgreSQL's 63 characters, so two long names can meet there, and the second would
        write into the first one's tables."""
        mine = self.schema_of(name)
        if len(f"{self._home}_p_") >= 63:
            # Cut there, the projection's schema would be the store's own (or a part of it
            # shared by every projection).
            raise InvalidCommand("name", f"the store's schema {self._home!r} leaves no room for "
                                 "the schemas of custom projections (<store schema>_p_<name>, "
                                 "at most 63 characters): use a store schema of at most 59 "
                                 "characters")
        for (other,) in conn.execute(sql.SQL("SELECT DISTINCT name FROM {} WHERE name <> %s"
                                             ).format(self._tracking()), (name,)).fetchall():
            if self.schema_of(other) == mine:
                room = 63 - len(f"{self._home}_p_")
                raise InvalidCommand("name", f"{name!r} would share the schema {mine} with the "
                                     f"projection {other!r}: with this store's schema "
                                     f"{self._home!r}, names must differ in their first {room} "
                                     "characters")

    def _namespace(self, conn: psycopg.Connection[Any], name: str, version: int) -> Namespace:
        prefix = f"v{version}_"
        found = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND left(c.relname, %s) = %s",
            (self.schema_of(name), len(prefix), prefix)).fetchall()
        return Namespace(prefix, {r[0][len(prefix):].lower() for r in found}, postgres=True)

    def _database(self, conn: psycopg.Connection[Any], name: str, version: int) -> Database:
        namespace = self._namespace(conn, name, version)
        cursor = conn.cursor()  # one for every statement (client-side: each is read whole)

        def run(statement: str, params: tuple[Any, ...], rows: bool) -> Any:
            with self._lock:
                try:
                    cursor.execute(statement.encode(), params)
                    return [tuple(r) for r in cursor.fetchall()] if rows else None
                except psycopg.errors.UndefinedTable as e:
                    raise InvalidCommand("sql", f"{e}: a projection reaches only its own "
                                                "tables") from e
                except Exception as e:
                    if (translated := _translated(e)) is e:
                        raise
                    raise translated from e

        return Database(namespace, run)

    def versions(self, name: str) -> list[Tracked]:
        """Every tracked version of the projection."""
        with self._lock, _reading():
            conn = self._connection()
            rows = conn.execute(self._tracked("WHERE c.name = %s"), (name,)).fetchall()
        return [Tracked(v, p, bool(live), made) for _, v, p, live, made in rows]

    def every(self) -> list[tuple[str, Tracked]]:
        """Every tracked version of every custom projection, by name."""
        with self._lock, _reading():
            conn = self._connection()
            rows = conn.execute(self._tracked("ORDER BY c.name, c.version")).fetchall()
        return [(n, Tracked(v, p, bool(live), made)) for n, v, p, live, made in rows]

    @contextmanager
    def _begin(self, name: str, *, create: bool = False, serial: bool = False,
               rows: bool = False) -> Iterator[psycopg.Connection[Any]]:
        # idstitch's own statements here (a projection's are translated where they run): a
        # driver error, a deadlock with another process dropping or swapping the same tables
        # say, is the store's.
        try:
            with self._locked_transaction(name, create=create, serial=serial or create,
                                          rows=rows) as conn:
                yield conn
        except psycopg.Error as e:
            raise StoreError(f"the custom projections' tables: {e}") from e

    @contextmanager
    def _locked_transaction(self, name: str, *, create: bool, serial: bool, rows: bool
                            ) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                if serial:
                    # One create, drop or swap of a projection at a time, whatever process
                    # runs it (folds never take this lock, so it adds no wait to theirs).
                    # A drop racing a create took the version's tracking row, committed by
                    # the create after the drop's look at the tables but before its DELETE
                    # (each statement reads what is committed when it starts), and left its
                    # tables: every later create of it then failed on them.
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended("
                                 "'idstitch custom tables ' || %s || ' ' || %s, 0))",
                                 (self._home, name))
                if rows:
                    # Every tracking row of the projection, before the table's lock below: a
                    # fold under way holds its row and then writes the table (the other order
                    # deadlocked with it, see drop).
                    conn.execute(sql.SQL("SELECT 1 FROM {} WHERE name = %s FOR UPDATE").format(
                        self._tracking()), (name,))
                if create:
                    # Under the tracking table's lock (taken first by create()), so two
                    # processes registering the same projection do not race on the schema.
                    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                        self._tracking()))
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(self.schema_of(name))))
                # The projection's SQL finds its own schema's tables only (and pg_catalog).
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(
                    sql.Identifier(self.schema_of(name))))
                yield conn

    def create(self, name: str, version: int, live: bool,
               setup: Callable[[Database], None], made_at: int, *,
               replace: bool = False) -> None:
        """Track a new version at 0 and create its tables, in one transaction (with
        ``replace``, after dropping every tracked version of the projection)."""
        with self._begin(name, create=True, rows=replace) as conn:
            if replace:
                for (other,) in conn.execute(sql.SQL(
                        "SELECT version FROM {} WHERE name = %s").format(self._tracking()),
                        (name,)).fetchall():
                    self._drop_tables(conn, name, other)
                conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s").format(self._tracking()),
                             (name,))
                conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s").format(self._made()),
                             (name,))
            if conn.execute(sql.SQL("SELECT 1 FROM {} WHERE name = %s AND version = %s").format(
                    self._tracking()), (name, version)).fetchone():
                return
            self._own_schema(conn, name)
            # Tables of the version without its tracking are damage (a version's tables and
            # tracking are made and dropped together, under this projection's lock): they go,
            # and the version is made afresh, so registering it again repairs them.
            self._drop_tables(conn, name, version)
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, 0, %s)").format(
                self._tracking()), (name, version, live))
            # (A row left by an idstitch from before made_at, which dropped the version
            # without it, is replaced.)
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT (name, version) "
                                 "DO UPDATE SET made_at = excluded.made_at").format(self._made()),
                         (name, version, made_at))
            setup(self._database(conn, name, version))

    @contextmanager
    def transaction(self, name: str, version: int) -> Iterator[CustomTransaction]:
        """A batch: the version's tables and tracking, committed together."""
        with self._begin(name) as conn:
            found = conn.execute(self._tracked("WHERE c.name = %s AND c.version = %s FOR UPDATE "
                                               "OF c"), (name, version)).fetchone()
            tx = CustomTransaction(-1 if found is None else found[2],
                                   self._database(conn, name, version),
                                   None if found is None else found[4])
            yield tx
            if tx.moved_to is not None and found is not None:
                conn.execute(sql.SQL("UPDATE {} SET position = %s WHERE name = %s AND version = %s")
                             .format(self._tracking()), (tx.moved_to, name, version))
            if tx.unmarked:
                self._unmark(conn, name, version)

    def _drop_tables(self, conn: psycopg.Connection[Any], name: str, version: int) -> None:
        prefix = f"v{version}_"
        found = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = "
            "c.relnamespace WHERE n.nspname = %s AND left(c.relname, %s) = %s AND c.relkind IN "
            "('r', 'v', 'm')", (self.schema_of(name), len(prefix), prefix)).fetchall()
        for table, kind in found:
            what = {"r": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}[kind]
            conn.execute(sql.SQL("DROP {} IF EXISTS {}.{} CASCADE").format(
                sql.SQL(what), sql.Identifier(self.schema_of(name)), sql.Identifier(table)))

    def swap(self, name: str, version: int) -> None:
        """Make ``version`` live; drop every other version, in one transaction. Untracked
        (nothing changed) when ``version`` itself is no longer tracked."""
        with self._begin(name, serial=True) as conn:
            if not conn.execute(sql.SQL("SELECT 1 FROM {} WHERE name = %s AND version = %s FOR "
                                        "UPDATE").format(self._tracking()),
                                (name, version)).fetchone():
                raise replaced(name, version)
            others = conn.execute(sql.SQL("SELECT version FROM {} WHERE name = %s AND version != "
                                          "%s FOR UPDATE").format(self._tracking()),
                                  (name, version)).fetchall()
            for (other,) in others:
                self._drop_tables(conn, name, other)
            conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s AND version != %s").format(
                self._tracking()), (name, version))
            conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s AND version != %s").format(
                self._made()), (name, version))
            conn.execute(sql.SQL("UPDATE {} SET live = TRUE WHERE name = %s AND version = %s")
                         .format(self._tracking()), (name, version))

    def drop(self, name: str, version: int) -> None:
        """Drop one version's tables and tracking."""
        with self._begin(name, serial=True) as conn:
            # Its tracking row first, as a fold's transaction takes it before the tables: a
            # fold under way is waited for (taken the other way round, the two deadlocked).
            conn.execute(sql.SQL("SELECT 1 FROM {} WHERE name = %s AND version = %s FOR UPDATE")
                         .format(self._tracking()), (name, version))
            self._drop_tables(conn, name, version)
            conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s AND version = %s").format(
                self._tracking()), (name, version))
            self._unmark(conn, name, version)

    def _unmark(self, conn: psycopg.Connection[Any], name: str, version: int) -> None:
        conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s AND version = %s").format(
            self._made()), (name, version))

    def reader(self, name: str) -> Database:
        """Read-only access to the live version's tables (each query a read-only
        transaction on the projection's schema; followed across a swap)."""
        return LiveDatabase(lambda: self._live_reader(name))

    def _live_reader(self, name: str) -> Database:
        with self._lock, _reading():
            conn = self._connection()
            live = conn.execute(sql.SQL("SELECT version FROM {} WHERE name = %s AND live").format(
                self._tracking()), (name,)).fetchone()
            namespace = self._namespace(conn, name, 0 if live is None else live[0])
        schema = self.schema_of(name)

        def run(statement: str, params: tuple[Any, ...], rows: bool) -> Any:
            try:
                with self._lock, conn.transaction():
                    conn.execute("SET TRANSACTION READ ONLY")
                    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(
                        sql.Identifier(schema)))
                    cursor = conn.execute(statement.encode(), params)
                    return [tuple(r) for r in cursor.fetchall()] if rows else None
            except psycopg.errors.UndefinedTable as e:
                raise InvalidCommand("sql", f"{e}: a projection reaches only its own "
                                            "tables") from e
            except psycopg.errors.ReadOnlySqlTransaction as e:
                raise InvalidCommand("sql", f"{e}: projection_db is read-only") from e
            except Exception as e:
                if (translated := _translated(e)) is e:
                    raise
                raise translated from e

        return Database(namespace, run)

    def keep(self, name: str) -> None:
        """Hold the projection's keep key shared, until close (see AdvisoryHolds)."""
        with self._lock:
            self._holds.keep(name)

    @contextmanager
    def unkept(self, name: str) -> Iterator[bool]:
        """The keep key taken exclusively on the tables' own session, without waiting."""
        with self._lock, self._holds.unkept(name, self._connection) as free:
            yield free

    def scrub(self) -> None:
        """Nothing to do: what was deleted is left to VACUUM (see docs/explanation/
        erasure-and-keys.md)."""

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._holds.close()


@contextmanager
def _reading() -> Iterator[None]:
    """idstitch's own reads of the tracking: a driver error is the store's (a lost connection
    is replaced at the next call, see PostgresTables._connection)."""
    try:
        yield
    except psycopg.Error as e:
        raise StoreError(f"cannot read the custom projections' tracking: {e}") from e


def _translated(e: Exception) -> Exception:
    """A projection's statement failed: the driver's error as idstitch's (its cause chained
    by the caller). The server's refusals and the values psycopg cannot send are the caller's
    (InvalidCommand); a lost connection is the store's (StoreError); anything else, as it is."""
    if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreError(f"the custom projections' tables: {e}")
    if isinstance(e, psycopg.ProgrammingError) and e.sqlstate is None and any(
            m in str(e) for m in ("placeholders but", "adapt")):
        # Refused by psycopg before it reached the server: the number of placeholders and
        # parameters, a value it cannot adapt. (The server's refusals carry a SQLSTATE.)
        return InvalidCommand("params", str(e).strip() or type(e).__name__)
    if isinstance(e, psycopg.Error):
        return InvalidCommand("sql", str(e).strip() or type(e).__name__)
    if isinstance(e, (OverflowError, UnicodeEncodeError, ValueError, TypeError)):
        return InvalidCommand("params", str(e))
    return e

