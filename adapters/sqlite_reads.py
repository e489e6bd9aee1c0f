"""SQLite's reads of the device log (the FastLog port of :mod:`idstitch.adapters.eventlog`) on
the log's tables (:mod:`idstitch.adapters.sqlite_layout`), and the one place where sqlite3's
errors become idstitch's. The base of :class:`~idstitch.adapters.sqlite_log.SqliteLog`, whose
appends use them too."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from uuid import UUID

from idstitch.adapters import sqlite_layout as layout
from idstitch.domain.errors import StoreError
from idstitch.domain.ports import WriteConflict


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


class SqliteReads:
    """The log's reads over the store's one connection (see the module)."""

    _conn: sqlite3.Connection
    _lock: threading.RLock
    _file: str
    _topic_codes: dict[str, int]
    """Each topic's code, as far as this store has read them (a code never changes)."""
    chunk: int

    def _translated(self, what: str) -> AbstractContextManager[None]:
        """:func:`translated`, the message naming the file (a damaged or foreign file's
        errors then say which one)."""
        return translated(f"{what} ({self._file})")

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


__all__ = ["SqliteReads", "translated"]
