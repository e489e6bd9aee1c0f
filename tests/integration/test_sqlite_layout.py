"""The SQLite file's layout (issue 17: bytes per event, growth): the log keyed by stream numbers
(a file of eventsourcing's table upgraded when opened); the key store's tables keep their rows
in their primary key's B-tree (``WITHOUT ROWID``), and a file made with the former layout (a
rowid table beside the key's index) is used as it is. Real SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from idstitch.adapters.chain import verify

import idstitch
from idstitch.errors import StoreError

FORMER_KEYS = ("CREATE TABLE idstitch_keys (key_id TEXT PRIMARY KEY, key BLOB)",
               "CREATE TABLE idstitch_suppressed (digest BLOB PRIMARY KEY)")
"""The key store's tables as files made before this layout hold them."""


def btrees(path: Path) -> set[str]:
    """The names of the file's tables and indexes (one B-tree each)."""
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master "
                                               "WHERE type IN ('table', 'index')")}


def raw(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def traffic(ws: idstitch.Workspace) -> None:
    ws.identify("phone", "dana-user-77", {"email": "dana.secret@example.com", "city": "Kyoto"})
    ws.identify("laptop", "sam", {"email": "sam@example.com", "city": "Oslo"})


def test_a_new_file_keeps_the_keys_in_one_btree_per_table(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        traffic(ws)
    names = btrees(path)
    assert {"idstitch_keys", "idstitch_suppressed"} <= names
    # No second B-tree (the primary key's index beside a rowid table) for either.
    assert not {n for n in names if n.startswith(("sqlite_autoindex_idstitch_keys",
                                                  "sqlite_autoindex_idstitch_suppressed"))}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM idstitch_keys WHERE key IS NOT NULL"
                          ).fetchone()[0] >= 2  # a key per data subject


def test_a_file_of_the_former_layout_keeps_it_and_forgets(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    with sqlite3.connect(path) as db:
        for ddl in FORMER_KEYS:
            db.execute(ddl)
    with idstitch.open(f"sqlite:///{path}") as ws:
        traffic(ws)
    with idstitch.open(f"sqlite:///{path}") as ws:
        assert ws.profile("dana-user-77") is not None
        ws.forget("dana-user-77", reason="erasure request")
        assert ws.profile("dana-user-77") is None
        assert ws.profile("sam") is not None
        assert ws.verify().ok
    # The tables were left as they were (rowid tables, each with its key's index) ...
    assert {"sqlite_autoindex_idstitch_keys_1", "sqlite_autoindex_idstitch_suppressed_1"} <= (
        btrees(path))
    # ... and the forget reached their rows: nothing of the person is left in the files.
    data = raw(path)
    assert b"dana-user-77" not in data and b"Kyoto" not in data
    assert b"Oslo" in data


def test_a_new_file_numbers_its_streams_and_topics(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        traffic(ws)
        ws.identify("phone", "dana-user-77", {"city": "Nara"})
        ws.register_device_token("laptop", "tok-1")
    with sqlite3.connect(path) as db:
        # One row a device, numbered in the order of their first events ...
        streams = db.execute("SELECT number, id FROM idstitch_streams ORDER BY number").fetchall()
        assert [n for n, _ in streams] == [1, 2]
        # ... one a topic ...
        assert db.execute("SELECT code, topic FROM idstitch_topics ORDER BY code").fetchall() == [
            (1, "Identified"), (2, "DeviceTokenRegistered")]
        # ... and every event keyed by (number, version), not by the 32-hex id.
        assert db.execute("SELECT stream, originator_version, topic_code FROM idstitch_events "
                          "ORDER BY position").fetchall() == [(1, 1, 1), (2, 1, 1), (1, 2, 1),
                                                              (2, 2, 2)]
        # The view reads the log as eventsourcing's table did.
        assert db.execute("SELECT position, originator_id, topic FROM idstitch_log "
                          "ORDER BY position").fetchall() == [
            (1, streams[0][1], "Identified"), (2, streams[1][1], "Identified"),
            (3, streams[0][1], "Identified"), (4, streams[1][1], "DeviceTokenRegistered")]


def test_a_file_of_the_former_log_is_upgraded_when_opened(
        tmp_path: Path, former_log: Callable[[Path], None]) -> None:
    path = tmp_path / "ws.db"
    url = f"sqlite:///{path}"
    with idstitch.open(url) as ws:
        traffic(ws)
        ws.identify("tablet", "sam", {"plan": "pro"})
        ws.set_profile_attributes("phone", {"city": "Nara"})
        before = (ws.profile("sam"), ws.history("dana-user-77"), ws.digest())
        head = ws.log.head()
    former_log(path)
    assert "sqlite_autoindex_stored_events_1" in btrees(path)

    with idstitch.open(url) as ws:
        assert (ws.profile("sam"), ws.history("dana-user-77"), ws.digest()) == before
        assert ws.verify().ok and ws.verify().checked == head
        # Appends go on after the upgraded events: the next position, a device's next version.
        assert ws.identify("phone", "dana-user-77", {"city": "Osaka"}) == head + 1
        assert ws.identify("watch", "kim") == head + 2
        ws.rebuild()
        profile = ws.profile("dana-user-77")
        assert profile is not None and profile.attributes["city"] == "Osaka"
        assert ws.verify().checked == head + 2
    names = btrees(path)
    assert {"idstitch_events", "idstitch_streams", "idstitch_topics"} <= names
    assert "sqlite_autoindex_stored_events_1" not in names  # the former table is gone
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM idstitch_streams").fetchone()[0] == 4


def test_the_former_table_answers_nothing_to_an_older_idstitch(tmp_path: Path) -> None:
    """A copy of an older idstitch (or anything else) that reads or appends to
    eventsourcing's table fails there, instead of answering from an empty log or appending
    events that no reader of the file would see; eventsourcing's own ``CREATE TABLE IF NOT
    EXISTS`` leaves it as it is."""
    path = tmp_path / "ws.db"
    url = f"sqlite:///{path}"
    with idstitch.open(url) as ws:
        traffic(ws)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS stored_events (originator_id TEXT, "
                   "originator_version INTEGER, topic TEXT, state BLOB, "
                   "PRIMARY KEY (originator_id, originator_version))")
        with pytest.raises(sqlite3.OperationalError, match="no column named originator_id"):
            db.execute("INSERT INTO stored_events (originator_id, originator_version, topic, "
                       "state) VALUES ('00', 1, 'Identified', x'00')")
        for read in ("SELECT rowid, state FROM stored_events WHERE rowid > 0",
                     "SELECT max(rowid) FROM stored_events"):  # its events, and its head
            with pytest.raises(sqlite3.OperationalError, match="no such column"):
                db.execute(read)
        assert db.execute("SELECT count(*) FROM idstitch_events").fetchone()[0] == 2
    with idstitch.open(url) as ws:  # and this version opens it as it was
        assert ws.verify().checked == 2


def test_damaged_events_of_the_former_table_are_carried_over(
        tmp_path: Path, former_log: Callable[[Path], None]) -> None:
    """An event without an id or a topic (written around idstitch) moves with the rest: the
    upgraded store opens, and verify names the damaged event as the former store did."""
    path = tmp_path / "ws.db"
    url = f"sqlite:///{path}"
    with idstitch.open(url) as ws:
        traffic(ws)
        ws.identify("phone", "dana-user-77", {"city": "Nara"})
    former_log(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE stored_events SET originator_id = NULL WHERE rowid = 2")
        db.execute("UPDATE stored_events SET topic = NULL WHERE rowid = 3")
    with idstitch.open(url) as ws:
        result = ws.verify()
        assert (result.ok, result.first_break) == (False, 2)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT position, originator_id, topic FROM idstitch_log "
                          "ORDER BY position").fetchall()[1:] == [(2, None, "Identified"),
                                                                  (3, db.execute(
            "SELECT id FROM idstitch_streams WHERE number = 1").fetchone()[0], None)]


def test_a_topic_numbered_in_an_append_that_failed_is_numbered_again(tmp_path: Path) -> None:
    """The code a rolled back append gave a new topic is undone with it: the store must not
    keep using it (a later topic would take the code, and read the first one's events as its
    own)."""
    from idstitch.adapters.sqlite import SqliteProjectionStore
    from idstitch.domain.ports import WriteConflict

    store = SqliteProjectionStore(str(tmp_path / "log.db"))
    store.upgrade_chain()  # as opening a workspace does: the chain's tables
    try:
        store.append_events([("a" * 32, 1, "First", b"\x01")])
        with pytest.raises(WriteConflict):  # version 1 of "a..." is taken: nothing commits
            store.append_events([("b" * 32, 1, "Second", b"\x02"), ("a" * 32, 1, "First", b"\x03")])
        store.append_events([("b" * 32, 1, "Second", b"\x05")])
        store.append_events([("c" * 32, 1, "Third", b"\x04")])
        with sqlite3.connect(tmp_path / "log.db") as db:
            assert db.execute("SELECT originator_id, topic FROM idstitch_log ORDER BY position"
                              ).fetchall() == [("a" * 32, "First"), ("b" * 32, "Second"),
                                               ("c" * 32, "Third")]
        with store.chain_view() as view:
            assert verify(view).ok
    finally:
        store.close()


def test_streams_swapped_around_idstitch_are_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    url = f"sqlite:///{path}"
    with idstitch.open(url) as ws:
        traffic(ws)
    with sqlite3.connect(path) as db:  # each device's number now names the other's events
        (a,), (b,) = db.execute("SELECT id FROM idstitch_streams ORDER BY number").fetchall()
        db.execute("UPDATE idstitch_streams SET id = 'swapping' WHERE number = 1")
        db.execute("UPDATE idstitch_streams SET id = ? WHERE number = 2", (a,))
        db.execute("UPDATE idstitch_streams SET id = ? WHERE number = 1", (b,))
    with idstitch.open(url) as ws:
        with pytest.raises(StoreError, match="damaged"):
            ws.identify("phone", "dana-user-77", {"city": "Nara"})
        assert ws.verify().first_break == 1


def test_stream_rows_deleted_around_idstitch_are_a_store_error(tmp_path: Path) -> None:
    """A new device would take the number of a deleted stream row and conflict with its events
    at every retry: the append says the log is damaged instead (verify says where)."""
    path = tmp_path / "ws.db"
    url = f"sqlite:///{path}"
    with idstitch.open(url) as ws:
        traffic(ws)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM idstitch_streams WHERE number = 2")
    with idstitch.open(url) as ws:
        with pytest.raises(StoreError, match="damaged"):
            ws.identify("tablet", "kim")
        with pytest.raises(StoreError, match="damaged"):
            ws.identify("laptop", "sam", {"city": "Bergen"})
        assert ws.verify().first_break == 2
        assert ws.log.head() == 2  # nothing appended


def test_a_topic_numbered_in_an_append_sqlite_rolled_back_is_numbered_again(
        tmp_path: Path) -> None:
    """A full disk makes SQLite roll the whole transaction back by itself (no transaction is
    left to roll back): the code the append read for its new topic is forgotten all the same."""
    from idstitch.adapters.sqlite import SqliteProjectionStore

    store = SqliteProjectionStore(str(tmp_path / "log.db"))
    store.upgrade_chain()  # as opening a workspace does: the chain's tables
    try:
        store.append_events([("a" * 32, 1, "First", b"\x01")])
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count={pages}")  # the file cannot grow
        with pytest.raises(StoreError, match="full"):
            store.append_events([("b" * 32, 1, "Second", bytes(400_000))])
        store._conn.execute("PRAGMA max_page_count=1073741823")
        store.append_events([("b" * 32, 1, "Second", b"\x02")])
        store.append_events([("c" * 32, 1, "Third", b"\x03")])
        with sqlite3.connect(tmp_path / "log.db") as db:
            assert db.execute("SELECT topic FROM idstitch_log ORDER BY position").fetchall() == [
                ("First",), ("Second",), ("Third",)]
        with store.chain_view() as view:
            assert verify(view).ok
    finally:
        store.close()


def test_an_append_to_a_stream_whose_row_was_deleted_is_a_store_error(tmp_path: Path) -> None:
    """Events past a device's first whose stream has no number: not a conflict to retry,
    the log is damaged (on a single command's path and on a batch's). (Through a workspace,
    such a device loads as new and starts again under a new number; verify names the break.)"""
    from idstitch.adapters.sqlite import SqliteProjectionStore

    path = tmp_path / "ws.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        traffic(ws)
        ws.identify("tablet", "kim")  # three streams: the phone's is not the greatest
    with sqlite3.connect(path) as db:
        (phone,) = db.execute("SELECT id FROM idstitch_streams WHERE number = 1").fetchone()
        db.execute("DELETE FROM idstitch_streams WHERE number = 1")
    store = SqliteProjectionStore(str(path))
    try:
        for versions in (range(2, 4), range(2, 40)):
            with pytest.raises(StoreError, match="damaged"):
                store.append_events([(phone, v, "Identified", b"\x00") for v in versions])
        assert store.head() == 3
    finally:
        store.close()


def test_a_former_table_its_key_cannot_carry_is_a_store_error(
        tmp_path: Path, former_log: Callable[[Path], None]) -> None:
    """Two damaged rows the former key held apart (no id, the same version) become one stream:
    the upgrade refuses, with a typed error, and leaves the file as it was."""
    path = tmp_path / "ws.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        traffic(ws)
    former_log(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE stored_events SET originator_id = NULL")
    with pytest.raises(StoreError, match="cannot upgrade"):
        idstitch.open(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM stored_events").fetchone()[0] == 2
