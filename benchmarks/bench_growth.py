"""Growth with the log: the ingest rate of each tenth of a long ingest into one SQLite file.

Measures, in one run, on one fresh SQLite file: N generated SDK messages
(benchmarks/workload.py) are ingested in ten equal parts, one after the other, each a
``ws.ingest`` of its tenth followed by ``ws.catch_up()`` (so every tenth is charged for its own
projection work). For each tenth: wall seconds, messages/s and events/s, and this process's CPU
seconds (user + system: page-cache misses served by the operating system count there too;
with the projecting child, its CPU is not included). The figure of the issue is the rate of the
last tenth over the first: a cost per event that does not grow with the log gives 1.0.

Target (issue 17): last tenth >= 0.8x the first at 1M events. The machine is shared: compare
two trees in one run, alternately (``--ab`` is not offered: run the script twice from each tree
with the same ``--data``), and read the CPU column when the load average is high.

    python benchmarks/bench_growth.py --n 800000 --mix identity     # ~1M events, ~3 min
    python benchmarks/bench_growth.py --n 100000 --one-process --json /tmp/growth.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from harness import console

import idstitch

TARGET = 0.8
PARTS = 10


def _io() -> dict[str, int]:
    """This process's I/O counters (Linux ``/proc/self/io``: ``wchar`` counts the bytes its
    write calls were given, the WAL's pages included); zeros elsewhere."""
    try:
        with open("/proc/self/io") as f:
            return {k: int(v) for k, v in (line.split(": ") for line in f)}
    except OSError:
        return {"wchar": 0, "rchar": 0}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest the workload in tenths; the figures of each."""
    results: dict[str, Any] = {"n_messages": args.n, "mix": args.mix,
                               "one_process": args.one_process, "tenths": []}
    with tempfile.TemporaryDirectory(prefix="idstitch-growth-") as tmp_:
        tmp = Path(tmp_)
        data = Path(args.data) if args.data else tmp / "workload.ndjson"
        if not data.exists():
            harness.write_workload(data, args.n, args.seed, args.mix)
        lines = data.read_bytes().splitlines(keepends=True)[:args.n]
        db = tmp / "growth.db"
        size = len(lines) // PARTS
        with idstitch.open(harness.sqlite_url(db)) as ws:
            for i in range(PARTS):
                part = lines[i * size:(i + 1) * size]
                head = ws.log.head()
                io = _io()
                wall, cpu = time.perf_counter(), time.process_time()
                ws.ingest(part, parallel=False if args.one_process else None)
                ws.catch_up()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                events = ws.log.head() - head
                written = _io()["wchar"] - io["wchar"]
                tenth = {"messages": len(part), "events": events, "head": ws.log.head(),
                         "seconds": wall, "cpu_seconds": cpu, "bytes_written": written,
                         "messages_per_s": len(part) / wall, "events_per_s": events / wall}
                results["tenths"].append(tenth)
                console.print(f"tenth {i}: {tenth['messages_per_s']:8,.0f} msg/s "
                              f"{tenth['events_per_s']:8,.0f} events/s  head {tenth['head']:,}  "
                              f"{wall:.2f} s (cpu {cpu:.2f} s, wrote {written / 1e6:,.0f} MB)")
        results["db_bytes"] = os.path.getsize(db)
    first, last = results["tenths"][0], results["tenths"][-1]
    results["last_over_first"] = last["messages_per_s"] / first["messages_per_s"]
    results["cpu_last_over_first"] = first["cpu_seconds"] / last["cpu_seconds"]
    harness.table(
        f"ingest of {args.n:,} messages ({args.mix} mix) in tenths, "
        f"{'one process' if args.one_process else 'default (projecting child)'} "
        f"(target: last tenth >= {TARGET}x the first)",
        ("figure", "first tenth", "last tenth", "last / first"),
        [("messages/s", f"{first['messages_per_s']:,.0f}", f"{last['messages_per_s']:,.0f}",
          harness.fmt_ratio(results["last_over_first"], TARGET)),
         ("CPU seconds (this process)", f"{first['cpu_seconds']:.2f}",
          f"{last['cpu_seconds']:.2f}", harness.fmt_ratio(results["cpu_last_over_first"], TARGET))])
    return results


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run, print, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=800_000,
                        help="messages to ingest (default 800000: ~1M events)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    harness.add_mix_argument(parser)
    parser.add_argument("--one-process", action="store_true",
                        help="ingest with parallel=False (everything in this process)")
    parser.add_argument("--data", help="an NDJSON workload file to use (written if missing)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args(argv)
    harness.write_json(args.json, {"benchmark": "growth", **run(args)})


if __name__ == "__main__":
    main()
