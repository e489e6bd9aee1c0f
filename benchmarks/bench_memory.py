"""Peak memory: peak RSS of ingesting N generated SDK messages and then rebuilding, per N.

For each N, a fresh Python process (so the peaks are independent) opens a fresh SQLite file,
streams the workload generator straight into ``ws.ingest`` (the messages are never held as a
list; the generator keeps a bounded set of live devices), then runs ``ws.rebuild()``. It reports
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the imports (the baseline), after the ingest
and after the rebuild (the peak is monotonic, so the two say which phase set it), and the
seconds of each phase (the ingest's include generating the messages). A large ingest projects
in a second process (``idstitch.child``); its peak (``RUSAGE_CHILDREN``) is reported too,
and the peak counted against the target is the sum of both processes' peaks (an upper bound:
they run at the same time).

Target (issue 3): peak RSS <= 500 MB for 1M messages, and flat as N grows. Here a size is
flat when its peak is within 1.3x of the previous size's: the caches are bounded by count, so
the peak grows while they fill (about the first 300k messages of this workload) and then stays.
Both ratios are printed, to the smallest size and to the previous one.

    python benchmarks/bench_memory.py                      # N = 100000, 300000 (about 2 minutes)
    python benchmarks/bench_memory.py --sizes 100000,300000,1000000   # the issue's 1M: opt-in,
                                                           # several minutes at today's ingest rate
    python benchmarks/bench_memory.py --sizes 20000,50000 --json /tmp/memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from harness import console

PEAK_TARGET_MB = 500.0
FLAT_FACTOR = 1.3


def maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak RSS of this process so far (or of its largest waited-for child), in MB (Linux
    reports kilobytes)."""
    return resource.getrusage(who).ru_maxrss / 1024


def child(n: int, seed: int, directory: str) -> dict[str, Any]:
    """One measurement, in this process: ingest N streamed messages, rebuild."""
    import workload

    import idstitch

    baseline = maxrss_mb()
    with idstitch.open(harness.sqlite_url(Path(directory) / "idstitch.db")) as ws:
        lines = workload.generate(n, seed)
        started = time.perf_counter()
        counts = harness.report_counts(ws.ingest(lines))
        ws.catch_up()
        ingest_seconds = time.perf_counter() - started
        after_ingest = maxrss_mb()
        started = time.perf_counter()
        ws.rebuild()
        rebuild_seconds = time.perf_counter() - started
        events = ws.log.head()
    own_peak = maxrss_mb()
    projector = maxrss_mb(resource.RUSAGE_CHILDREN)
    return {"n": n, "report": counts, "events": events,
            "baseline_mb": baseline, "after_ingest_mb": after_ingest, "own_peak_mb": own_peak,
            "projector_mb": projector, "peak_mb": own_peak + projector,
            "ingest_seconds": ingest_seconds, "rebuild_seconds": rebuild_seconds}


def measure(n: int, seed: int) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter; its numbers."""
    with tempfile.TemporaryDirectory(prefix="idstitch-bench-") as tmp:
        cmd = [sys.executable, __file__, "--child", str(n), "--seed", str(seed), "--dir", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the measurement for N={n} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One child per size; the numbers."""
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    measured = []
    for n in sizes:
        console.print(f"N = {n:,} ...")
        measured.append(measure(n, args.seed))
    show(measured)
    peaks = [m["peak_mb"] for m in measured]
    return {"sizes": sizes, "runs": measured, "max_peak_mb": max(peaks),
            "growth": peaks[-1] / peaks[0]}


def show(measured: list[dict[str, Any]]) -> None:
    """The results table."""
    first = previous = measured[0]["peak_mb"]
    rows = []
    for m in measured:
        peak = m["peak_mb"]
        ok = peak <= PEAK_TARGET_MB and peak <= FLAT_FACTOR * previous
        rows.append((f"{m['n']:,}", f"{m['events']:,}", f"{m['baseline_mb']:.0f}",
                     f"{m['after_ingest_mb']:.0f}", f"{m['own_peak_mb']:.0f}",
                     f"{m['projector_mb']:.0f}",
                     f"[green]{peak:.0f}[/green]" if ok else f"[red]{peak:.0f}[/red]",
                     f"{peak / first:.2f}x", f"{peak / previous:.2f}x",
                     f"{m['ingest_seconds']:.1f}", f"{m['rebuild_seconds']:.1f}"))
        previous = peak
    harness.table(f"peak RSS of ingest then rebuild, SQLite file, one process per N (targets: <= "
                  f"{PEAK_TARGET_MB:.0f} MB, flat: within {FLAT_FACTOR}x of the previous N)",
                  ("messages", "events", "baseline MB", "after ingest MB", "process peak MB",
                   "projector MB", "peak MB (both)", "vs smallest", "vs previous", "ingest s",
                   "rebuild s"), rows)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments; run the children (or be one)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,300000",
                        help="comma-separated message counts (default 100000,300000; add 1000000 for "
                             "the issue's 1M)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.seed, args.dir)))
        return
    harness.write_json(args.json, {"benchmark": "memory", **run(args)})


if __name__ == "__main__":
    main()
