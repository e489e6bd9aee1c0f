"""Projection rows in the PostgreSQL database that holds the events, through a psycopg pool."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast
from uuid import UUID

import psycopg
from idstitch.adapters.eventlog import WriteConflict
from idstitch.adapters.sqlstore import Cursor, SqlProjectionStore
from idstitch.domain.errors import StoreError
from psycopg_pool import ConnectionPool

DDL_LOCK = 0x1D571C4  # advisory lock key: "idstitch" creating its schema and tables


@contextmanager
def ddl_lock(conninfo: str) -> Iterator[None]:
    """Serialise first-time schema and table creation across processes.

    PostgreSQL's ``CREATE ... IF NOT EXISTS`` is not safe against itself: two processes opening
    a fresh workspace at once can fail with "tuple concurrently updated".
    """
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
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


class PostgresProjectionStore(SqlProjectionStore):
    """The locked tracking row (an upsert) serialises catch-ups across processes."""

    param = "%s"
    blob = "BYTEA"
    whole_table_delete = False

    def __init__(self, conninfo: str, schema: str | None = None, pool_size: int = 4) -> None:
        kwargs: dict[str, Any] = {}
        if schema:
            kwargs["options"] = f"-c search_path={schema}"
        try:
            if schema:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            # Autocommit: a lone read is one round trip, not BEGIN, SELECT, COMMIT; every
            # multi-statement unit of work opens its transaction explicitly (conn.transaction()).
            kwargs["autocommit"] = True
            self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, kwargs=kwargs,
                                        open=True, timeout=10)
            with self._pool.connection() as conn:
                for ddl in self.schema():
                    conn.execute(ddl)
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL projection store: {e}") from e

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
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL failed: {e}") from e

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Cursor]:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                if not write:
                    # One snapshot for every statement of a read: a profile and its devices
                    # never mix states from before and after a concurrent catch-up.
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield cur
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL failed: {e}") from e

    # The batch path of the event log (FastLog), on eventsourcing's own events table. The
    # EXCLUSIVE table lock is the recorder's own rule: ids become visible in commit order, so a
    # reader never skips a gap that a slower writer fills later.

    def append_events(self, rows: list[tuple[str, int, str, bytes]]) -> list[int]:
        """Insert (originator_id as UUID hex, version, topic, state) rows in one transaction,
        under the table lock; their positions, consecutive and in the order given."""
        if not rows:
            return []
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = '30s'")
                cur.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")
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
        except psycopg.errors.UniqueViolation as e:
            raise WriteConflict(str(e)) from e
        except psycopg.Error as e:
            raise StoreError(f"cannot append events: {e}") from e
        return list(range(first, last + 1))

    def read_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(position, state) after a position."""
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                cur.execute(
                    f"SELECT notification_id, state FROM {EVENTS_TABLE} WHERE notification_id > %b "
                    "ORDER BY notification_id LIMIT %b", (after, limit), binary=True)
                return cur.fetchall()
        except psycopg.Error as e:
            raise StoreError(f"cannot read the log: {e}") from e

    def read_selected(
        self, after: int, until: int, limit: int, topics: list[str], first: bool
    ) -> list[tuple[int, bytes]]:
        """(position, state) of the events with these topics (and, with ``first``, every
        device's first event) in ``after < position <= until``."""
        also = " OR originator_version = 1" if first else ""
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                cur.execute(
                    f"SELECT notification_id, state FROM {EVENTS_TABLE} "
                    "WHERE notification_id > %b AND notification_id <= %b "
                    f"AND (topic = ANY(%b){also}) ORDER BY notification_id LIMIT %b",
                    (after, until, topics, limit), binary=True)
                return cur.fetchall()
        except psycopg.Error as e:
            raise StoreError(f"cannot read the log: {e}") from e

    def head(self) -> int:
        """The last position (0 when empty)."""
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                cur.execute(f"SELECT max(notification_id) FROM {EVENTS_TABLE}")
                row = cur.fetchone()
        except psycopg.Error as e:
            raise StoreError(f"cannot read the log: {e}") from e
        return int(row[0] or 0) if row else 0

    def device_events(self, aggregate_ids: list[UUID]) -> list[tuple[int, bytes]]:
        """(version, state) of these aggregates' events, by aggregate then version."""
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                cur.execute(
                    f"SELECT originator_version, state FROM {EVENTS_TABLE} "
                    "WHERE originator_id = ANY(%b) ORDER BY originator_id, originator_version",
                    (aggregate_ids,), binary=True)
                return cur.fetchall()
        except psycopg.Error as e:
            raise StoreError(f"cannot load devices: {e}") from e

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()
