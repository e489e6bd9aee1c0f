"""Events and projection rows in one PostgreSQL database (or schema), through a psycopg pool.

eventsourcing's PostgreSQL recorder owns the events table and loads single devices; this module
adds the projection tables and the batch path of the log (``FastLog``) on the same table, and
the projection leases: a session advisory lock per (schema, projection), held on a connection
of its own, so that one process at a time folds a projection (see
:mod:`idstitch.projections.runner`); a process that dies releases its leases with its
connection.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

import psycopg
from idstitch.adapters.eventlog import DeviceLog
from idstitch.adapters.sqlstore import Cursor, SqlProjectionStore
from idstitch.adapters.stores import Stores
from idstitch.domain.errors import InvalidCommand, StoreError
from idstitch.domain.ports import WriteConflict
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

DDL_LOCK = 0x1D571C4  # advisory lock key: "idstitch" creating its schema and tables
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""Schema names a URL may give: PostgreSQL's unquoted identifiers, lower case, so that the
quoted name (eventsourcing's tables) and the search_path setting name the same schema, and no
text of the URL ever reaches SQL or the server's options unquoted."""


@contextmanager
def translated(what: str) -> Iterator[None]:
    """The one place where psycopg's errors become idstitch's: a taken (device, version) is a
    WriteConflict, anything else a StoreError saying what failed."""
    try:
        yield
    except psycopg.errors.UniqueViolation as e:
        raise WriteConflict(str(e)) from e
    except psycopg.Error as e:
        raise StoreError(f"{what}: {e}") from e


def connect(url: str) -> Stores:
    """The event log and projection store a ``postgresql://user:pw@host:port/db?schema=s`` URL
    names. The parts reach libpq as separate, escaped values (never pasted into a string)."""
    parts = urlsplit(url)
    try:
        port = parts.port or 5432
    except ValueError as e:
        raise InvalidCommand("url", f"bad port: {e}") from e
    schema = parse_qs(parts.query).get("schema", [None])[0]
    if schema is not None and not SCHEMA_NAME.fullmatch(schema):
        raise InvalidCommand("url", f"schema {schema!r} must be a lower-case name of letters, "
                                    "digits and underscores (at most 63), not starting with a digit")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    # Both stores connect with the same explicit parts, so libpq's own defaults can never send
    # the projection rows to another database than the events; make_conninfo quotes each value.
    conninfo = make_conninfo(
        host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], dbname=env["POSTGRES_DBNAME"],
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None)
    # The projection store opens first: it creates the schema the event table goes into.
    with ddl_lock(conninfo):
        rows = PostgresProjectionStore(conninfo, schema=schema)
        try:
            log = DeviceLog(env, fast=rows)
        except BaseException:
            rows.close()
            raise
    return Stores(url, log, rows, url)


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


EVENTS_TABLE = "idstitch_events"
"""eventsourcing's table for the application named ``idstitch`` (in the search_path schema)."""

RESERVE = (
    "SELECT setval(seq, nextval(seq) + %s - 1) FROM (SELECT pg_get_serial_sequence("
    f"'{EVENTS_TABLE}', 'notification_id')::regclass AS seq) AS s"
)
"""Take n ids from the table's sequence in one call; returns the last (the table lock held)."""


LEASE_KEY = "hashtextextended('idstitch lease ' || current_schema() || ' ' || %s, 0)"
"""The advisory lock key of a projection's lease: advisory locks are per database, so the key
names the schema (the connection's search_path) as well as the projection."""
WANTED_DDL = ("CREATE TABLE IF NOT EXISTS idstitch_wanted (name TEXT PRIMARY KEY, "
              "position BIGINT NOT NULL)")
"""Per projection, the furthest position a process waiting for it asked the lease holder to
commit: a hint, never read for the rows themselves."""


class PostgresProjectionStore(SqlProjectionStore):
    """The locked tracking row (an upsert) serialises catch-ups across processes."""

    param = "%s"
    blob = "BYTEA"
    whole_table_delete = False

    def __init__(self, conninfo: str, schema: str | None = None, pool_size: int = 4) -> None:
        kwargs: dict[str, Any] = {}
        self._conninfo = conninfo
        self._lease_conn: psycopg.Connection[Any] | None = None
        self._lease_lock = threading.Lock()
        self._held: set[str] = set()
        if schema:
            # SCHEMA_NAME (checked by connect) admits no space, quote or backslash: nothing
            # in it can start another server option.
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
            self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, kwargs=kwargs,
                                        open=True, timeout=10)
            with self._pool.connection() as conn:
                for ddl in self.schema():
                    conn.execute(ddl)

    def schema(self) -> list[str]:
        """The shared tables, and the positions other processes wait for (see want)."""
        return [*super().schema(), WANTED_DDL]

    # Projection leases (runner.Leases): session advisory locks on one connection outside the
    # pool, which a lease must outlive.

    def try_lease(self, name: str) -> bool:
        """Take the lease of a projection unless another holder has it (without waiting)."""
        with self._lease_lock, translated("cannot take a projection lease"):
            if name in self._held:
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
    def _connected(self, what: str) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in autocommit for one statement; errors translated as ``what`` failing."""
        with translated(what), self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Cursor]:
        with translated("PostgreSQL failed"), self._pool.connection() as conn, \
                conn.transaction(), conn.cursor() as cur:
            if not write:
                # One snapshot for every statement of a read: a profile and its devices never
                # mix states from before and after a concurrent catch-up.
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield cur

    # The batch path of the event log (FastLog), on eventsourcing's own events table. The
    # EXCLUSIVE table lock is the recorder's own rule: ids become visible in commit order, so a
    # reader never skips a gap that a slower writer fills later.

    def append_events(self, rows: list[tuple[str, int, str, bytes]]) -> list[int]:
        """Insert (originator_id as UUID hex, version, topic, state) rows in one transaction,
        under the table lock; their positions, consecutive and in the order given."""
        if not rows:
            return []
        with self.exclusive() as insert:
            return insert(rows)

    @contextmanager
    def exclusive(self) -> Iterator[Callable[[list[tuple[str, int, str, bytes]]], list[int]]]:
        """Hold the events table's lock: nobody else appends until the block ends. Yields an
        insert function (its rows commit when the block ends); reads of the log on other
        connections go on meanwhile (the lock does not block them)."""
        with translated("cannot append events"), self._pool.connection() as conn, \
                conn.transaction(), conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = '30s'")
            cur.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")
            yield lambda rows: self._copy(cur, rows)

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], rows: list[tuple[str, int, str, bytes]]) -> list[int]:
        """Insert rows under the table lock ``cur``'s transaction holds; their positions."""
        if not rows:
            return []
        with translated("cannot append events"):
            # Every insert into the table waits for our lock (INSERT takes ROW EXCLUSIVE,
            # which EXCLUSIVE blocks), so no other nextval can fall between ours and the
            # setval: the block of ids is ours, and it commits before any later one.
            reserved = cur.execute(RESERVE, (len(rows),)).fetchone()
            assert reserved is not None  # setval returns one row
            last = int(reserved[0])
            first = last - len(rows) + 1
            # COPY instead of INSERT ... unnest: no array to build and parse, no RETURNING
            # to pair back (the ids are known). A binary COPY field carries no type, and a
            # uuid's binary form is its 16 bytes: sending them as bytea skips a UUID object
            # per row.
            with cur.copy(f"COPY {EVENTS_TABLE} (originator_id, originator_version, topic, "
                          "state, notification_id) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["bytea", "int8", "text", "bytea", "int8"])
                write_row = copy.write_row
                fromhex = bytes.fromhex
                for position, (aggregate, version, topic, state) in enumerate(rows, first):
                    write_row((fromhex(aggregate), version, topic, state, position))
        return list(range(first, last + 1))

    def read_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(position, state) after a position."""
        with self._connected("cannot read the log") as cur:
            cur.execute(
                f"SELECT notification_id, state FROM {EVENTS_TABLE} WHERE notification_id > %b "
                "ORDER BY notification_id LIMIT %b", (after, limit), binary=True)
            return cur.fetchall()

    def read_selected(
        self, after: int, until: int, limit: int, topics: list[str], first: bool
    ) -> list[tuple[int, bytes]]:
        """(position, state) of the events with these topics (and, with ``first``, every
        device's first event) in ``after < position <= until``."""
        also = " OR originator_version = 1" if first else ""
        with self._connected("cannot read the log") as cur:
            cur.execute(
                f"SELECT notification_id, state FROM {EVENTS_TABLE} "
                "WHERE notification_id > %b AND notification_id <= %b "
                f"AND (topic = ANY(%b){also}) ORDER BY notification_id LIMIT %b",
                (after, until, topics, limit), binary=True)
            return cur.fetchall()

    def head(self) -> int:
        """The last position (0 when empty)."""
        with self._connected("cannot read the log") as cur:
            cur.execute(f"SELECT max(notification_id) FROM {EVENTS_TABLE}")
            row = cur.fetchone()
        return int(row[0] or 0) if row else 0

    def device_events(self, aggregate_ids: list[UUID]) -> list[tuple[int, bytes]]:
        """(version, state) of these aggregates' events, by aggregate then version."""
        with self._connected("cannot load devices") as cur:
            cur.execute(
                f"SELECT originator_version, state FROM {EVENTS_TABLE} "
                "WHERE originator_id = ANY(%b) ORDER BY originator_id, originator_version",
                (aggregate_ids,), binary=True)
            return cur.fetchall()

    def device_versions(self, aggregate_ids: list[UUID]) -> dict[str, int]:
        """The last version of each of these aggregates that has events, by UUID hex."""
        with self._connected("cannot read the log") as cur:
            # One backward index probe per device (not a scan of all its events), the ids in
            # binary: after a conflict this asks about every device of a batch.
            cur.execute(
                "SELECT d.id, v.version FROM unnest(%b::uuid[]) AS d(id) CROSS JOIN LATERAL "
                f"(SELECT originator_version AS version FROM {EVENTS_TABLE} "
                "WHERE originator_id = d.id ORDER BY originator_version DESC LIMIT 1) AS v",
                (aggregate_ids,))
            return {uuid.hex: int(version) for uuid, version in cur.fetchall()}

    def read_spans(
        self, spans: list[tuple[str, int, int]], topics: list[str] | None
    ) -> list[tuple[int, bytes]]:
        """(position, state) of each (aggregate hex, start, end) span's events (of these
        topics, or all), in one statement: one indexed range per span."""
        ids = [UUID(a) for a, _, _ in spans]
        starts = [s for _, s, _ in spans]
        ends = [e for _, _, e in spans]
        also = "" if topics is None else " AND e.topic = ANY(%s)"
        with self._connected("cannot read the log") as cur:
            cur.execute(
                "SELECT e.notification_id, e.state FROM unnest(%s::uuid[], %s::int8[], "
                f"%s::int8[]) AS s(id, first, stop) JOIN {EVENTS_TABLE} e "
                "ON e.originator_id = s.id AND e.notification_id >= s.first "
                f"AND e.notification_id < s.stop{also}",
                (ids, starts, ends, *(() if topics is None else (topics,))))
            return [(int(p), bytes(state)) for p, state in cur.fetchall()]

    def events_after(self, since: list[tuple[UUID, int]]) -> list[tuple[int, bytes]]:
        """(version, state) of each aggregate's events after the version given with it."""
        if not since:
            return []
        ids, versions = (list(c) for c in zip(*since, strict=True))
        with self._connected("cannot load devices") as cur:
            cur.execute(
                "SELECT e.originator_version, e.state FROM unnest(%b::uuid[], %b::int8[]) "
                f"AS c(id, v) JOIN {EVENTS_TABLE} e ON e.originator_id = c.id "
                "AND e.originator_version > c.v ORDER BY e.originator_id, e.originator_version",
                (ids, versions), binary=True)
            return cur.fetchall()

    def close(self) -> None:
        """Close the pool and the lease connection (which releases the leases)."""
        with self._lease_lock:
            if self._lease_conn is not None:
                self._lease_conn.close()
                self._lease_conn = None
            self._held.clear()
        self._pool.close()
