"""A slow custom handler on SQLite, where a fold's transaction holds the file's write lock: it
ends its transaction early (``SqliteTables.write_budget``), so a writer gets the file between
two of its batches. Before, one transaction took up to 5,000 Changes: at 8 ms a Change, a
writer of another process waited past its 30 s limit and failed (an outside probe)."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import idstitch

DELAY = 0.03
CHANGES = 40


class Slow(idstitch.Projection):
    """Sleeps at every Change, then records it."""

    name = "slow"
    events = frozenset({"Identified"})

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE seen (position BIGINT PRIMARY KEY)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        time.sleep(DELAY)
        db.execute("INSERT INTO seen (position) VALUES (?)", (change.position,))


def test_a_writer_gets_the_file_while_a_slow_projection_catches_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/identity.db"
    with idstitch.open(url, projections="external") as writer:
        for i in range(CHANGES):
            writer.identify(f"d{i}", f"u{i}")
        keeper = idstitch.open(url)
        folding = threading.Thread(target=keeper.run_projection, args=(Slow,))
        folding.start()
        try:
            time.sleep(0.5)  # well into the catch-up (CHANGES * DELAY = 1.2 s of handlers)
            assert folding.is_alive()
            writer.identify("late", "u-late")  # waits for one batch at most, not all of it
            wrote_during = folding.is_alive()
            with closing(sqlite3.connect(f"{tmp_path}/identity.db")) as reader:
                seen = reader.execute("SELECT count(*) FROM p_slow_v1_seen").fetchone()[0]
        finally:
            folding.join(30)
        assert wrote_during, "the write waited for the whole catch-up"
        assert 0 < seen < CHANGES  # committed in several transactions
        assert keeper.projection_db("slow").query("SELECT count(*) FROM seen") == [(CHANGES + 1,)]
        keeper.close()
