"""PostgreSQL transactions begun and committed by hand, so that BEGIN shares its round trip
with the statement after it: the projection commit (:class:`PostgresTransaction`) and the
read snapshot (:class:`PostgresSnapshot`) of :mod:`idstitch.adapters.postgres`.

Every statement is a round trip over the network; psycopg's ``conn.transaction()`` sends BEGIN
and COMMIT as round trips of their own. A simple-protocol query runs several statements in one
round trip but takes no parameters: what goes in one (a projection's name) goes as a quoted
literal (psycopg.sql.Literal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, cast

import psycopg
from idstitch.adapters.sqlstore import SnapshotRows, SqlProjectionStore, SqlTransaction
from idstitch.adapters.tracking_rows import (
    head_and_tracked,
    head_and_tracking_sql,
    tracking_position,
)
from psycopg import sql

WRITE_ROWS = (
    "WITH up AS (INSERT INTO idstitch_rows (kind, key, doc) SELECT * FROM unnest(%b::text[], "
    "%b::text[], %b::bytea[]) ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc), "
    "gone AS (DELETE FROM idstitch_rows USING unnest(%b::text[], %b::text[]) AS g(kind, key) "
    "WHERE idstitch_rows.kind = g.kind AND idstitch_rows.key = g.key) "
    "UPDATE idstitch_tracking SET position = %s, meta = %s WHERE name = %s")
"""A commit's rows (upserted and deleted: never the same key twice) and its position in one
statement: data-modifying CTEs run to completion whether read or not."""

WRITE_IF = (
    "WITH t AS (UPDATE idstitch_tracking SET position = %s, meta = %s::text WHERE name = %s "
    "AND position = %s AND meta IS NOT DISTINCT FROM %s::text RETURNING 1), "
    "up AS (INSERT INTO idstitch_rows (kind, key, doc) SELECT u.* FROM unnest(%b::text[], "
    "%b::text[], %b::bytea[]) AS u WHERE EXISTS (SELECT FROM t) "
    "ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc), "
    "new AS (INSERT INTO idstitch_rows (kind, key, doc) SELECT u.* FROM unnest(%b::text[], "
    "%b::text[], %b::bytea[]) AS u WHERE EXISTS (SELECT FROM t)), "
    "gone AS (DELETE FROM idstitch_rows USING unnest(%b::text[], %b::text[]) AS g(kind, key) "
    "WHERE idstitch_rows.kind = g.kind AND idstitch_rows.key = g.key AND EXISTS (SELECT FROM t)) "
    "SELECT EXISTS (SELECT FROM t), "
    "(SELECT position FROM idstitch_tracking WHERE name = %s), "
    "(SELECT meta FROM idstitch_tracking WHERE name = %s)")
"""ProjectionStore.write_if in one statement, in autocommit (one round trip where a
transaction takes three): the tracking row is moved only if it still holds the expected
(position, meta), and the rows are written only if it was (a data-modifying CTE reading
another's RETURNING). A concurrent holder of the tracking row makes the UPDATE wait, then
re-check its WHERE on the committed row. The trailing reads see the statement's snapshot:
the (position, meta) found when nothing was written. Rows the fold found absent go in a plain
INSERT (``new``): an upsert's conflict check cost the server ~3 us more a row, and a large
ingest inserts most of its rows once."""

LOCK_TRACKING = (
    "BEGIN; INSERT INTO idstitch_tracking (name, position) VALUES ({}, 0) "
    "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING position, meta")
"""BEGIN and SqlProjectionStore's tracking lock in one round trip: the simple query protocol
runs several statements, but takes no parameters (the name goes as a quoted literal)."""


def write_if(
    cur: psycopg.Cursor[Any], name: str, expected: tuple[int, str | None],
    rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None,
    fresh: AbstractSet[tuple[str, str]] = frozenset(),
) -> tuple[int, str | None] | None:
    """Run WRITE_IF (on a cursor in autocommit); None when written, else the tracking found.
    ``fresh``: the keys to insert without an upsert (see ProjectionStore.write_if): if one
    has a row after all, the statement fails whole and runs again with upserts only."""
    upserts = [(k, key, doc) for (k, key), doc in rows.items()
               if doc is not None and (k, key) not in fresh]
    new = [(k, key, doc) for (k, key), doc in rows.items() if doc is not None
           and (k, key) in fresh] if fresh else []
    gone = [(k, key) for (k, key), doc in rows.items() if doc is None]
    params = [position, meta, name, expected[0], expected[1],
              [r[0] for r in upserts], [r[1] for r in upserts], [r[2] for r in upserts],
              [r[0] for r in new], [r[1] for r in new], [r[2] for r in new],
              [r[0] for r in gone], [r[1] for r in gone], name, name]
    try:
        cur.execute(WRITE_IF, params)
    except psycopg.errors.UniqueViolation:
        if not new:
            raise
        # Autocommit: the failed statement wrote nothing. A row the caller took for new
        # exists (written by a path the caller's cache did not see): every row an upsert.
        return write_if(cur, name, expected, rows, position, meta)
    row = cur.fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    written, found, found_meta = row
    if written:
        return None
    return (0, None) if found is None else (tracking_position(name, found), found_meta)


class PostgresTransaction(SqlTransaction):
    """A projection transaction in three round trips where SqlTransaction takes five or six:
    BEGIN with the tracking lock; the rows and the position in one statement; COMMIT.
    ``write`` is kept until the transaction ends (every caller writes last); a first commit
    writes as SqlTransaction does (COPY)."""

    def __init__(self, store: SqlProjectionStore, cur: psycopg.Cursor[Any], name: str,
                 locked: tuple[int, str | None]) -> None:
        self._store, self._cur, self._name = store, cur, name
        self.position, self.meta = locked
        self._pending: tuple[Mapping[tuple[str, str], bytes | None], int, str | None] | None \
            = None

    def write(
        self, rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None
    ) -> None:
        """Upsert and delete rows, move the position: sent with the COMMIT."""
        self._pending = (rows, position, meta)

    def finish(self) -> None:
        """Send what was written and COMMIT."""
        cur = self._cur
        if self._pending is None:
            cur.execute("COMMIT")
            return
        rows, position, meta = self._pending
        self._pending = None
        if self.position == 0:  # a first commit (position 0 holds no rows)
            super().write(rows, position, meta)
            cur.execute("COMMIT")
            return
        upserts = [(k, key, doc) for (k, key), doc in rows.items() if doc is not None]
        gone = [(k, key) for (k, key), doc in rows.items() if doc is None]
        cast("psycopg.Cursor[Any]", cur).execute(WRITE_ROWS, (
            [r[0] for r in upserts], [r[1] for r in upserts], [r[2] for r in upserts],
            [r[0] for r in gone], [r[1] for r in gone], position, meta, self._name))
        cur.execute("COMMIT")


BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


class PostgresSnapshot(SnapshotRows):
    """Row reads in one REPEATABLE READ transaction, begun by the first read: a query first
    checks the tracking positions, and BEGIN goes in the same round trip (a simple-protocol
    query of two statements, the names as quoted literals)."""

    def __init__(self, store: SqlProjectionStore, cur: psycopg.Cursor[Any]) -> None:
        super().__init__(store, cur)
        self._pg = cur
        self.begun = False

    def _begin(self) -> None:
        if not self.begun:
            self._pg.execute(BEGIN_SNAPSHOT)
            self.begun = True

    def get(self, kind: str, key: str) -> bytes | None:
        """One row, as of the snapshot."""
        self._begin()
        return super().get(kind, key)

    def get_each(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """The rows among these (kind, key) pairs, as of the snapshot."""
        self._begin()
        return super().get_each(keys)

    def tracked_at_head(
        self, names: Sequence[str]
    ) -> tuple[int, dict[str, tuple[int, str | None]]] | None:
        """The log's head and the tracking rows as of the snapshot, read with its BEGIN in one
        round trip (see SnapshotRows)."""
        if self.begun or not names or self._store.head_sql is None:
            self._begin()
            return super().tracked_at_head(names)
        self.begun = True
        self._pg.execute(sql.SQL(
            BEGIN_SNAPSHOT + "; " + head_and_tracking_sql(self._store.head_sql, "{}")).format(
            sql.SQL(", ").join(sql.Literal(n) for n in names)))
        self._pg.nextset()  # BEGIN's result has no rows
        return head_and_tracked(names, self._pg.fetchall())

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        """The projections' tracking positions, as of the snapshot (see SnapshotRows)."""
        if self.begun or not names:
            self._begin()
            return super().positions(names)
        self.begun = True
        self._pg.execute(sql.SQL(BEGIN_SNAPSHOT + "; SELECT name, position FROM "
                                 "idstitch_tracking WHERE name IN ({})").format(
            sql.SQL(", ").join(sql.Literal(name) for name in names)))
        self._pg.nextset()  # BEGIN's result has no rows
        found = {name: tracking_position(name, position)
                 for name, position in self._pg.fetchall()}
        return {name: found.get(name, 0) for name in names}


__all__ = ["BEGIN_SNAPSHOT", "LOCK_TRACKING", "WRITE_IF", "WRITE_ROWS", "PostgresSnapshot",
           "PostgresTransaction"]
