"""SQLite's half of the device log (the FastLog port of :mod:`idstitch.adapters.eventlog`):
appends on the log's tables (:mod:`idstitch.adapters.sqlite_layout`), with the hash chain
written in the same transaction; its reads are its base
(:mod:`idstitch.adapters.sqlite_reads`). A mixin of
:class:`~idstitch.adapters.sqlite.SqliteProjectionStore`, which owns the connection, its lock
and the file's write lock (as PostgreSQL's half lives in :mod:`idstitch.adapters.postgres_log`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from idstitch.adapters import sqlite_layout as layout
from idstitch.adapters.sqlchain import ChainSql, chain_ddl
from idstitch.adapters.sqlchain import append as chain_append
from idstitch.adapters.sqlite_reads import SqliteReads
from idstitch.adapters.sqlite_scrub import WalScrub
from idstitch.adapters.tracking_rows import tracked_rows
from idstitch.domain.errors import StoreError
from idstitch.domain.events import DeviceEvent
from idstitch.domain.ports import AppendCheck
from idstitch.projections.store import LoggedEvent

CHAIN = ChainSql.of(
    events=layout.CHAINED, position="e.position", originator="s.id", param="?",
    # As bytes: a value someone stored as TEXT reads as its bytes (a changed event), not as
    # a UTF-8 error that stops the verification.
    state="CAST(e.state AS BLOB)",
    last="substr(hashes, -32)",
    # OR REPLACE: if someone deleted the last events, SQLite hands their rowids out again; an
    # append's run then replaces the orphaned one that starts there (verify reports the break,
    # instead of every later append failing).
    insert="INSERT OR REPLACE INTO idstitch_chain (position, hashes) VALUES (?, ?)",
    exists="SELECT count(*) FROM sqlite_master WHERE name = 'idstitch_chain'",
    ddl=chain_ddl("INTEGER", "BLOB"))
"""The hash chain's statements (see idstitch.adapters.sqlchain): the chain hashes each event
with its stream's id (32 hex digits) and its topic's name, as the log stored them before they
were numbered, so an upgraded store's chain holds (see idstitch.adapters.sqlite_layout)."""

FEW = 16
"""Up to this many events an append (a single command's) finds each stream's number inside
its insert, one statement fewer than reading the numbers first."""


class SqliteLog(SqliteReads):
    """The FastLog methods over the store's one connection (see the module)."""

    _scrub: WalScrub
    """The checkpoint a forget owes the file (the store's: retried after each append)."""

    _landing: bool
    _landing_tracked: dict[str, tuple[int, str | None]]
    tracking_query: Callable[[Sequence[str]], tuple[str, tuple[str, ...]]]
    """The statement reading tracking rows (SqlProjectionStore's, which the store also is)."""

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
        if committed:
            self._scrub.retry(self._conn)

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
        # Queued for the file's write lock in the kernel, as every idstitch write transaction
        # is (a custom fold's too): SQLite's own wait polls with sleeps of up to 100 ms, and
        # a writer polling missed the moments a busy folder let the lock go.
        with self._lock, self._writing():
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


__all__ = ["CHAIN", "FEW", "SqliteLog"]
