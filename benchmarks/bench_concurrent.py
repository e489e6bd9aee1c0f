"""Several writers sharing devices: two processes ingesting one interleaved stream, against one.

Measures, in one run, for each workload mix (``attributes``, ``identity``: see workload.py) and
each store (a SQLite file, a PostgreSQL database):

- one process: a worker process opens a fresh store and ``ws.ingest``s all N generated lines;
- two writers: two worker processes open one fresh store and ingest the same lines split
  between them in chunks of ``--chunk`` lines (line i goes to writer ``(i // chunk) % 2``), as
  two API nodes behind a load balancer receive one app's traffic: a device's messages reach
  both. Each ingest returns only when the projections hold everything it appended
  (read-your-writes), as it does alone.

Wall time runs from the moment every worker has opened its store and is told to start until
the last one has returned; the ratio is two writers' time over one process's (target, issue 9:
at most 1.5x on both stores). Every worker uses the same fixed clock, so that the runs are
comparable record for record: a message's recorded time, and the received time its ``sentAt``
clock-skew correction uses, are the same whichever process ingests it.

Correctness, for each two-writer store:

- **exactly once**: the events in the log, as (device, message id, event type), are the same
  multiset as the one process recorded: no message lost, none recorded twice. Collected device
  attributes are left out of this count: a device records them only when they differ from
  what it last collected, which depends on the order its messages landed (the next check
  covers them);
- **the same decisions**: the log's order of messages is the order in which the writers' appends
  landed, which differs from the input's (lines of one device race between the two nodes, as
  they would in production). A third ingest, by one process, of the input lines in that landed
  order must record, device by device, exactly the events the two writers recorded: a decision
  made on another writer's stale device state would differ here;
- **the same projections**: the two-writer store's rows (``ws.dump()`` after ``ws.catch_up()``)
  equal a ``ws.rebuild()`` of its own log, so the writers' catch-ups applied every event once;
  and they equal the rows of the landed-order ingest when both logs hold the same positions
  (SQLite always; PostgreSQL when its log has no gaps: a refused append burns the sequence
  numbers it took, and positions name merges, new persons and attribute stamps).

The rows of the one-process ingest of the input order are not expected to equal the two
writers': the identity projection is a fold over the log's order, so who converted first,
which person an email stayed with and which attribute value won can differ; the count of
differing rows is printed for information.

    python benchmarks/bench_concurrent.py                       # N=60000, both mixes, both stores
    python benchmarks/bench_concurrent.py --n 20000 --mix identity --no-postgres
    python benchmarks/bench_concurrent.py --writers 4 --json /tmp/concurrent.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from harness import console, fmt_ratio

import idstitch

RATIO_TARGET = 1.5
FIXED_NOW = datetime(2026, 1, 9, 12, 0, tzinfo=UTC)
"""The clock of every worker (see the docstring)."""


def fixed_clock() -> datetime:
    """The same moment, always."""
    return FIXED_NOW


# A worker: opened by the parent as `python bench_concurrent.py --worker URL FILE INDEX COUNT
# CHUNK`. It opens the store, says "ready", waits for "go", ingests its share and prints its
# numbers as one JSON line.


def worker(url: str, path: str, index: int, count: int, chunk: int) -> None:
    """Ingest lines ``i`` with ``(i // chunk) % count == index`` of the file."""
    lines = Path(path).read_bytes().splitlines()
    mine = [line for i, line in enumerate(lines) if (i // chunk) % count == index]
    with idstitch.open(url, clock=fixed_clock) as ws:
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.perf_counter()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        report = ws.ingest(mine)
        seconds = time.perf_counter() - started
        own = resource.getrusage(resource.RUSAGE_SELF)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)  # the projecting child, ended by close
    print(json.dumps({"seconds": seconds, "lines": len(mine),
                      "cpu": own.ru_utime + own.ru_stime - cpu.ru_utime - cpu.ru_stime,
                      "child_cpu": child.ru_utime + child.ru_stime,
                      "report": harness.report_counts(report)}), flush=True)


def run_writers(url: str, data: Path, count: int, chunk: int,
                profile: str | None = None) -> dict[str, Any]:
    """Start ``count`` workers on one store, let them ingest together; wall time and reports.

    ``profile``: record each worker (and its projecting child) with py-spy, as collapsed
    stacks in ``<profile>-w<i>.txt``."""
    def command(i: int) -> list[str]:
        argv = [sys.executable, __file__, "--worker", url, str(data), str(i), str(count),
                str(chunk)]
        if profile is None:
            return argv
        return ["py-spy", "record", "--subprocesses", "--format", "raw", "--rate", "200", "--idle",
                "--output", f"{profile}-w{i}.txt", "--", *argv]

    procs = [subprocess.Popen(command(i), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for i in range(count)]
    def reply(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        while (line := proc.stdout.readline()).startswith("py-spy>") or line == "\n":
            pass  # py-spy's own messages
        return line

    try:
        for proc in procs:
            if reply(proc).strip() != "ready":
                raise SystemExit(f"a worker on {url} did not start")
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            line = reply(proc)
            if not line:
                raise SystemExit(f"a worker on {url} failed")
            results.append(json.loads(line))
        wall = time.perf_counter() - started
    finally:
        for proc in procs:
            if sys.exc_info()[0] is not None:
                proc.kill()
            proc.wait()
    totals: Counter[str] = Counter()
    for r in results:
        totals.update(r["report"])
    return {"seconds": wall, "writers": results, "report": dict(totals)}


# Checks.


def events_by_device(ws: idstitch.Workspace) -> tuple[dict[str, list[Any]], list[tuple[int, Any]]]:
    """The log's events grouped by device (in log order), and the whole log."""
    from idstitch.testing import recorded_events

    log = recorded_events(ws)
    devices: dict[str, list[Any]] = defaultdict(list)
    for _, event in log:
        devices[event.device_id].append(event)
    return devices, log


def message_keys(line: bytes) -> set[tuple[str, str | None]]:
    """(device, message id) of every command a line maps to (none for ignored or bad lines)."""
    from idstitch.adapters import segment
    from idstitch.domain.commands import Decision

    try:
        commands = segment.to_commands(segment.decode(line))
    except idstitch.errors.IdstitchError:
        return set()
    # Person-level decisions (no device) never come from a Segment line.
    return {(c.device_id, c.message_id) for c in commands or () if not isinstance(c, Decision)}


def landed_order(lines: list[bytes], log: list[tuple[int, Any]]) -> list[bytes]:
    """The input lines in the order their events landed in ``log``; lines that recorded
    nothing (duplicates, ignored and bad lines) after them, in input order."""
    first: dict[tuple[str, str | None], int] = {}
    for position, event in log:
        first.setdefault((event.device_id, event.message_id), position)
    placed: list[tuple[int, int, bytes]] = []
    rest: list[bytes] = []
    for i, line in enumerate(lines):
        positions = [first[k] for k in message_keys(line) if k in first]
        if positions:
            placed.append((min(positions), i, line))
        else:
            rest.append(line)
    return [line for _, _, line in sorted(placed)] + rest


def differing_rows(a: dict[str, list[tuple[str, bytes]]], b: dict[str, list[tuple[str, bytes]]]
                   ) -> dict[str, int]:
    """Per row kind, how many keys differ (missing on one side or another value)."""
    out = {}
    for kind in sorted(set(a) | set(b)):
        left, right = dict(a.get(kind, [])), dict(b.get(kind, []))
        n = sum(1 for key in set(left) | set(right) if left.get(key) != right.get(key))
        if n:
            out[kind] = n
    return out


def check(name: str, urls: dict[str, str], data: Path) -> dict[str, Any]:
    """Compare the two-writer store with the one-process store and a landed-order ingest."""
    lines = data.read_bytes().splitlines()
    with idstitch.open(urls["one"], clock=fixed_clock) as one:
        one_devices, _ = events_by_device(one)
        one_dump = one.dump()
    with idstitch.open(urls["many"], clock=fixed_clock) as many:
        many.catch_up()
        many_dump = many.dump()
        many_devices, log = events_by_device(many)
        gaps = (log[-1][0] - len(log)) if log else 0
        many.rebuild()
        rebuilt = many.dump()

    def signature(devices: dict[str, list[Any]]) -> Counter[tuple[str, str | None, str]]:
        return Counter((d, e.message_id, type(e).__name__) for d, evs in devices.items()
                       for e in evs if type(e).__name__ != "DeviceAttributesCollected")

    ours, theirs = signature(many_devices), signature(one_devices)
    lost, doubled = theirs - ours, ours - theirs
    with idstitch.open(urls["landed"], clock=fixed_clock) as landed:
        landed.ingest(landed_order(lines, log))
        landed_devices, _ = events_by_device(landed)
        landed_dump = landed.dump()
    decisions = sum(1 for d in set(landed_devices) | set(many_devices)
                    if landed_devices.get(d) != many_devices.get(d))
    out: dict[str, Any] = {
        "events": len(log), "position_gaps": gaps,
        "lost": sum(lost.values()), "doubled": sum(doubled.values()),
        "devices_deciding_otherwise": decisions,
        "rebuild_equal": rebuilt == many_dump,
        "landed_rows_differing": differing_rows(landed_dump, many_dump),
        "input_order_rows_differing": differing_rows(one_dump, many_dump),
    }
    out["ok"] = (not out["lost"] and not out["doubled"] and not decisions
                 and out["rebuild_equal"] and (gaps > 0 or not out["landed_rows_differing"]))
    return out


# The run.


def _cpu(run: dict[str, Any]) -> str:
    """Each worker's CPU seconds while it ingested, plus its projecting child's."""
    return " + ".join(f"{w['cpu']:.2f}+{w['child_cpu']:.2f}" for w in run["writers"])


def measure(name: str, urls: dict[str, str], data: Path, args: argparse.Namespace
            ) -> dict[str, Any]:
    """One process, then ``writers`` writers, on fresh stores of one kind; then the checks."""
    writers, chunk = args.writers, args.chunk
    profile = None if args.py_spy is None else str(Path(args.py_spy) / name.replace("/", "-"))
    one = run_writers(urls["one"], data, 1, chunk)
    many = run_writers(urls["many"], data, writers, chunk, profile)
    out: dict[str, Any] = {"one": one, "many": many, "ratio": many["seconds"] / one["seconds"]}
    console.print(f"{name}: one process {one['seconds']:.2f} s, {writers} writers "
                  f"{many['seconds']:.2f} s ({out['ratio']:.2f}x) "
                  f"[{', '.join(format(w['seconds'], '.2f') for w in many['writers'])}]; CPU s "
                  f"(writer+child) one {_cpu(one)}, {writers} writers {_cpu(many)}")
    if args.check:
        out["check"] = check(name, urls, data)
        console.print(f"{name}: {out['check']}")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every mix on every store; the numbers."""
    results: dict[str, Any] = {"n_messages": args.n, "writers": args.writers, "chunk": args.chunk,
                               "runs": {}}
    mixes = [args.mix] if args.mix else ["attributes", "identity"]
    with tempfile.TemporaryDirectory(prefix="idstitch-bench-") as tmp_:
        tmp = Path(tmp_)
        pg = None
        if args.postgres:
            from idstitch.testing import TemporaryPostgres

            pg = TemporaryPostgres().start()
        try:
            for mix in mixes:
                data = tmp / f"{mix}.ndjson"
                harness.write_workload(data, args.n, args.seed, mix)
                urls = {k: harness.sqlite_url(tmp / f"{mix}-{k}.db")
                        for k in ("one", "many", "landed")}
                if args.sqlite:
                    results["runs"][f"sqlite/{mix}"] = measure(f"sqlite/{mix}", urls, data, args)
                if pg is not None:
                    urls = {k: pg.create_database(f"{mix}_{k}") for k in ("one", "many", "landed")}
                    results["runs"][f"postgresql/{mix}"] = measure(f"postgresql/{mix}", urls,
                                                                   data, args)
        finally:
            if pg is not None:
                pg.stop()
    show(results)
    return results


def show(results: dict[str, Any]) -> None:
    """The results table."""
    rows = []
    for name, run_ in results["runs"].items():
        check_ = run_.get("check")
        verdict = "-" if check_ is None else (
            "[green]yes[/green]" if check_["ok"] else f"[red]NO[/red] {check_}")
        rows.append((name, f"{results['n_messages']:,}", f"{run_['one']['seconds']:.2f}",
                     f"{run_['many']['seconds']:.2f}",
                     fmt_ratio(run_["ratio"], RATIO_TARGET, at_most=True), verdict))
    harness.table(f"{results['writers']} writers sharing devices vs one process "
                  f"(chunks of {results['chunk']} lines; target <= {RATIO_TARGET}x)",
                  ("store/mix", "messages", "one process s", f"{results['writers']} writers s",
                   "ratio", "exactly once, same decisions, same rows"), rows)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run, print, and write the JSON (or run as a worker)."""
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, path, index, count, chunk = sys.argv[2:7]
        worker(url, path, int(index), int(count), int(chunk))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60_000, help="messages (default 60000)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    parser.add_argument("--mix", choices=("attributes", "identity"), default=None,
                        help="one mix only (default: both)")
    parser.add_argument("--writers", type=int, default=2, help="writer processes (default 2)")
    parser.add_argument("--chunk", type=int, default=10,
                        help="lines a writer takes in turn (default 10)")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="check exactly-once, decisions and rows (default on)")
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure PostgreSQL (default on)")
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True,
                        help="measure SQLite (default on)")
    parser.add_argument("--py-spy", metavar="DIR",
                        help="profile the writers with py-spy (collapsed stacks into DIR)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args(argv)
    harness.write_json(args.json, {"benchmark": "concurrent", **run(args)})


if __name__ == "__main__":
    main()
