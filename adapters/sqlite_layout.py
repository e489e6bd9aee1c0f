"""The event log's tables in a SQLite store, and the upgrade of a store made before them.

Every device (and the decisions stream) gets a number the first time it records an event, and
every event type a code the first time one is recorded::

    idstitch_streams (number INTEGER PRIMARY KEY, id TEXT UNIQUE)      -- 32 hex digits -> number
    idstitch_topics  (code INTEGER PRIMARY KEY, topic TEXT UNIQUE)     -- "Identified" -> code
    idstitch_events  (position INTEGER PRIMARY KEY, stream, originator_version, topic_code, state)
    UNIQUE INDEX idstitch_events_stream ON idstitch_events (stream, originator_version)

and the events are keyed by (stream number, version). eventsourcing's own table kept the 32-hex
id in every event and in its primary key, a B-tree with a random key: once it outgrew what
one commit touches, every event cost a 4 KiB page in the WAL and again in the checkpoint, so an
ingest slowed as its log grew. Keyed by an integer the index is a fifth of the bytes and the id
is stored once a device (``benchmarks/bench_log_layout.py``: 2.6 -> 4.2 KiB written an event
from the first half of a 1M-event identity log to the second under the old key, 1.4 -> 2.1
under the number; see docs/performance.md). The topic's name (16-25 characters) is stored once
a type too.

``idstitch_log`` is a view with eventsourcing's columns (and the position) for ad-hoc SQL.
``stored_events`` is a tombstone (:data:`TOMBSTONE`). A store made before this layout is
upgraded when it is opened (:func:`upgrade`): its events are copied, positions kept, and its
old table dropped (with ``secure_delete``, its pages zeroed).
"""

from __future__ import annotations

import sqlite3

from idstitch.domain.errors import StoreError

EVENTS = "idstitch_events"
STREAMS = "idstitch_streams"
TOPICS = "idstitch_topics"

DDL = (
    # No NOT NULL on the names: a damaged event of a store upgraded from the former table
    # (no id, no topic) is carried over as it was, for verify to name, not refused at open.
    f"CREATE TABLE IF NOT EXISTS {STREAMS} (number INTEGER PRIMARY KEY, id TEXT UNIQUE)",
    f"CREATE TABLE IF NOT EXISTS {TOPICS} (code INTEGER PRIMARY KEY, topic TEXT UNIQUE)",
    f"CREATE TABLE IF NOT EXISTS {EVENTS} (position INTEGER PRIMARY KEY, "
    "stream INTEGER NOT NULL, originator_version INTEGER, topic_code INTEGER NOT NULL, "
    "state BLOB)",
    f"CREATE UNIQUE INDEX IF NOT EXISTS idstitch_events_stream ON {EVENTS} "
    "(stream, originator_version)",
)
"""The log's tables. No AUTOINCREMENT: positions are the rowids SQLite hands out, max + 1."""

CHAINED = (f"{EVENTS} AS e LEFT JOIN {STREAMS} AS s ON s.number = e.stream "
           f"LEFT JOIN {TOPICS} AS t ON t.code = e.topic_code")
"""Every event with its stream's id and its topic's name: what the hash chain reads (it
hashes both). Outer joins: an event whose number names nothing is read (with no id or
topic), so a verification names its position as changed instead of skipping it."""

VIEW = (f"CREATE VIEW IF NOT EXISTS idstitch_log AS SELECT e.position AS position, "
        "s.id AS originator_id, e.originator_version AS originator_version, t.topic AS topic, "
        f"e.state AS state FROM {CHAINED}")
"""The log with eventsourcing's columns (and the position), for SQL written against its
table: read-only."""

FORMER = "stored_events"
"""eventsourcing's table, where stores made before this layout keep their events."""

TOMBSTONE = (f"CREATE TABLE IF NOT EXISTS {FORMER} "
             "(moved_to_idstitch_events_by_a_later_idstitch INTEGER PRIMARY KEY) WITHOUT ROWID")
"""What stands where the former table was: a table with none of its columns and no rowid, so
that a copy of an older idstitch that opens the file fails at its first read or write of the
log, its head included (no such column) instead of answering from, or appending to, an empty
log; and eventsourcing's ``CREATE TABLE IF NOT EXISTS`` makes nothing."""

JOINED = f"{EVENTS} AS e JOIN {STREAMS} AS s ON s.number = e.stream"
"""The events with their streams' ids (for reads by device id)."""

NUMBER = f"(SELECT number FROM {STREAMS} WHERE id = ?)"
"""A stream's number by its id, as a value in a statement."""

NUMBERS = f"SELECT id, number FROM {STREAMS} WHERE id IN ({{}})"
"""The numbers of streams by id (``{}``: the ids' placeholders)."""

INSERT_STREAM = f"INSERT OR IGNORE INTO {STREAMS} (id) VALUES (?)"
INSERT_TOPIC = f"INSERT OR IGNORE INTO {TOPICS} (topic) VALUES (?)"
CODES = f"SELECT topic, code FROM {TOPICS}"
INSERT_EVENT = (f"INSERT INTO {EVENTS} (stream, originator_version, topic_code, state) "
                "VALUES (?, ?, ?, ?)")
INSERT_EVENT_BY_ID = (f"INSERT INTO {EVENTS} (stream, originator_version, topic_code, state) "
                      f"VALUES ({NUMBER}, ?, ?, ?)")

HEAD = f"SELECT max(position) FROM {EVENTS}"
TOP_NUMBER = f"SELECT max(number) FROM {STREAMS}"
TOP_STREAM = f"SELECT max(stream) FROM {EVENTS}"


def old_layout(conn: sqlite3.Connection) -> bool:
    """Whether the file still holds its events in eventsourcing's own table."""
    return former_sql(conn.execute(FORMER_SQL).fetchone())


FORMER_SQL = f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{FORMER}'"
"""The statement that made the former table, if the file has one."""


def former_sql(row: tuple[str] | None) -> bool:
    """Whether a row of :data:`FORMER_SQL` is eventsourcing's table (not the tombstone)."""
    return row is not None and "originator_version" in str(row[0])


def upgrade(conn: sqlite3.Connection) -> int | None:
    """Move the events of eventsourcing's table into the log's tables, positions kept, and
    put the tombstone in its place; the events moved, None when there was nothing to move
    (another process did it first). Run in a write transaction (the file's write lock held),
    after :data:`DDL`. Streams and topics are numbered in the order of their first event, as
    appends number them."""
    if not old_layout(conn):
        return None
    # IS, not =: a damaged row without an id or a topic is carried over too (one stream, one
    # topic, named NULL), so the view reads it as the former table did.
    conn.execute(f"INSERT INTO {STREAMS} (id) SELECT originator_id FROM {FORMER} "
                 "GROUP BY originator_id ORDER BY min(rowid)")
    conn.execute(f"INSERT INTO {TOPICS} (topic) SELECT topic FROM {FORMER} "
                 "GROUP BY topic ORDER BY min(rowid)")
    moved = conn.execute(
        f"INSERT INTO {EVENTS} (position, stream, originator_version, topic_code, state) "
        f"SELECT e.rowid, s.number, e.originator_version, t.code, e.state FROM {FORMER} "
        f"AS e JOIN {STREAMS} AS s ON s.id IS e.originator_id JOIN {TOPICS} AS t "
        "ON t.topic IS e.topic ORDER BY e.rowid").rowcount
    held = conn.execute(f"SELECT count(*) FROM {FORMER}").fetchone()[0]
    if moved != held:  # cannot happen with the joins above; never drop what was not moved
        raise StoreError(f"cannot upgrade the log: {held} events, {moved} moved")
    conn.execute(f"DROP TABLE {FORMER}")
    conn.execute(TOMBSTONE)
    return int(moved)


__all__ = ["CHAINED", "CODES", "DDL", "EVENTS", "FORMER", "FORMER_SQL", "HEAD", "INSERT_EVENT",
           "INSERT_EVENT_BY_ID", "INSERT_STREAM", "INSERT_TOPIC", "JOINED", "NUMBER", "NUMBERS",
           "STREAMS", "TOMBSTONE", "TOPICS", "TOP_NUMBER", "TOP_STREAM", "VIEW", "former_sql",
           "old_layout", "upgrade"]
