"""The hash chain on the SQL stores: its tables, its reads, and the upgrade of a store that
holds events from before the chain.

``idstitch_chain (position, hashes)`` sits beside the events table: one row per append, written
in the same transaction as the events it covers (the append paths of
:mod:`idstitch.adapters.sqlite` and :mod:`idstitch.adapters.postgres_log` call
:func:`idstitch.adapters.chain.link` under the store's append lock), holding the hashes of the
append's consecutive positions from ``position`` on, 32 bytes each. A row per append rather than
per event: an ingest batch of thousands of events adds one row and 32 bytes an event, where a
row per event cost a second B-tree insert per event (measured: the chain then took ~16% of
ingest on SQLite, against ~5% now; see docs/performance.md). ``idstitch_chain_start`` holds one
row: the first position chained as it was written; the rows before it were chained when the
store was upgraded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from idstitch.adapters.chain import GENESIS, PAGE, SIZE, Entry, Run, StoredRow, link, runs_of
from idstitch.adapters.sqlstore import Cursor


class Executes(Protocol):
    """A DB-API cursor, or a sqlite3 connection: ``execute`` returns a cursor to fetch from."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any:
        """Run one statement."""
        ...


# The run holding a position p starts at the greatest run start <= p: one index probe.
_FROM = ("position >= coalesce((SELECT max(position) FROM idstitch_chain WHERE position <= {p}),"
         " 0)")


@dataclass(frozen=True)
class ChainSql:
    """One store's statements for the chain (its events table, its placeholders)."""

    rows: str
    """(position, originator id as 32 hex digits, version, topic, state) after a position."""
    runs: str
    after: str
    tail: str
    start: str
    set_start: str
    insert: str
    exists: str
    """One row, one column: true when the store has the chain's tables."""
    ddl: tuple[str, ...]
    """The chain's tables (see :func:`upgrade`)."""

    @classmethod
    def of(cls, *, events: str, position: str, originator: str, param: str, last: str,
           insert: str, exists: str, ddl: list[str], state: str = "state") -> ChainSql:
        """The statements for an events table whose position column is ``position``, whose
        originator id reads as 32 lower-case hex digits through ``originator``; ``last``: the
        last 32 bytes of ``hashes`` in the store's SQL; ``insert``: its statement that writes
        a run (position, hashes), replacing a run that starts at the same position;
        ``exists``: its query of whether the chain's tables are there; ``ddl``: the tables
        (:func:`chain_ddl`); ``state``: the stored event's bytes in the store's SQL, whatever
        type an edit around idstitch left in the column."""
        p = param
        start = _FROM.format(p=p)
        return cls(
            rows=(f"SELECT {position}, {originator}, originator_version, topic, {state} "
                  f"FROM {events} WHERE {position} > {p} ORDER BY {position} LIMIT {p}"),
            runs=(f"SELECT position, hashes FROM idstitch_chain WHERE {start} "
                  f"AND position <= {p} ORDER BY position"),
            after=(f"SELECT position, length(hashes) FROM idstitch_chain WHERE {start} "
                   "ORDER BY position LIMIT 2"),
            tail=(f"SELECT position + length(hashes) / {SIZE} - 1, {last} FROM idstitch_chain "
                  "ORDER BY position DESC LIMIT 1"),
            start="SELECT position FROM idstitch_chain_start",
            set_start=f"INSERT INTO idstitch_chain_start (position) VALUES ({p})",
            insert=insert,
            exists=exists,
            ddl=tuple(ddl),
        )


def chain_ddl(position_type: str, blob: str) -> list[str]:
    """The chain's tables (``position_type``: SQLite's INTEGER makes the position the rowid)."""
    return [
        f"CREATE TABLE IF NOT EXISTS idstitch_chain (position {position_type} PRIMARY KEY, "
        f"hashes {blob} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS idstitch_chain_start (position {position_type} NOT NULL)",
    ]


class SqlChainView:
    """The chain and the events as one read transaction on ``cur`` sees them
    (:class:`idstitch.adapters.chain.ChainedLog`)."""

    def __init__(self, cur: Cursor, sql: ChainSql) -> None:
        self._cur = cur
        self._sql = sql

    def stored_rows(self, after: int, limit: int) -> list[StoredRow]:
        """Up to ``limit`` event rows after a position, in position order."""
        self._cur.execute(self._sql.rows, (after, limit))
        return self._cur.fetchall()

    def chain_runs(self, after: int, until: int) -> list[Run]:
        """The runs holding any position in ``after < position <= until``."""
        self._cur.execute(self._sql.runs, (after + 1, until))
        return [(int(p), bytes(h)) for p, h in self._cur.fetchall()]

    def chain_after(self, after: int) -> int | None:
        """The first position after ``after`` that has a chain entry."""
        self._cur.execute(self._sql.after, (after + 1,))
        for first, size in self._cur.fetchall():
            if int(first) + int(size) // SIZE - 1 > after:
                return max(int(first), after + 1)
        return None

    def chain_tail(self) -> Entry:
        """The last chain entry; (0, GENESIS) when there is none."""
        return tail(self._cur, self._sql)

    def chain_start(self) -> int:
        """The first position chained as it was written (1 when the store never needed an
        upgrade)."""
        self._cur.execute(self._sql.start)
        row = self._cur.fetchone()
        return 1 if row is None else int(row[0])


def tail(cur: Executes, sql: ChainSql) -> Entry:
    """The last chain entry on ``cur`` (a cursor, or a sqlite3 connection: both return a
    cursor from ``execute``); (0, GENESIS) when there is none."""
    row = cur.execute(sql.tail).fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))


def append(cur: Executes, sql: ChainSql, positions: list[int], rows: list[Any]) -> None:
    """Chain an append's rows (at consecutive positions) from the last entry: one run. Call
    it in the append's transaction, under the store's append lock."""
    if positions:
        cur.execute(sql.insert, (positions[0], b"".join(link(tail(cur, sql)[1], positions,
                                                              rows))))


def chained(cur: Executes, sql: ChainSql) -> bool:
    """Whether the store has the chain's tables (made by :func:`upgrade`)."""
    return bool(cur.execute(sql.exists).fetchone()[0])


def upgrade(cur: Cursor, sql: ChainSql) -> int:
    """Make the chain's tables, chain every event already stored and record where
    write-time chaining starts (1 on a new store); the number of events chained. Run in one
    transaction under the store's append lock, by an open that found no chain tables (a new
    store, or one made before the chain): crashed or interrupted, it leaves no tables, and the
    next open does it all again; a second process opening meanwhile waits for the lock, then
    finds it done (0).

    A store whose chain tables are there without their start had them emptied around
    idstitch, and chaining its rows again would vouch for whatever they hold now (a tampered
    event, its chain deleted, would verify). Left as it is, ``verify`` names the first
    position without its entry; a missing start reads as 1, the strictest claim."""
    if chained(cur, sql):
        return 0  # another process made them meanwhile
    for statement in sql.ddl:
        cur.execute(statement)
    after, prev = tail(cur, sql)
    count = 0
    view = SqlChainView(cur, sql)
    while rows := view.stored_rows(after, PAGE):
        positions = [r[0] for r in rows]
        hashes = link(prev, positions, [r[1:] for r in rows])
        cur.executemany(sql.insert, runs_of(positions, hashes))
        count += len(rows)
        after, prev = positions[-1], hashes[-1]
    cur.execute(sql.set_start, (after + 1,))
    return count


__all__ = ["ChainSql", "SqlChainView", "append", "chain_ddl", "chained", "tail", "upgrade"]
