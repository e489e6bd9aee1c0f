"""Writers of one SQLite file queue for its write lock in the kernel (a blocking flock beside
the database), so the next writer wakes when the lock is released instead of polling with
SQLite's growing sleeps."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

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



def _open_at_once(url: str, name: str, barrier: Any) -> None:
    barrier.wait()  # every process started and imported: open at once
    with idstitch.open(url) as ws:
        ws.identify(f"phone-{name}", f"user-{name}")


def test_processes_opening_a_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    """The first switch of a new file to WAL needs it alone for a moment, and SQLite told some
    of several processes opening it then "database is locked" at once, without waiting."""
    fork = multiprocessing.get_context("fork")
    for trial in range(10):
        url = f"sqlite:///{tmp_path}/new{trial}.db"
        barrier = fork.Barrier(6)
        procs = [fork.Process(target=_open_at_once, args=(url, f"{trial}-{i}", barrier))
                 for i in range(6)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert [proc.exitcode for proc in procs] == [0] * 6
        with idstitch.open(url) as ws:
            assert ws.log.head() == 6 and ws.verify().ok
