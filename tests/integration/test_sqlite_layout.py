"""The SQLite file's layout (issue 17: bytes per event): the key store's tables keep their rows
in their primary key's B-tree (``WITHOUT ROWID``), and a file made with the former layout (a
rowid table beside the key's index) is used as it is. Real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import idstitch

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
