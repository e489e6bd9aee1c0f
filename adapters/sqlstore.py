"""What the SQLite and PostgreSQL projection stores share: the schema and the statements.

Rows live in ``idstitch_rows (kind, key, doc)`` and the positions in ``idstitch_tracking``, in the
same database as the events. A transaction locks the projection's tracking row first, so two
processes catching up the same projection take turns instead of applying a batch twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from idstitch.adapters.tracking_rows import (
    head_and_tracked,
    head_and_tracking_sql,
    tracked_rows,
    tracking_position,
)
from idstitch.projections.store import write_if_in_transaction


class Cursor(Protocol):
    """The slice of DB-API cursor both drivers provide."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any:
        """Run one statement."""
        ...

    def executemany(self, sql: Any, params: Any, /) -> Any:
        """Run one statement per parameter row."""
        ...

    def fetchall(self) -> list[Any]:
        """All remaining rows."""
        ...

    def fetchone(self) -> Any:
        """The next row."""
        ...


class SqlTransaction:
    """A projection transaction over one open cursor."""

    def __init__(self, store: SqlProjectionStore, cur: Cursor, name: str,
                 known: tuple[int, str | None] | None = None) -> None:
        """``known``: the tracking row's (position, meta), read in this transaction already
        under the write lock (a command's rows landing in its append): not locked again."""
        self._store = store
        self._cur = cur
        self._name = name
        self.position, self.meta = (store._lock_tracking(cur, name) if known is None
                                    else known)

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Rows among ``keys``, as this transaction sees them."""
        return self._store._select(self._cur, kind, keys)

    def write(
        self, rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None
    ) -> None:
        """Upsert and delete rows, move the position: committed when the transaction ends."""
        p = self._store.param
        # In key order: the B-tree pages of the primary key are then visited once each and in
        # order, not at random (a batch's rows are random keys: person, device and email ids).
        upserts: list[tuple[str, str, bytes]] = []
        deletes: list[tuple[str, str]] = []
        for (k, key), doc in rows.items():
            if doc is None:
                deletes.append((k, key))
            else:
                upserts.append((k, key, doc))
        # A unit's rows come in key order already (Unit.encoded): then a linear pass.
        upserts.sort()
        deletes.sort()
        if upserts and self.position == 0:
            # The projection's first commit since it was created or reset (its configuration
            # may be recorded already, at position 0): its kinds hold no rows (rows and
            # tracking commit together), as a rebuild's first commit.
            self._store._insert_fresh(self._cur, upserts)
        elif upserts:
            self._store._upsert(self._cur, upserts)
        if deletes:
            self._store._delete(self._cur, deletes)
        self._cur.execute(
            f"UPDATE idstitch_tracking SET position = {p}, meta = {p} WHERE name = {p}",
            (position, meta, self._name),
        )


class SnapshotRows:
    """Row reads inside one read transaction."""

    def __init__(self, store: SqlProjectionStore, cur: Cursor) -> None:
        self._store = store
        self._cur = cur

    def get(self, kind: str, key: str) -> bytes | None:
        """One row, as of the transaction's snapshot."""
        return self._store._select(self._cur, kind, [key]).get(key)

    def get_each(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """The rows among these (kind, key) pairs, as of the snapshot (one statement a
        chunk: a profile reads its devices and their attributes at once)."""
        return self._store._select_each(self._cur, keys)

    def tracked_at_head(
        self, names: Sequence[str]
    ) -> tuple[int, dict[str, tuple[int, str | None]]] | None:
        """The log's head and the tracking rows as of this snapshot, in one statement (a query
        whose rows need no catch-up answers from the snapshot it read them in)."""
        store = self._store
        if store.head_sql is None:
            return None
        self._cur.execute(*store.head_and_tracking(names))
        return head_and_tracked(names, self._cur.fetchall())

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        """Projections' tracking positions, as of the same snapshot as the rows (in one
        statement): a reader checks them to know the rows hold what it caught up to (a reset
        in between empties them and moves the position back to 0)."""
        marks = ", ".join([self._store.param] * len(names))
        self._cur.execute(
            f"SELECT name, position FROM idstitch_tracking WHERE name IN ({marks})", tuple(names))
        found = {name: tracking_position(name, position) for name, position in self._cur.fetchall()}
        return {name: found.get(name, 0) for name in names}


class SqlProjectionStore:
    """Statements shared by the SQL stores; subclasses supply connections and dialect bits."""

    param = "?"
    blob = "BLOB"
    head_sql: str | None = None
    """The log's head, read by the store's own connection where the log's table is in the
    same database (both stores); None where it is not."""
    whole_table_delete = True
    """Whether a reset may delete the whole table when only its kinds are in it: only where
    the write transaction excludes every other writer from its start (SQLite); elsewhere
    another projection's rows committed between the check and the delete would go too."""
    chunk = 500
    contains_sql = "instr(doc, {p}) > 0"
    """Whether a row's bytes contain a parameter (SQLite's instr compares a blob's bytes)."""
    uses_fresh = False
    """Whether :meth:`write_if` makes use of its ``fresh`` hint (a caller may skip working it
    out when not): an upsert of a new row costs SQLite no more than an insert."""

    def _cursor(self, *, write: bool) -> AbstractContextManager[Cursor]:
        """A cursor in a transaction that commits on success and rolls back on error."""
        raise NotImplementedError

    def schema(self) -> list[str]:
        """DDL for the projection tables."""
        return [
            "CREATE TABLE IF NOT EXISTS idstitch_rows (kind TEXT NOT NULL, key TEXT NOT NULL, "
            f"doc {self.blob} NOT NULL, PRIMARY KEY (kind, key))",
            "CREATE TABLE IF NOT EXISTS idstitch_tracking (name TEXT PRIMARY KEY, "
            "position BIGINT NOT NULL, meta TEXT)",
        ]

    def _lock_tracking(self, cur: Cursor, name: str) -> tuple[int, str | None]:
        # One statement that creates the row if needed and returns it, locked (the conflict
        # update takes the row lock on PostgreSQL; SQLite already holds the write lock): two
        # statements left a window in which a concurrent reset() could delete the row.
        p = self.param
        cur.execute(
            f"INSERT INTO idstitch_tracking (name, position) VALUES ({p}, 0) "
            "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING position, meta",
            (name,),
        )
        position, meta = cur.fetchone()
        return tracking_position(name, position), meta

    def _upsert(self, cur: Cursor, rows: list[tuple[str, str, bytes]]) -> None:
        p = self.param
        cur.executemany(
            f"INSERT INTO idstitch_rows (kind, key, doc) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc",
            rows,
        )

    def _insert_fresh(self, cur: Cursor, rows: list[tuple[str, str, bytes]]) -> None:
        """Rows of a projection that has none yet (a store may write them faster)."""
        self._upsert(cur, rows)

    def _delete(self, cur: Cursor, rows: list[tuple[str, str]]) -> None:
        p = self.param
        cur.executemany(f"DELETE FROM idstitch_rows WHERE kind = {p} AND key = {p}", rows)

    def _select(self, cur: Cursor, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        p = self.param
        out: dict[str, bytes] = {}
        for i in range(0, len(keys), self.chunk):
            part = list(keys[i : i + self.chunk])
            marks = ", ".join([p] * len(part))
            cur.execute(
                f"SELECT key, doc FROM idstitch_rows WHERE kind = {p} AND key IN ({marks})",
                (kind, *part),
            )
            out.update((key, bytes(doc)) for key, doc in cur.fetchall())
        return out

    def _select_each(self, cur: Cursor, keys: Sequence[tuple[str, str]]
                     ) -> dict[tuple[str, str], bytes]:
        # One read per kind. SQLite does not use the primary key for `(kind, key) IN (VALUES
        # ...)` (it scanned the table); on PostgreSQL one statement for every kind (an unnest
        # join, or kind = ANY AND key = ANY) cost more than the round trip it saved (profile
        # p50 +50 us, in-process A/B), against a prepared equality per kind.
        by_kind: dict[str, list[str]] = {}
        for kind, key in keys:
            by_kind.setdefault(kind, []).append(key)
        return {(kind, key): doc for kind, wanted in by_kind.items()
                for key, doc in self._select(cur, kind, wanted).items()}

    @contextmanager
    def transaction(self, name: str) -> Iterator[SqlTransaction]:
        """Lock the projection, yield a transaction, commit at the end."""
        with self._cursor(write=True) as cur:
            yield SqlTransaction(self, cur, name)

    def write_if(
        self, name: str, expected: tuple[int, str | None],
        rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None,
        fresh: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> tuple[int, str | None] | None:
        """Write rows and the position if the tracking still holds ``expected`` (``fresh``
        is no help here: an upsert of a new row costs SQLite no more than an insert)."""
        return write_if_in_transaction(self, name, expected, rows, position, meta)

    @contextmanager
    def snapshot(self) -> Iterator[SnapshotRows]:
        """Reads in one read transaction (a consistent snapshot)."""
        with self._cursor(write=False) as cur:
            yield SnapshotRows(self, cur)

    def get(self, kind: str, key: str) -> bytes | None:
        """One committed row."""
        return self.get_many(kind, [key]).get(key)

    def get_each(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """Committed rows among these (kind, key) pairs."""
        with self._statement() as cur:
            return self._select_each(cur, keys)

    def _statement(self) -> AbstractContextManager[Cursor]:
        """A cursor for one read statement (a transaction of its own, as the store sees fit)."""
        return self._cursor(write=False)

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Committed rows among ``keys``."""
        with self._statement() as cur:
            return self._select(cur, kind, keys)

    def scan(self, kind: str) -> Iterator[tuple[str, bytes]]:
        """Every committed row of a kind, ordered by key."""
        with self._cursor(write=False) as cur:
            cur.execute(
                f"SELECT key, doc FROM idstitch_rows WHERE kind = {self.param} ORDER BY key",
                (kind,),
            )
            rows = cur.fetchall()
        for key, doc in rows:
            yield key, bytes(doc)

    def count(self, kind: str) -> int:
        """How many committed rows of a kind there are."""
        with self._statement() as cur:
            cur.execute(f"SELECT count(*) FROM idstitch_rows WHERE kind = {self.param}", (kind,))
            found = cur.fetchone()
        return int(found[0]) if found else 0

    def scan_without(self, kind: str, needle: bytes) -> Iterator[tuple[str, bytes]]:
        """Every committed row of a kind whose bytes do not contain ``needle``, by key."""
        p = self.param
        with self._cursor(write=False) as cur:
            cur.execute(f"SELECT key, doc FROM idstitch_rows WHERE kind = {p} AND NOT "
                        f"{self.contains_sql.format(p=p)} ORDER BY key", (kind, needle))
            rows = cur.fetchall()
        for key, doc in rows:
            yield key, bytes(doc)

    def tracked(self, name: str) -> tuple[int, str | None]:
        """Committed tracking position and meta, in one read."""
        return self._tracking(name)

    def raise_mark(self, name: str, value: int) -> int | None:
        """Raise a tracking row to at least ``value``, excluding appends meanwhile (SQLite's
        write transaction holds the file's write lock; PostgreSQL adds the events table's);
        the log's head then."""
        p = self.param
        with self._cursor(write=True) as cur:
            self._exclude_appends(cur)
            cur.execute(f"INSERT INTO idstitch_tracking (name, position) VALUES ({p}, {p}) "
                        "ON CONFLICT (name) DO UPDATE SET position = CASE WHEN "
                        "excluded.position > idstitch_tracking.position THEN excluded.position "
                        "ELSE idstitch_tracking.position END", (name, value))
            if self.head_sql is None:
                return None
            cur.execute(self.head_sql)
            found = cur.fetchone()
        return int(found[0] or 0) if found else 0

    def _exclude_appends(self, cur: Cursor) -> None:
        """Make the open write transaction exclude the log's appends (SQLite's does already)."""

    def tracked_many(self, names: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """Committed tracking position and meta of each named projection, in one statement
        (a command checks every projection's meta before it appends)."""
        if not names:
            return {}
        with self._statement() as cur:
            cur.execute(*self.tracking_query(names))
            return tracked_rows(names, cur.fetchall())

    def tracking_query(self, names: Sequence[str]) -> tuple[str, tuple[str, ...]]:
        """The statement (and its parameters) reading the named tracking rows (some names)."""
        marks = ", ".join([self.param] * len(names))
        return (f"SELECT name, position, meta FROM idstitch_tracking WHERE name IN ({marks})",
                tuple(names))

    def tracked_at_head(
        self, names: Sequence[str]
    ) -> tuple[int, dict[str, tuple[int, str | None]]] | None:
        """The head and the tracking rows in one statement (one snapshot), where the store
        holds the log (:attr:`head_sql`): the catch-up before every query reads both."""
        if self.head_sql is None:
            return None
        with self._statement() as cur:
            cur.execute(*self.head_and_tracking(names))
            return head_and_tracked(names, cur.fetchall())

    def head_and_tracking(self, names: Sequence[str]) -> tuple[str, tuple[str, ...]]:
        """The statement (and its parameters) reading the log's head and the named tracking
        rows at once (see :func:`head_and_tracked`)."""
        marks = ", ".join([self.param] * len(names)) or "NULL"
        return head_and_tracking_sql(self.head_sql or "", marks), tuple(names)

    def position(self, name: str) -> int:
        """Committed tracking position."""
        return self._tracking(name)[0]

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        """Committed tracking positions of the named projections, in one read."""
        with self._statement() as cur:
            return SnapshotRows(self, cur).positions(names)

    def meta(self, name: str) -> str | None:
        """Committed tracking meta (the configuration the rows were built under)."""
        return self._tracking(name)[1]

    def _tracking(self, name: str) -> tuple[int, str | None]:
        with self._statement() as cur:
            cur.execute(
                f"SELECT position, meta FROM idstitch_tracking WHERE name = {self.param}", (name,)
            )
            row = cur.fetchone()
        return (0, None) if row is None else (tracking_position(name, row[0]), row[1])


    def reset(self, names: str | Sequence[str], kinds: Sequence[str],
              metas: Mapping[str, str] | None = None) -> None:
        """Drop projections' rows and tracking in one transaction (``metas``: the tracking
        rows to leave at position 0 instead, with these configurations)."""
        p = self.param
        marks = ", ".join([p] * len(kinds))
        with self._cursor(write=True) as cur:
            # Tracking first: on PostgreSQL this waits for any commit of these projections
            # in flight and holds off the next, so none can leave rows behind the reset, or
            # lose its tracking row but keep its rows (position 0 promises no rows).
            cur.executemany(f"DELETE FROM idstitch_tracking WHERE name = {p}",
                            [(n,) for n in ([names] if isinstance(names, str) else names)])
            if metas:
                cur.executemany(f"INSERT INTO idstitch_tracking (name, position, meta) "
                                f"VALUES ({p}, 0, {p})", list(metas.items()))
            only_ours = False
            if self.whole_table_delete:
                cur.execute(f"SELECT 1 FROM idstitch_rows WHERE kind NOT IN ({marks}) LIMIT 1",
                            tuple(kinds))
                only_ours = cur.fetchone() is None
            if only_ours:
                # Nothing else lives in the table: an unqualified DELETE lets SQLite drop whole
                # pages (its truncate optimization) instead of deleting row by row.
                cur.execute("DELETE FROM idstitch_rows")
            else:
                cur.executemany(f"DELETE FROM idstitch_rows WHERE kind = {p}",
                                [(k,) for k in kinds])
