"""Growth with the log: does ingest keep its rate, its memory and its bytes per event as the
log grows?

One ``ws.ingest`` of a long generated workload (``workload.py``, written to a file first so
that generating the messages is not timed) into a fresh SQLite file (or ``--url``), at the
defaults (a large input projects in a second process). The ingest's ``progress`` callback marks
the time at which each tenth of the messages was committed, and the log's head there, so the
run is cut into ten slices of equal messages. Printed:

- messages/s and events/s of each tenth, and the **last tenth's rate over the first's**
  (target, issue 17: >= 0.8, at 1M and 5M events), with this process's CPU seconds in each
  tenth (steadier than wall time on a shared machine; a large ingest's projecting child is
  not counted there);
- the bytes this process, and apart its children (the projecting child: the rows, and the
  checkpoints that fall on its commits), handed to write calls per event in each tenth
  (``/proc/<pid>/io``): once a random-key B-tree outgrows what a commit touches, every row
  costs a page of WAL, and the checkpoint copies it again;
- the resident memory of this process at each tenth (``/proc/self/statm``), its peak
  (``ru_maxrss``) and the projecting child's peak (``RUSAGE_CHILDREN``, once it has exited):
  compare the peaks of a 1M and a 5M run (target: within 20%);
- SQLite only: the database's bytes per event (the file after a WAL checkpoint, every table and
  index: the log, the chain, the projections' rows) against the stored event itself (the mean
  bytes of the event's own fields as eventsourcing's table holds them: position, aggregate id as
  32 hex digits, version, topic name, state; read through the ``idstitch_log`` view whatever
  layout stores them); target <= 1.5x; and each table's and index's share (SQLite's ``dbstat``).

``--batch-size`` sets the messages an ingest commits at a time (``ws.ingest``'s default
otherwise): the bytes written per event fall as a commit covers more of a B-tree's pages.

``--events`` is a target count of events: the messages it takes are estimated from the mix
(about 1.46 events a message for the attribute mix, 1.25 for the identity mix); the counts
recorded are printed.

    python benchmarks/bench_growth.py --events 1000000 --mix identity
    python benchmarks/bench_growth.py --events 5000000                  # ~3 GB of input, long
    python benchmarks/bench_growth.py --events 200000 --json /tmp/growth.json
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import harness
from harness import console

import idstitch

EVENTS_PER_MESSAGE = {"attributes": 1.46, "identity": 1.25}
SLICES = 10
RATE_TARGET = 0.8
BYTES_TARGET = 1.5


def wchar(pid: str = "self") -> int:
    """Bytes a process has handed to write calls so far (Linux ``/proc/<pid>/io`` ``wchar``:
    the WAL's pages and the checkpoints' copies included); 0 elsewhere."""
    try:
        with open(f"/proc/{pid}/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("wchar"))
    except (OSError, StopIteration):
        return 0


_children: dict[str, int] = {}
"""The last bytes written seen of each child process (a child that exited keeps its last)."""


def written() -> tuple[int, int]:
    """Bytes written so far by this process and by its children (the projecting child writes
    the rows, and runs the checkpoints that fall on its commits)."""
    for task in Path("/proc/self/task").glob("*/children"):
        try:
            pids = task.read_text().split()
        except OSError:
            continue
        for pid in pids:
            _children[pid] = max(_children.get(pid, 0), wchar(pid))
    return wchar(), sum(_children.values())


def rss_mb() -> float:
    """This process's resident memory now, in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb(who: int) -> float:
    """Peak RSS (Linux reports kilobytes), in MB."""
    return resource.getrusage(who).ru_maxrss / 1024


def measure(url: str, path: Path, n_messages: int, parallel: bool | None,
            batch_size: int | None) -> dict[str, Any]:
    """Ingest the file, marking each tenth; the slices, memory and counts."""
    # (messages, seconds, head, rss MB, CPU seconds of this process, bytes written)
    marks: list[tuple[int, float, int, float, float, tuple[int, int]]] = []
    done = read = 0  # messages committed (ignored ones are not counted), lines read
    step = max(1, n_messages // SLICES)

    def counted(lines: Iterable[bytes]) -> Iterator[bytes]:
        # Tenths are cut by lines read (the ingest calls back after committing what it read),
        # so the ignored messages, which its progress does not count, fall in their own tenth.
        nonlocal read
        for line in lines:
            read += 1
            yield line
    with idstitch.open(url) as ws:
        started = time.perf_counter()
        marks.append((0, 0.0, ws.log.head(), rss_mb(), time.process_time(), written()))

        def progress(count: int) -> None:
            nonlocal done
            done += count
            if read // step > marks[-1][0] // step:
                marks.append((read, time.perf_counter() - started, ws.log.head(), rss_mb(),
                              time.process_time(), written()))
                console.print(f"  {read:>10,} messages  {marks[-1][1]:8.1f} s  "
                              f"{marks[-1][2]:>11,} events  {marks[-1][3]:7.0f} MB")

        with open(path, "rb") as lines:
            sized = {} if batch_size is None else {"batch_size": batch_size}
            report = ws.ingest(counted(lines), progress=progress, parallel=parallel, **sized)
        if marks[-1][0] < read:
            # The last batch's messages (and the wait for the projecting child) end the last
            # tenth when its progress did not reach a mark of its own.
            marks.append((read, time.perf_counter() - started, ws.log.head(),
                          rss_mb(), time.process_time(), written()))
        ws.catch_up()
        total = time.perf_counter() - started
        head = ws.log.head()
    slices = []
    for (m0, t0, h0, _, c0, (w0, k0)), (m1, t1, h1, rss, c1, (w1, k1)) in pairwise(marks):
        seconds = t1 - t0
        slices.append({"messages": m1 - m0, "events": h1 - h0, "seconds": seconds,
                       "messages_per_s": (m1 - m0) / seconds if seconds else None,
                       "events_per_s": (h1 - h0) / seconds if seconds else None,
                       "cpu_s": c1 - c0, "rss_mb": rss,
                       "written_per_event": (w1 - w0) / (h1 - h0) if h1 > h0 else None,
                       "child_written_per_event": (k1 - k0) / (h1 - h0) if h1 > h0 else None})
    return {"slices": slices, "seconds": total, "events": head,
            "counts": harness.report_counts(report),
            "peak_mb": peak_mb(resource.RUSAGE_SELF),
            "child_peak_mb": peak_mb(resource.RUSAGE_CHILDREN)}


def sqlite_bytes(path: Path) -> dict[str, float]:
    """Database bytes per event against the stored event's own bytes (SQLite)."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        events, row_bytes = db.execute(
            "SELECT count(*), sum(8 + length(originator_id) + 8 + length(topic) + length(state)) "
            "FROM idstitch_log").fetchone()
        try:
            page = db.execute("PRAGMA page_size").fetchone()[0]
            # Each table's and index's pages (SQLite's dbstat, where it is compiled in).
            parts = {name: pages * page / events for name, pages in db.execute(
                "SELECT name, count(*) FROM dbstat GROUP BY name ORDER BY count(*) DESC")}
        except sqlite3.Error:
            parts = {}
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))
    per_event = size / events
    stored = row_bytes / events
    return {"file_bytes": size, "bytes_per_event": per_event, "stored_event_bytes": stored,
            "ratio": per_event / stored, "parts": parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="about how many events to record (default 1000000)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    harness.add_mix_argument(parser)
    parser.add_argument("--url", help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--one-process", dest="parallel", action="store_const", const=False,
                        default=None, help="no projecting child (parallel=False)")
    parser.add_argument("--data", metavar="FILE",
                        help="the workload file to ingest (written first when missing): reuse "
                             "one between two trees")
    parser.add_argument("--batch-size", type=int,
                        help="messages committed at a time (default: ws.ingest's)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args()

    n_messages = round(args.events / EVENTS_PER_MESSAGE[args.mix])
    with tempfile.TemporaryDirectory(prefix="idstitch-growth-") as tmp:
        source = Path(args.data) if args.data else Path(tmp) / "workload.ndjson"
        if not source.exists():
            console.print(f"writing {n_messages:,} messages ({args.mix} mix) ...")
            harness.write_workload(source, n_messages, args.seed, args.mix)
        db = Path(tmp) / "idstitch.db"
        url = args.url or harness.sqlite_url(db)
        console.print(f"ingesting into {url} ...")
        result = measure(url, source, n_messages, args.parallel, args.batch_size)
        if not args.data:
            source.unlink()
        if args.url is None or args.url.startswith("sqlite:///"):
            result["bytes"] = sqlite_bytes(Path(url.removeprefix("sqlite:///")))

    slices = result["slices"]
    first, last = slices[0]["messages_per_s"], slices[-1]["messages_per_s"]
    result["last_over_first"] = last / first
    harness.table(
        f"ingest of {n_messages:,} messages ({args.mix}): {result['events']:,} events in "
        f"{result['seconds']:.1f} s",
        ["tenth", "messages/s", "events/s", "CPU s (this process)", "KiB written/event",
         "child KiB written/event", "RSS MB"],
        [[i + 1, harness.fmt_rate(s["messages_per_s"]), harness.fmt_rate(s["events_per_s"]),
          f"{s['cpu_s']:.2f}",
          *("-" if s[k] is None else f"{s[k] / 1024:.1f}"
            for k in ("written_per_event", "child_written_per_event")),
          f"{s['rss_mb']:.0f}"] for i, s in enumerate(slices)])
    harness.table("growth", ["figure", "value", "target"], [
        ["last tenth / first tenth (messages/s)",
         harness.fmt_ratio(result["last_over_first"], RATE_TARGET), f">= {RATE_TARGET}"],
        ["peak RSS, this process / the projecting child",
         f"{result['peak_mb']:.0f} / {result['child_peak_mb']:.0f} MB",
         "flat: within 20% between 1M and 5M events"],
        *([["database bytes per event / stored event bytes",
            f"{result['bytes']['bytes_per_event']:.0f} / "
            f"{result['bytes']['stored_event_bytes']:.0f} = "
            + harness.fmt_ratio(result['bytes']['ratio'], BYTES_TARGET, at_most=True),
            f"<= {BYTES_TARGET}x"]] if "bytes" in result else []),
    ])
    parts = result.get("bytes", {}).get("parts")
    if parts:
        harness.table("database bytes per event, by table and index", ["b-tree", "bytes/event"],
                      [[name, f"{b:.1f}"] for name, b in parts.items() if b >= 0.5])
    harness.write_json(args.json, {"mix": args.mix, "messages": n_messages, **result})


if __name__ == "__main__":
    main()
