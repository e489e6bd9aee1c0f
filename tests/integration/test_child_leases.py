"""A projecting child whose leases another process holds (two writers' ingests, the second
child): it folds nothing, so it never tells its parent to commit early, and while its parent
waits for a position it looks at the log now and then, without keeping a core busy; it takes
over once the leases are free.

On real SQLite files, with the real child process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from idstitch.projections.runner import Leases, leases_of

import idstitch
from idstitch.service import background
from idstitch.workspace import Workspace

from .test_frozen_child import answer, traffic


@contextmanager
def child_without_leases(tmp_path: Path) -> Iterator[
        tuple[Workspace, Leases, list[str], background.BackgroundProjector]]:
    """A workspace with 300 messages appended and not folded, another process holding every
    projection's lease, and the workspace's projecting child started: (the workspace, the
    other's leases, the projections' names, the child)."""
    url = f"sqlite:///{tmp_path / 'identity.db'}"
    ws = idstitch.open(url, auto_catch_up=False)
    holder = idstitch.open(url, auto_catch_up=False)
    try:
        ws.ingest(traffic(300, 0), parallel=False)
        leases = leases_of(holder.rows)
        assert leases is not None
        names = list(holder._services.projector.registry.names)
        assert all(leases.try_lease(name) for name in names)
        helper = ws._services.projector.helper()
        try:
            yield ws, leases, names, helper
        finally:
            helper.close()
    finally:
        holder.close()
        ws.close()


def test_a_child_that_folds_nothing_never_says_it_is_idle(tmp_path: Path) -> None:
    """Another process holds every lease: this child folds nothing, so its parent is never
    told to commit early (smaller batches would only cost it commits); it says so once it
    holds a lease and has folded."""
    with child_without_leases(tmp_path) as (ws, leases, names, helper):
        assert helper.idle() is None
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert helper.ready() or helper.failed is None
            if helper.ready():
                assert helper.idle() is None  # asked, and never answered
            time.sleep(0.05)
        for name in names:
            leases.release_lease(name)
        assert answer(helper) == ws.log.head()


def _cpu_seconds(pid: int) -> float:
    """The CPU time a process has used so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_child_waiting_for_another_process_to_fold_sleeps_between_looks(
    tmp_path: Path
) -> None:
    """Another process holds every lease while the parent waits for a position: the child
    looks at the log now and then, not in a loop that keeps a core busy (two writers' ingests
    end that way, and the spinning child took the CPU the folding one needed); it answers once
    it may fold."""
    with child_without_leases(tmp_path) as (ws, leases, names, helper):
        head = ws.log.head()
        assert helper._started()  # waits for it to open the store
        answered: list[bool] = []
        waiting = threading.Thread(target=lambda: answered.append(helper.wait_for(head)))
        waiting.start()
        time.sleep(0.3)  # the request is read; from now on the child only waits
        pid = helper._proc.pid  # type: ignore[union-attr]
        used = _cpu_seconds(pid)
        time.sleep(2.0)
        used = _cpu_seconds(pid) - used
        assert not answered  # it cannot fold: it waits
        assert used < 0.5, f"the waiting child used {used:.2f} s of CPU in 2 s"
        for name in names:
            leases.release_lease(name)
        waiting.join(30)
        assert answered == [True]
