"""Writers of one SQLite file queue for its write lock in the kernel (a blocking flock beside
the database), so the next writer wakes when the lock is released instead of polling with
SQLite's growing sleeps."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import idstitch


def test_a_writer_waits_for_the_one_holding_the_queue_and_goes_on_when_it_lets_go(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/queue.db"
    first, second = idstitch.open(url), idstitch.open(url)
    done = threading.Event()

    def write() -> None:
        second.identify("d", "u")
        done.set()

    queue = first.rows._writing()  # type: ignore[attr-defined]
    queue.__enter__()
    writer = threading.Thread(target=write)
    writer.start()
    try:
        # Only the queue is held (no SQLite transaction): the other writer waits for it.
        assert not done.wait(0.5)
        assert (tmp_path / "queue.db-write.lock").exists()
    finally:
        started = time.monotonic()
        queue.__exit__(None, None, None)
    assert done.wait(5)
    assert time.monotonic() - started < 1.0
    writer.join()
    assert first.profile("u") is not None
    first.close()
    second.close()
