"""One replay of an existing SQLite file, for a profiler: ``ws.rebuild()`` or a custom catch-up.

Copies the file (the original stays as it is), opens the copy, and times one of:

- ``rebuild``: ``ws.rebuild(parallel=False)``, every built-in projection in this process (so
  that one profiled process holds all of it);
- ``custom``: ``ws.run_projection(BatchCounter)`` (:mod:`idstitch.testing_projections`), a
  custom projection's catch-up from position 0 over the whole log.

It prints events/s by wall time and by this process's CPU time (user + system): on a shared
machine the CPU figure moves much less with the other processes' load. Make the file with
``bench_growth.py`` or any ingest, then e.g.::

    py-spy record -r 200 -f flamegraph -o rebuild.svg -- \\
        python benchmarks/profile_replay.py /tmp/id100k.db rebuild
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import time

import idstitch
from idstitch.testing_projections import BatchCounter


def remove_copy(copy: str) -> None:
    """Remove the copy and every file the workspace made beside it: they are all named after
    it (``<copy>-wal`` and ``<copy>-shm`` of SQLite, ``<copy>-write.lock`` that writers queue
    on, a ``<copy>-<projection>.lease`` per projection folded). The copy's name holds this
    process's id, so nothing else is named so."""
    for path in [copy, *glob.glob(glob.escape(copy) + "-*")]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def main(argv: list[str] | None = None) -> None:
    """Copy, open, replay, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", help="an idstitch SQLite file (copied first)")
    parser.add_argument("what", choices=("rebuild", "custom"), nargs="?", default="rebuild")
    args = parser.parse_args(argv)
    copy = f"{args.db}.replay{os.getpid()}.db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(args.db + suffix):
            shutil.copy(args.db + suffix, copy + suffix)
    try:
        with idstitch.open(f"sqlite:///{os.path.abspath(copy)}") as ws:
            head = ws.log.head()
            wall, cpu = time.perf_counter(), time.process_time()
            if args.what == "rebuild":
                ws.rebuild(parallel=False)
            else:
                ws.run_projection(BatchCounter)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        remove_copy(copy)
    print(f"{args.what}: {head:,} events, wall {wall:.2f} s ({head / wall:,.0f} events/s), "
          f"cpu {cpu:.2f} s ({head / cpu:,.0f} events/s)")


if __name__ == "__main__":
    main()
