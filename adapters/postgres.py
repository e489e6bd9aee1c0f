"""Events and projection rows in one PostgreSQL database (or schema), through a psycopg pool.

eventsourcing's PostgreSQL recorder owns the events table and loads single devices; this module
adds the projection tables (the batch path of the log on the same table, ``FastLog``, is in
:mod:`idstitch.adapters.postgres_log`) and the projection leases: a session advisory lock per
(schema, projection), held on a connection of its own, so that one process at a time folds a
projection (see :mod:`idstitch.projections.runner`); a process that dies releases its leases
with its connection.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import psycopg
from idstitch.adapters.crypto import codec_for
from idstitch.adapters.eventlog import DeviceLog
from idstitch.adapters.keys import PostgresKeyStore, keys_ddl
from idstitch.adapters.pg_pool import QueuedPool
from idstitch.adapters.postgres_landing import CapturedWrite, NotLandable
from idstitch.adapters.postgres_log import (
    EVENTS_TABLE,
    PostgresLog,
    rolled_back,
    translated,
)
from idstitch.adapters.postgres_notify import Listener
from idstitch.adapters.postgres_tx import (
    BEGIN_SNAPSHOT,
    LOCK_TRACKING,
    PostgresSnapshot,
    PostgresTransaction,
    write_if,
)
from idstitch.adapters.sqlstore import Cursor, SnapshotRows, SqlProjectionStore, SqlTransaction
from idstitch.adapters.stores import Stores
from idstitch.adapters.tracking_rows import tracking_position
from idstitch.adapters.urls import PostgresTarget
from idstitch.projections.store import write_if_in_transaction
from psycopg import sql
from psycopg.conninfo import make_conninfo

DDL_LOCK = 0x1D571C4  # advisory lock key: "idstitch" creating its schema and tables


def connect(url: str, target: PostgresTarget) -> Stores:
    """The event log and projection store a ``postgresql://user:pw@host:port/db?schema=s`` URL
    names, parsed and checked by :func:`idstitch.adapters.urls.parse`. The parts reach libpq
    as separate, escaped values (never pasted into a string)."""
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": target.dbname,
        "POSTGRES_HOST": target.host,
        "POSTGRES_PORT": str(target.port),
        "POSTGRES_USER": target.user,
        # A URL without a password leaves it to libpq's environment, as for the projection
        # store's connections: an empty one given would override PGPASSWORD (a password
        # file is read either way).
        "POSTGRES_PASSWORD": target.password or os.environ.get("PGPASSWORD", ""),
    }
    if target.schema:
        env["POSTGRES_SCHEMA"] = target.schema
    # Both stores connect with the same explicit parts, so libpq's own defaults can never send
    # the projection rows to another database than the events; make_conninfo quotes each value.
    conninfo = conninfo_of(target)
    # The projection store opens first: it creates the schema the event table goes into.
    with ddl_lock(conninfo):
        rows = PostgresProjectionStore(conninfo, schema=target.schema)
        try:
            codec, cipher = codec_for(PostgresKeyStore(rows))
            log = DeviceLog(env, codec, fast=rows)
        except BaseException:
            rows.close()
            raise
        stores = Stores(url, log, rows, url, listen=lambda: Listener(conninfo), cipher=cipher)
        try:
            rows.upgrade_chain()  # a store made before the chain: once, under the ddl lock
        except BaseException:
            stores.close()
            raise
    return stores



def conninfo_of(target: PostgresTarget) -> str:
    """libpq's connection string for a parsed URL: each part quoted by make_conninfo, nothing
    left to libpq's defaults or to its own reading of a URL."""
    return make_conninfo(host=target.host, port=str(target.port), dbname=target.dbname,
                         user=target.user, password=target.password or None)

@contextmanager
def ddl_lock(conninfo: str) -> Iterator[None]:
    """Serialise first-time schema and table creation across processes.

    PostgreSQL's ``CREATE ... IF NOT EXISTS`` is not safe against itself: two processes opening
    a fresh workspace at once can fail with "tuple concurrently updated".
    """
    with translated("cannot connect to PostgreSQL"):
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK,))


def _pg(cur: Cursor) -> psycopg.Cursor[Any]:
    """The psycopg cursor behind the shared Cursor protocol (for psycopg-only arguments)."""
    return cast("psycopg.Cursor[Any]", cur)


LEASE_KEY = "hashtextextended('idstitch lease ' || current_schema() || ' ' || %s, 0)"
"""The advisory lock key of a projection's lease: advisory locks are per database, so the key
names the schema (the connection's search_path) as well as the projection."""
WANTED_DDL = ("CREATE TABLE IF NOT EXISTS idstitch_wanted (name TEXT PRIMARY KEY, "
              "position BIGINT NOT NULL)")
"""Per projection, the furthest position a process waiting for it asked the lease holder to
commit: a hint, never read for the rows themselves."""
LEASE_CHECK_SECONDS = 5.0
"""How often a process holding projection leases checks that their connection still lives."""


class PostgresProjectionStore(PostgresLog, SqlProjectionStore):
    """The locked tracking row (an upsert) serialises catch-ups across processes."""

    param = "%s"
    blob = "BYTEA"
    head_sql = f"SELECT max(notification_id) FROM {EVENTS_TABLE}"
    whole_table_delete = False
    contains_sql = "position({p} in doc) > 0"
    uses_fresh = True  # new rows go in a plain INSERT (see postgres_tx.write_if)

    def __init__(self, conninfo: str, schema: str | None = None, pool_size: int = 4) -> None:
        kwargs: dict[str, Any] = {}
        self._conninfo = conninfo
        self._lease_conn: psycopg.Connection[Any] | None = None
        self._lease_checked = time.monotonic()
        self._lease_lock = threading.Lock()
        self._held: set[str] = set()
        self._landing = threading.local()
        """``writes``: this thread's writes held back while a command's rows land (see
        PostgresLog._land); other threads' commits go on meanwhile."""
        if schema:
            # urls.SCHEMA_NAME (checked when the URL was parsed) admits no space, quote or
            # backslash: nothing in it can start another server option.
            kwargs["options"] = f"-c search_path={schema}"
        with translated("cannot open PostgreSQL projection store"):
            if schema:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(schema)))
            # Autocommit: a lone read is one round trip, not BEGIN, SELECT, COMMIT; every
            # multi-statement unit of work opens its transaction explicitly (conn.transaction()).
            kwargs["autocommit"] = True
            self._kwargs = kwargs
            self._pool = QueuedPool(conninfo, kwargs, pool_size)
            with self._pool.connection() as conn:
                for ddl in self.schema():
                    conn.execute(ddl)

    def schema(self) -> list[str]:
        """The shared tables, the positions other processes wait for (see want), the chain."""
        return [*super().schema(), WANTED_DDL, *keys_ddl("BYTEA")]

    @contextmanager
    def joined(self) -> Iterator[tuple[Cursor, bool]]:
        """A write cursor for the key store, in a transaction of its own (committed at the end
        of the block: keys are created before the events that use them)."""
        with self._cursor(write=True) as cur:
            yield cur, True

    def read_cursor(self) -> AbstractContextManager[Cursor]:
        """A read cursor for the key store (autocommit: one round trip)."""
        return self._autocommit_cursor()

    def checkpoint(self) -> bool:
        """Nothing to do: PostgreSQL has no WAL file beside the database to truncate (see
        docs/explanation/erasure-and-keys.md on VACUUM, the server's WAL and backups)."""
        return True

    # Projection leases (runner.Leases): session advisory locks on one connection outside the
    # pool, which a lease must outlive.

    def try_lease(self, name: str) -> bool:
        """Take the lease of a projection unless another holder has it (without waiting)."""
        with self._lease_lock, translated("cannot take a projection lease"):
            if name in self._held and not self._lease_lost():
                return True
            if self._lease_conn is None or self._lease_conn.closed:
                self._held.clear()  # a lost connection released them all
                self._lease_conn = psycopg.connect(self._conninfo, connect_timeout=10,
                                                   **self._kwargs)
            row = self._lease_conn.execute(f"SELECT pg_try_advisory_lock({LEASE_KEY})",
                                           (name,)).fetchone()
            if row is None or not row[0]:
                return False
            self._held.add(name)
            return True

    def _lease_lost(self) -> bool:
        """Whether the connection holding the leases turned out lost (a server restart, an idle
        killer): its locks are gone with it. Looked at once every LEASE_CHECK_SECONDS (a
        round trip): an idle connection is only known lost when it is used."""
        now = time.monotonic()
        if now - self._lease_checked < LEASE_CHECK_SECONDS:
            return False
        self._lease_checked = now
        conn = self._lease_conn
        try:
            if conn is not None and not conn.closed:
                conn.execute("SELECT 1")
                return False
        except psycopg.Error:
            pass
        self._held.clear()
        return True

    def release_lease(self, name: str) -> None:
        """Give the lease back (nothing if this store does not hold it)."""
        with self._lease_lock, translated("cannot release a projection lease"):
            if name not in self._held:
                return
            self._held.discard(name)
            if self._lease_conn is not None and not self._lease_conn.closed:
                self._lease_conn.execute(f"SELECT pg_advisory_unlock({LEASE_KEY})", (name,))

    def want(self, name: str, position: int) -> None:
        """Ask whoever holds the lease to commit the projection up to ``position``."""
        with self._connected("cannot ask for a projection position") as cur:
            cur.execute("INSERT INTO idstitch_wanted (name, position) VALUES (%s, %s) "
                        "ON CONFLICT (name) DO UPDATE SET position = "
                        "greatest(idstitch_wanted.position, excluded.position)", (name, position))

    def wanted(self, name: str) -> int:
        """The furthest position somebody asked the projection to be committed at (0: none)."""
        with self._connected("cannot read a projection's wanted position") as cur:
            row = cur.execute("SELECT position FROM idstitch_wanted WHERE name = %s",
                              (name,)).fetchone()
        return int(row[0]) if row else 0

    # One statement a batch instead of one per row: executemany sends a statement per row even
    # pipelined, and a rebuild or an ingest batch touches tens of thousands of rows. Arrays go
    # in binary (%b): psycopg's text format escapes every element with regular expressions,
    # which cost more than the statement itself on the server. Results come in binary too:
    # no hex decoding of bytea.

    def _upsert(self, cur: Cursor, rows: list[tuple[str, str, bytes]]) -> None:
        kinds, keys, docs = (list(c) for c in zip(*rows, strict=True))
        _pg(cur).execute(
            "INSERT INTO idstitch_rows (kind, key, doc) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[]) "
            "ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc", (kinds, keys, docs))

    def _insert_fresh(self, cur: Cursor, rows: list[tuple[str, str, bytes]]) -> None:
        # COPY: a rebuild's first commit writes every row at once, and the upsert of arrays
        # spent ~30 us a row on the server (measured: 0.7 s of a 2 s rebuild). Rows that do
        # exist after all (written by hand at position 0) fail the COPY inside a savepoint,
        # and go through the upsert.
        pg = _pg(cur)
        try:
            with pg.connection.transaction(), pg.copy(
                    "COPY idstitch_rows (kind, key, doc) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "bytea"])
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            self._upsert(cur, rows)

    def _delete(self, cur: Cursor, rows: list[tuple[str, str]]) -> None:
        kinds, keys = (list(c) for c in zip(*rows, strict=True))
        _pg(cur).execute(
            "DELETE FROM idstitch_rows USING unnest(%b::text[], %b::text[]) AS gone(kind, key) "
            "WHERE idstitch_rows.kind = gone.kind AND idstitch_rows.key = gone.key",
            (kinds, keys))

    def _select(self, cur: Cursor, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        if len(keys) == 1:
            # The projection's cache misses read one key at a time, ~1500 times per 50k
            # messages: a plain equality costs half of building and scanning a one-element array.
            _pg(cur).execute("SELECT key, doc FROM idstitch_rows WHERE kind = %b AND key = %b",
                             (kind, keys[0]), binary=True)
        else:
            _pg(cur).execute(
                "SELECT key, doc FROM idstitch_rows WHERE kind = %b AND key = ANY(%b::text[])",
                (kind, list(keys)), binary=True)
        return dict(cur.fetchall())

    @contextmanager
    def transaction(self, name: str) -> Iterator[SqlTransaction]:
        """Lock the projection, yield a transaction, commit at the end: in two round trips
        where the shared one takes five (see PostgresTransaction)."""
        with translated("PostgreSQL failed"), self._pool.connection() as conn, \
                conn.cursor() as cur, rolled_back(conn):
            cur.execute(sql.SQL(LOCK_TRACKING).format(sql.Literal(name)))
            cur.nextset()  # BEGIN's result has no rows; the lock's follows
            row = cur.fetchone()
            assert row is not None  # the upsert returns its row
            tx = PostgresTransaction(self, cur, name, (tracking_position(name, row[0]),
                                                       row[1]))
            yield tx
            tx.finish()

    def write_if(
        self, name: str, expected: tuple[int, str | None],
        rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None,
        fresh: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> tuple[int, str | None] | None:
        """Write rows and the position if the tracking still holds ``expected``: one
        statement in autocommit (WRITE_IF), except for a first commit, which goes the
        transaction's way (COPY into an empty table). While a command's rows land (see
        :mod:`idstitch.adapters.postgres_landing`), the write is held back for the append's
        statement instead, and taken for done (the append says otherwise if it was not)."""
        captured: list[CapturedWrite] | None = getattr(self._landing, "writes", None)
        if captured is not None:
            if expected[0] == 0:  # a first commit (COPY below): not with the append
                raise NotLandable(name)
            captured.append(CapturedWrite(name, expected, dict(rows), position, meta))
            return None
        if expected[0] == 0:  # a first commit (its configuration may be recorded already)
            return write_if_in_transaction(self, name, expected, rows, position, meta)
        with translated("PostgreSQL failed"), self._pool.connection() as conn, \
                conn.cursor() as cur:
            return write_if(cur, name, expected, rows, position, meta, fresh)

    def _statement(self) -> AbstractContextManager[Cursor]:
        """One read statement, in autocommit: a round trip instead of four (catch-ups read
        the tracking row and prefetch rows this way, before taking any lock)."""
        return self._autocommit_cursor()

    @contextmanager
    def _autocommit_cursor(self) -> Iterator[Cursor]:
        with translated("PostgreSQL failed"), self._pool.connection() as conn, \
                conn.cursor() as cur:
            yield cur

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Cursor]:
        if not write:
            with self._snapshot_cursor() as cur:
                yield cur
            return
        with translated("PostgreSQL failed"), self._pool.connection() as conn, \
                conn.transaction(), conn.cursor() as cur:
            yield cur

    def _exclude_appends(self, cur: Cursor) -> None:
        """The events table's lock, as every append takes it (see PostgresLog.exclusive)."""
        cur.execute("SET LOCAL lock_timeout = '30s'")
        cur.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")

    @contextmanager
    def _snapshot_cursor(self) -> Iterator[Cursor]:
        # One snapshot for every statement of a read: a profile and its devices never mix
        # states from before and after a concurrent catch-up. BEGIN names the isolation level
        # itself: one round trip instead of BEGIN and SET TRANSACTION. (Pipeline mode, which
        # would send it with the first read, made each read slower than the round trip saved.)
        with translated("PostgreSQL failed"), self._pool.connection() as conn, \
                conn.cursor() as cur, rolled_back(conn):
            cur.execute(BEGIN_SNAPSHOT)
            yield cur
            cur.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[SnapshotRows]:
        """Reads in one read transaction, begun with its first read (PostgresSnapshot)."""
        with translated("PostgreSQL failed"), self._pool.connection() as conn, \
                conn.cursor() as cur, rolled_back(conn):
            rows = PostgresSnapshot(self, cur)
            yield rows
            if rows.begun:
                cur.execute("COMMIT")

    def close(self) -> None:
        """Close the pool and the lease connection (which releases the leases)."""
        with self._lease_lock:
            if self._lease_conn is not None:
                self._lease_conn.close()
                self._lease_conn = None
            self._held.clear()
        self._pool.close()
