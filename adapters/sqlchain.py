"""The hash chain on the SQL stores: its tables, its reads, and the upgrade of a store that
holds events from before the chain.

Each position's hash lives in ``idstitch_chain (position, hash)``, beside the events table and
written in the same transaction as the events it covers (the append paths of
:mod:`idstitch.adapters.sqlite` and :mod:`idstitch.adapters.postgres_log` call
:func:`idstitch.adapters.chain.link` under the store's append lock). ``idstitch_chain_start``
holds one row: the first position chained as it was written; the rows before it were chained
when the store was upgraded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from idstitch.adapters.chain import GENESIS, PAGE, Entry, StoredRow, link
from idstitch.adapters.sqlstore import Cursor


class Executes(Protocol):
    """A DB-API cursor, or a sqlite3 connection: ``execute`` returns a cursor to fetch from."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any:
        """Run one statement."""
        ...


@dataclass(frozen=True)
class ChainSql:
    """One store's statements for the chain (its events table, its placeholders)."""

    rows: str
    """(position, originator id as 32 hex digits, version, topic, state) after a position."""
    entries: str
    after: str
    tail: str
    start: str
    set_start: str

    @classmethod
    def of(cls, *, events: str, position: str, originator: str, param: str) -> ChainSql:
        """The statements for an events table whose position column is ``position`` and
        whose originator id reads as 32 lower-case hex digits through ``originator``."""
        p = param
        return cls(
            rows=(f"SELECT {position}, {originator}, originator_version, topic, state "
                  f"FROM {events} WHERE {position} > {p} ORDER BY {position} LIMIT {p}"),
            entries=(f"SELECT position, hash FROM idstitch_chain WHERE position > {p} "
                     f"AND position <= {p} ORDER BY position"),
            after=f"SELECT min(position) FROM idstitch_chain WHERE position > {p}",
            tail="SELECT position, hash FROM idstitch_chain ORDER BY position DESC LIMIT 1",
            start="SELECT position FROM idstitch_chain_start",
            set_start=f"INSERT INTO idstitch_chain_start (position) VALUES ({p})",
        )


def chain_ddl(position_type: str, blob: str) -> list[str]:
    """The chain's tables (``position_type``: SQLite's INTEGER makes the position the rowid)."""
    return [
        f"CREATE TABLE IF NOT EXISTS idstitch_chain (position {position_type} PRIMARY KEY, "
        f"hash {blob} NOT NULL)",
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

    def chain_entries(self, after: int, until: int) -> list[Entry]:
        """The chain entries with ``after < position <= until``, in position order."""
        self._cur.execute(self._sql.entries, (after, until))
        return self._cur.fetchall()

    def chain_after(self, after: int) -> int | None:
        """The first chain entry's position after a position."""
        self._cur.execute(self._sql.after, (after,))
        row = self._cur.fetchone()
        return None if row is None or row[0] is None else int(row[0])

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


def started(cur: Executes, sql: ChainSql) -> bool:
    """Whether the store was set up for the chain (its start recorded)."""
    return cur.execute(sql.start).fetchone() is not None


def upgrade(cur: Cursor, sql: ChainSql, insert: Callable[[list[Entry]], None]) -> int:
    """Chain every event after the chain's tail and record where write-time chaining starts;
    the number of events chained. Run under the store's append lock, once per store (a store
    whose start is recorded is left as it is): on a store made before the chain, it chains the
    rows already there."""
    if started(cur, sql):
        return 0
    after, prev = tail(cur, sql)
    chained = 0
    view = SqlChainView(cur, sql)
    while rows := view.stored_rows(after, PAGE):
        entries = link(prev, [r[0] for r in rows], [r[1:] for r in rows])
        insert(entries)
        chained += len(entries)
        after, prev = entries[-1]
    cur.execute(sql.set_start, (after + 1,))
    return chained


__all__ = ["ChainSql", "SqlChainView", "chain_ddl", "started", "tail", "upgrade"]
