"""The batch path of the event log on PostgreSQL (``FastLog``), on eventsourcing's own events
table, and the one place where psycopg's errors become idstitch's.

A mixin of :class:`idstitch.adapters.postgres.PostgresProjectionStore` (which owns the pool):
the log's appends and reads go through the same connections as the projection rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any
from uuid import UUID

import psycopg
from idstitch.adapters.chain import GENESIS, ChainedLog, link
from idstitch.adapters.pg_pool import QueuedPool
from idstitch.adapters.postgres_landing import CapturedWrite, rows_params, with_rows
from idstitch.adapters.sqlchain import ChainSql, SqlChainView, chain_ddl, chained, upgrade
from idstitch.adapters.sqlchain import append as chain_append
from idstitch.adapters.tracking_rows import tracked_rows
from idstitch.domain.errors import StoreError
from idstitch.domain.events import DeviceEvent
from idstitch.domain.ports import AppendCheck, WriteConflict
from idstitch.projections.store import LoggedEvent
from psycopg import sql


@contextmanager
def rolled_back(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """For a transaction begun and committed by hand (so that BEGIN can share a round trip
    with the statements after it): whatever raises in the block, the transaction left open is
    rolled back."""
    try:
        yield
    except BaseException:
        if conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with suppress(psycopg.Error):  # a lost connection: the server rolls back itself
                conn.execute("ROLLBACK")
        raise


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


EVENTS_TABLE = "idstitch_events"
"""eventsourcing's table for the application named ``idstitch`` (in the search_path schema)."""

RESERVE = (
    "SELECT setval(seq, nextval(seq) + %s - 1) FROM (SELECT pg_get_serial_sequence("
    f"'{EVENTS_TABLE}', 'notification_id')::regclass AS seq) AS s"
)
"""Take n ids from the table's sequence in one call; returns the last (the table lock held)."""

NOTIFY_CHANNEL = "idstitch_events"
"""The channel every append notifies (payload: the schema appended to), and `idstitch project`
listens on (see idstitch.adapters.postgres_notify)."""
NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', current_schema())"

RESERVE_AND_TAIL = (
    "SELECT setval(seq, nextval(seq) + %s - 1), (SELECT substring(hashes from length(hashes) - 31) "
    "FROM idstitch_chain ORDER BY position DESC LIMIT 1) FROM (SELECT pg_get_serial_sequence("
    f"'{EVENTS_TABLE}', 'notification_id')::regclass AS seq) AS s"
)
"""RESERVE and the chain's last hash (NULL: none yet) in one statement, under the table lock."""

INSERT_EVENTS = (
    f"INSERT INTO {EVENTS_TABLE} (originator_id, originator_version, topic, state, "
    "notification_id) SELECT * FROM unnest(%b::uuid[], %b::int8[], %b::text[], %b::bytea[], "
    "%b::int8[])"
)
"""A few rows at known positions (a command's append)."""

BEGIN_AND_RESERVE = (
    f"BEGIN; SET LOCAL lock_timeout = '30s'; LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE; "
    + RESERVE_AND_TAIL.replace("%s", "{n}"))
"""The start of a command's append in one round trip (``n``: how many rows, an int)."""

INSERT_CHAIN_NOTIFY = (
    f"WITH events AS ({INSERT_EVENTS}), chain AS (INSERT INTO idstitch_chain (position, hashes) "
    "VALUES (%s, %s) ON CONFLICT (position) DO UPDATE SET hashes = excluded.hashes) "
    f"SELECT pg_notify('{NOTIFY_CHANNEL}', current_schema())")
"""A command's events, their chain run and the notification in one statement."""

READ_TRACKING = "SELECT name, position, meta FROM idstitch_tracking WHERE name IN ({})"
"""The tracking rows an AppendCheck reads (the projection store's table, same database)."""

FEW_ROWS = 64
"""Appends of up to this many rows (a command's) go in three round trips (_append_few); larger
ones (an ingest batch) use COPY, which sends no array to build and parse."""


CHAIN = ChainSql.of(
    events=EVENTS_TABLE, position="notification_id",
    originator="replace(originator_id::text, '-', '')", param="%s",
    last="substring(hashes from length(hashes) - 31)",
    insert="INSERT INTO idstitch_chain (position, hashes) VALUES (%s, %s) "
           "ON CONFLICT (position) DO UPDATE SET hashes = excluded.hashes",
    exists="SELECT to_regclass('idstitch_chain') IS NOT NULL",
    ddl=chain_ddl("BIGINT", "BYTEA"))
"""The hash chain's statements (see idstitch.adapters.sqlchain): the uuid column read as the
32 hex digits idstitch hashes (and writes) it as."""


@lru_cache(maxsize=256)
def _begin_and_reserve(n: int, names: tuple[str, ...]) -> str:
    """BEGIN_AND_RESERVE for ``n`` rows, then the tracking rows of ``names`` (if any)."""
    query = BEGIN_AND_RESERVE.format(n=n)
    if not names:
        return query
    return query + "; " + sql.SQL(READ_TRACKING).format(
        sql.SQL(", ").join(map(sql.Literal, names))).as_string(None)


class PostgresLog:
    """The events table's batch appends and reads, over the store's pool."""

    _pool: QueuedPool
    _landing: threading.local

    @contextmanager
    def _connected(self, what: str) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in autocommit for one statement; errors translated as ``what`` failing."""
        with translated(what), self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    # The batch path of the event log (FastLog), on eventsourcing's own events table. The
    # EXCLUSIVE table lock is the recorder's own rule: ids become visible in commit order, so a
    # reader never skips a gap that a slower writer fills later.

    def append_events(self, rows: list[tuple[str, int, str, bytes]],
                      check: AppendCheck | None = None,
                      events: Sequence[DeviceEvent] | None = None) -> list[int]:
        """Insert (originator_id as UUID hex, version, topic, state) rows in one transaction,
        under the table lock; their positions, consecutive and in the order given. ``check``:
        a command's reads the tracking rows in the append's first round trip, and its rows
        land in the append's statement where they can (``events``: those of ``rows``; see
        :mod:`idstitch.adapters.postgres_landing`)."""
        if not rows:
            return []
        if len(rows) <= FEW_ROWS:
            return self._append_few(rows, check, events)
        with self.exclusive(check) as insert:
            return insert(rows)

    def _append_few(self, rows: list[tuple[str, int, str, bytes]],
                    check: AppendCheck | None,
                    events: Sequence[DeviceEvent] | None = None) -> list[int]:
        """A command's append in three round trips instead of ten, same statements, same lock:
        BEGIN, the lock timeout, the table lock and the reservation (with the chain's tail),
        and the tracking rows ``check`` needs, in one simple-protocol query (several
        statements, no parameters: the count is an int, the names quoted literals); the
        events, their chain run and the notification in one statement (data-modifying CTEs
        run to completion whether read or not); COMMIT. (psycopg's pipeline mode, which sends
        statements without waiting, was measured ~0.2 ms slower per command than this. The
        tracking read had a round trip of its own before the append: ~0.1 ms of 1.2.)"""
        n = len(rows)
        query = _begin_and_reserve(n, tuple(check.names) if check is not None else ())
        landed = False
        with translated("cannot append events"), self._pool.connection() as conn, \
                conn.cursor() as cur, rolled_back(conn):
            cur.execute(query)
            # BEGIN, SET and LOCK return no rows; the reservation does, then the tracking.
            while cur.description is None and cur.nextset():
                pass
            reserved = cur.fetchone()
            assert reserved is not None  # setval returns one row
            if check is not None:
                found = cur.fetchall() if check.names and cur.nextset() else []
                # Raises to refuse: rolled back, nothing appended.
                check.found(tracked_rows(check.names, found))
            last = int(reserved[0])
            prev = GENESIS if reserved[1] is None else bytes(reserved[1])
            positions = list(range(last - n + 1, last + 1))
            params: list[Any] = [
                [UUID(hex=r[0]) for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                [r[3] for r in rows], positions, positions[0],
                b"".join(link(prev, positions, rows))]
            writes: list[CapturedWrite] = []
            if check is not None and check.inline and events:
                landed, writes = self._land(check, positions, events)
            try:
                if writes:
                    cur.execute(with_rows(INSERT_CHAIN_NOTIFY, len(writes)),
                                params + rows_params(writes))
                    written = cur.fetchone()
                    if written is None or not all(written[1:]):
                        # Another commit came first for some projection: its rows were not
                        # written, and the caches folded for them are wrong.
                        landed = False
                        if check is not None:
                            check.abandoned()
                else:
                    cur.execute(INSERT_CHAIN_NOTIFY, params)
                cur.execute("COMMIT")
            except BaseException:
                if landed and check is not None:
                    check.abandoned()
                raise
        return positions

    def _land(self, check: AppendCheck, positions: list[int],
              events: Sequence[DeviceEvent]) -> tuple[bool, list[CapturedWrite]]:
        """``check.landed`` with the store's writes held back (this thread's only): whether
        the rows landed, and the writes to put in the append's statement. A fold that fails
        (or cannot land) leaves nothing to write: the events go alone, and the catch-up after
        the append meets it again, as on SQLite."""
        writes: list[CapturedWrite] = []
        self._landing.writes = writes
        try:
            landed = check.landed(list(map(LoggedEvent, positions, events)))
        except Exception:
            return False, []
        finally:
            self._landing.writes = None
        return landed, writes if landed else []

    @contextmanager
    def exclusive(self, check: AppendCheck | None = None
                  ) -> Iterator[Callable[[list[tuple[str, int, str, bytes]]], list[int]]]:
        """Hold the events table's lock: nobody else appends until the block ends. Yields an
        insert function (its rows commit when the block ends); reads of the log on other
        connections go on meanwhile (the lock does not block them). ``check`` is given the
        tracking rows it names, read under the lock (a forget's mark is raised under the same
        lock: see :meth:`raise_mark`)."""
        with translated("cannot append events"), self._pool.connection() as conn, \
                conn.transaction(), conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = '30s'")
            cur.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")
            if check is not None:
                names = tuple(check.names)
                found = cur.execute(sql.SQL(READ_TRACKING).format(sql.SQL(", ").join(
                    map(sql.Literal, names)))).fetchall() if names else []
                check.found(tracked_rows(names, found))
            yield lambda rows: self._copy(cur, rows)
            # Wakes `idstitch project` (LISTEN) when the rows commit: delivered at commit only,
            # and one notification per transaction however many rows it appended.
            cur.execute(NOTIFY)

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
            # The chain goes on from its last entry, read under the table lock: every append
            # holds it, so concurrent writers never fork the chain.
            positions = list(range(first, last + 1))
            chain_append(cur, CHAIN, positions, rows)
        return positions

    # The hash chain (idstitch.adapters.chain).

    def upgrade_chain(self) -> int:
        """Make the chain's tables on a new store, or on one made before the chain (chaining
        the events already there), once; how many events were chained."""
        with self._connected("cannot read the log's chain") as cur:
            if chained(cur, CHAIN):
                return 0
        with translated("cannot chain the log"), self._pool.connection() as conn, \
                conn.transaction(), conn.cursor(binary=True) as cur:
            cur.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")
            return upgrade(cur, CHAIN)

    @contextmanager
    def chain_view(self) -> Iterator[ChainedLog]:
        """The events and the chain in one read-only snapshot (a verification sees one state
        of the log however long it takes); results in binary: no hex decoding of bytea."""
        with translated("cannot read the log's chain"), self._pool.connection() as conn, \
                conn.transaction(), conn.cursor(binary=True) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield SqlChainView(cur, CHAIN)

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
