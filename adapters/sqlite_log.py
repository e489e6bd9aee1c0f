"""SQLite's half of the device log (the FastLog port of :mod:`idstitch.adapters.eventlog`):
appends and reads on the log's tables (:mod:`idstitch.adapters.sqlite_layout`), with the hash
chain written in the same transaction. A mixin of :class:`~idstitch.adapters.sqlite.SqliteProjectionStore`,
which owns the connection, its lock and the file's write lock (as PostgreSQL's half lives in
:mod:`idstitch.adapters.postgres_log`)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from uuid import UUID

from idstitch.adapters import sqlite_layout as layout
from idstitch.adapters.sqlchain import ChainSql
from idstitch.adapters.sqlchain import append as chain_append
from idstitch.adapters.tracking_rows import tracked_rows
from idstitch.domain.errors import StoreError
from idstitch.domain.events import DeviceEvent
from idstitch.domain.ports import AppendCheck, WriteConflict
from idstitch.projections.store import LoggedEvent


@contextmanager
def translated(what: str) -> Iterator[None]:
    """The one place where sqlite3's errors become idstitch's: a taken (device, version) is
    a WriteConflict, anything else a StoreError saying what failed."""
    try:
        yield
    except sqlite3.IntegrityError as e:
        raise WriteConflict(str(e)) from e
    except sqlite3.Error as e:
        raise StoreError(f"{what}: {e}") from e


CHAIN = ChainSql.of(
    events=layout.CHAINED, position="e.position", originator="s.id", param="?",
    last="substr(hashes, -32)",
    # OR REPLACE: if someone deleted the last events, SQLite hands their rowids out again; an
    # append's run then replaces the orphaned one that starts there (verify reports the break,
    # instead of every later append failing).
    insert="INSERT OR REPLACE INTO idstitch_chain (position, hashes) VALUES (?, ?)")
"""The hash chain's statements (see idstitch.adapters.sqlchain): the chain hashes each event
with its stream's id (32 hex digits) and its topic's name, as the log stored them before they
were numbered, so an upgraded store's chain holds (see idstitch.adapters.sqlite_layout)."""

FEW = 16
"""Up to this many events an append (a single command's) finds each stream's number inside
its insert, one statement fewer than reading the numbers first."""


class SqliteLog:
    """The FastLog methods over the store's one connection (see the module)."""

    _conn: sqlite3.Connection
    _lock: threading.RLock
    _file: str
    _landing: bool
    _landing_tracked: dict[str, tuple[int, str | None]]
    _topic_codes: dict[str, int]
    """Each topic's code, as far as this store has read them (a code never changes)."""
    tracking_query: Callable[[Sequence[str]], tuple[str, tuple[str, ...]]]
    """The statement reading tracking rows (SqlProjectionStore's, which the store also is)."""
    chunk: int

    def _translated(self, what: str) -> AbstractContextManager[None]:
        """:func:`translated`, the message naming the file (a damaged or foreign file's
        errors then say which one)."""
        return translated(f"{what} ({self._file})")

    def _writing(self) -> AbstractContextManager[None]:
        """The file's write lock (the store defines it)."""
        raise NotImplementedError

    # The event log (FastLog) on the tables of idstitch.adapters.sqlite_layout, written with
    # executemany in one transaction instead of one statement per event.

    @contextmanager
    def exclusive(self, check: AppendCheck | None = None
                  ) -> Iterator[Callable[[list[tuple[str, int, str, bytes]]], list[int]]]:
        """Hold the file's write lock: nobody else appends until the block ends. Yields an
        insert function (its rows commit, synced, when the block ends); reads of the log run
        on this connection meanwhile, inside the transaction. ``check`` is given the tracking
        rows read under the lock first."""
        with self._lock, self._writing():
            committed = False
            try:
                with self._translated("cannot append events"):
                    self._conn.execute("PRAGMA synchronous=FULL")
                    self._conn.execute("BEGIN IMMEDIATE")
                    if check is not None:
                        self._checked(check)
                    yield self._insert
                    self._conn.commit()
                    committed = True
            finally:
                self._ended(committed)

    def _insert(self, rows: list[tuple[str, int, str, bytes]]) -> list[int]:
        """Insert events and their chain entries inside the open write transaction."""
        with self._translated("cannot append events"):
            # A device's first event numbers its stream. The (stream, version) index alone
            # tells a taken version (WriteConflict): a stream already numbered is left as is.
            first = list(dict.fromkeys(row[0] for row in rows if row[1] == 1))
            if first:
                self._number_new(first)
            codes = self._topic_codes
            if not codes.keys() >= {row[2] for row in rows}:
                self._conn.executemany(layout.INSERT_TOPIC, [(row[2],) for row in rows
                                                             if row[2] not in codes])
                codes = self._read_codes()
            try:
                if len(rows) <= FEW:
                    self._conn.executemany(layout.INSERT_EVENT_BY_ID, [
                        (stream, version, codes[topic], state)
                        for stream, version, topic, state in rows])
                else:
                    numbers = self._numbers(list(dict.fromkeys(row[0] for row in rows)))
                    self._conn.executemany(layout.INSERT_EVENT, [
                        (numbers.get(stream), version, codes[topic], state)
                        for stream, version, topic, state in rows])
            except sqlite3.IntegrityError as e:
                # A device past its first event whose stream has no number: its row was
                # deleted around idstitch (idstitch deletes none). Not a conflict to retry:
                # the retry would find no events for the device and start it again.
                if "NOT NULL" in str(e) and "stream" in str(e):
                    raise self._damaged() from e
                raise
            last = self._conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            # Under the write lock, with no AUTOINCREMENT and no deletes, the rowids of one
            # transaction's inserts are consecutive.
            positions = list(range(last - len(rows) + 1, last + 1))
            # The chain goes on from its last committed entry, read under the same lock: two
            # processes appending to one file never fork it.
            chain_append(self._conn, CHAIN, positions, rows)
        return positions

    def _number_new(self, ids: list[str]) -> None:
        """Number the streams of these ids that have none. A number is max + 1, so events
        already stored under a number above the streams' greatest mean that stream rows were
        deleted around idstitch: the new stream would take their number and every append of
        it would conflict with them, retried until ConcurrencyConflict. Said as it is instead."""
        execute = self._conn.execute
        top = execute(layout.TOP_NUMBER).fetchone()[0] or 0
        if (execute(layout.TOP_STREAM).fetchone()[0] or 0) > top:
            raise self._damaged()
        self._conn.executemany(layout.INSERT_STREAM, [(i,) for i in ids])

    def _damaged(self) -> StoreError:
        """The error of an append that met stream rows deleted around idstitch."""
        return StoreError(f"the log is damaged ({self._file}): events are stored under streams "
                          "that idstitch_streams no longer holds; `idstitch verify` names where "
                          "the log was changed")

    def _ended(self, committed: bool) -> None:
        """End an append. One that did not commit is rolled back (whatever failed, a conflict
        or an interrupt, got here mid-transaction: else the connection keeps the write lock
        and refuses the PRAGMA), and the topic codes read in it are forgotten: a code it gave a
        new topic is undone with it and may go to another topic later, also when SQLite rolled
        the transaction back by itself (a full disk, an I/O error)."""
        if not committed:
            self._topic_codes = {}
            if self._conn.in_transaction:
                self._conn.rollback()
        self._conn.execute("PRAGMA synchronous=NORMAL")

    def _read_codes(self) -> dict[str, int]:
        """Every topic's code, read again (a handful of rows)."""
        self._topic_codes = dict(self._conn.execute(layout.CODES).fetchall())
        return self._topic_codes

    def _codes_of(self, topics: list[str]) -> list[int]:
        """The codes of these topics; a topic no event has is left out."""
        codes = self._topic_codes
        if not codes.keys() >= set(topics):
            codes = self._read_codes()
        return [codes[t] for t in topics if t in codes]

    def _numbers(self, ids: list[str]) -> dict[str, int]:
        """The stream numbers of these ids: one read a chunk of ids, not a lookup an event
        (a subquery an event cost a 20,000-message batch ~6% more)."""
        return dict(self._in_chunks(layout.NUMBERS, ids))

    def append_events(self, rows: list[tuple[str, int, str, bytes]],
                      check: AppendCheck | None = None,
                      events: Sequence[DeviceEvent] | None = None) -> list[int]:
        """Insert events in one transaction; their positions (rowids). ``check`` is given
        the tracking rows first, read in the append's transaction under the write lock;
        given the ``events`` of ``rows``, the check may then write the projections' rows for
        them in the same transaction (:meth:`AppendCheck.landed`): one durable commit for a
        command's events and its rows instead of two commits."""
        landing = committed = False
        with self._lock:
            try:
                with self._translated("cannot append events"):
                    # The log is the source of truth: an append that returned survives a power
                    # cut (the WAL is synced at this commit, as eventsourcing's recorder does).
                    self._conn.execute("PRAGMA synchronous=FULL")
                    self._conn.execute("BEGIN IMMEDIATE")
                    if check is not None:
                        self._landing_tracked = self._checked(check)
                    positions = self._insert(rows)
                    if check is not None and events is not None:
                        # Set before the rows land, not after: an interrupt between their fold
                        # and this frame learning of it must still forget what was folded.
                        landing = True
                        self._land(check, positions, events)
                    self._conn.commit()
                    committed = True
            except BaseException:
                if landing:
                    assert check is not None
                    check.abandoned()
                raise
            finally:
                self._landing_tracked = {}
                self._ended(committed)
        return positions

    def _checked(self, check: AppendCheck) -> dict[str, tuple[int, str | None]]:
        """The tracking rows ``check`` names, read under the write lock in the open append
        transaction (a read transaction of its own before it cost a command ~7 us more), and
        handed to it: a refusal raises, and nothing is appended."""
        names = check.names
        found = self._conn.execute(*self.tracking_query(names)).fetchall() if names else []
        tracked = tracked_rows(names, found)
        check.found(tracked)
        return tracked

    def _land(self, check: AppendCheck, positions: list[int],
              events: Sequence[DeviceEvent]) -> None:
        """``check.landed`` inside the open append, behind a savepoint: whatever it wrote
        before it raised is undone, and the events commit all the same (a projection's
        failure never stops a write; the catch-up after the append meets it again). Whether
        the rows landed is the check's to keep (it says so to its command)."""
        self._conn.execute("SAVEPOINT idstitch_landed")
        self._landing = True  # the store's write cursors join this transaction meanwhile
        try:
            check.landed(list(map(LoggedEvent, positions, events)))
        except Exception:
            self._conn.execute("ROLLBACK TO idstitch_landed")
        finally:
            self._landing = False
        self._conn.execute("RELEASE idstitch_landed")

    def read_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(position, state) after a position."""
        with self._lock, self._translated("cannot read the log"):
            rows: list[tuple[int, bytes]] = self._conn.execute(
                f"SELECT position, state FROM {layout.EVENTS} WHERE position > ? "
                "ORDER BY position LIMIT ?",
                (after, limit)).fetchall()
        return rows

    def read_selected(
        self, after: int, until: int, limit: int, topics: list[str], first: bool
    ) -> list[tuple[int, bytes]]:
        """(position, state) of the events with these topics (and, with ``first``, every
        device's first event) in ``after < position <= until``."""
        also = " OR originator_version = 1" if first else ""
        with self._lock, self._translated("cannot read the log"):
            codes = self._codes_of(topics)
            marks = ", ".join("?" * len(codes))
            # The table is scanned in rowid order and the other events skipped in C: a
            # replay then decodes only the events it folds.
            rows: list[tuple[int, bytes]] = self._conn.execute(
                f"SELECT position, state FROM {layout.EVENTS} WHERE position > ? AND "
                f"position <= ? AND (topic_code IN ({marks}){also}) ORDER BY position "
                "LIMIT ?", (after, until, *codes, limit)).fetchall()
        return rows

    def head(self) -> int:
        """The last position (0 when empty)."""
        with self._lock, self._translated("cannot read the log"):
            row = self._conn.execute(layout.HEAD).fetchone()
        return int(row[0] or 0)

    def device_events(self, aggregate_ids: list[UUID]) -> list[tuple[int, bytes]]:
        """(version, state) of these aggregates' events, by aggregate then version."""
        return self._by_aggregates(
            "cannot load devices", aggregate_ids,
            "SELECT e.originator_version, e.state FROM " + layout.JOINED + " WHERE s.id IN "
            "({}) ORDER BY s.id, e.originator_version")

    def device_versions(self, aggregate_ids: list[UUID]) -> dict[str, int]:
        """The last version of each of these aggregates that has events, by UUID hex."""
        return dict(self._by_aggregates(
            "cannot read the log", aggregate_ids,
            "SELECT s.id, max(e.originator_version) FROM " + layout.JOINED + " WHERE s.id "
            "IN ({}) GROUP BY s.id"))

    def _by_aggregates(self, what: str, aggregate_ids: list[UUID], sql: str) -> list[Any]:
        """The rows of ``sql`` (its ``{}`` the aggregate ids' placeholders) for these
        aggregates."""
        with self._lock, translated(what):
            return self._in_chunks(sql, [a.hex for a in aggregate_ids])

    def _in_chunks(self, sql: str, ids: list[str]) -> list[Any]:
        """The rows of ``sql`` (its ``{}`` the ids' placeholders), a chunk of ids at a time
        (SQLite caps a statement's parameters)."""
        out: list[Any] = []
        for i in range(0, len(ids), self.chunk):
            part = ids[i : i + self.chunk]
            out.extend(self._conn.execute(sql.format(", ".join("?" * len(part))), part)
                       .fetchall())
        return out

    def read_spans(
        self, spans: list[tuple[str, int, int]], topics: list[str] | None
    ) -> list[tuple[int, bytes]]:
        """(position, state) of each (aggregate hex, start, end) span's events (of these
        topics, or all): one indexed range per span (the primary key leads with the id)."""
        out: list[tuple[int, bytes]] = []
        with self._lock, self._translated("cannot read the log"):
            codes = None if topics is None else self._codes_of(topics)
            also = ("" if codes is None
                    else f" AND topic_code IN ({', '.join('?' * len(codes))})")
            sql = (f"SELECT position, state FROM {layout.EVENTS} WHERE stream = "
                   f"{layout.NUMBER} AND position >= ? AND position < ?{also}")
            for aggregate, start, end in spans:
                out.extend(self._conn.execute(sql, (aggregate, start, end, *(codes or ())))
                           .fetchall())
        return out

    def events_after(self, since: list[tuple[UUID, int]]) -> list[tuple[int, bytes]]:
        """(version, state) of each aggregate's events after the version given with it."""
        out: list[tuple[int, bytes]] = []
        with self._lock, self._translated("cannot load devices"):
            step = self.chunk // 2  # two parameters a device
            for i in range(0, len(since), step):
                part = since[i : i + step]
                values = ", ".join(["(?, ?)"] * len(part))
                out.extend(self._conn.execute(
                    f"WITH c(id, v) AS (VALUES {values}) SELECT e.originator_version, e.state "
                    f"FROM c JOIN {layout.STREAMS} AS s ON s.id = c.id JOIN {layout.EVENTS} "
                    "AS e ON e.stream = s.number AND e.originator_version > c.v "
                    "ORDER BY e.stream, e.originator_version",
                    [x for a, v in part for x in (a.hex, v)]).fetchall())
        return out
