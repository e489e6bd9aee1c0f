"""The verifiable log: ``ws.verify()`` over a long log, and what the chain costs an append.

Builds a log of N events (default 1,000,000) in a fresh SQLite file (and, with ``--postgres``,
a fresh database on a throwaway PostgreSQL server): the states, topics and sizes of the events a
real ingest records (the attributes workload, ~290 bytes a state), dealt out to devices of 20
events each and appended through the store's own append path (``FastLog.append_events``,
10,000 events a transaction, each chained as ingest chains it). Then measures:

- ``ws.verify()``: the whole chain recomputed from position 1 and compared with the stored
  entries, a page of 10,000 rows at a time (best of ``--runs``, the file in the operating
  system's cache); target (issue 15): >= 200,000 events/s on SQLite;
- ``ws.verify(against=digest)`` with a digest taken at the middle of the log;
- ``ws.digest()`` (one indexed read);
- on the append path: the time of the appends themselves, and of computing their chain entries
  alone (``chain.link`` over the same rows, no database): the chain's share of an append;
- what the chain costs ``ws.ingest`` (``--ingest N`` messages of the workload, default 50,000,
  ``--mix``): the same ingest into fresh SQLite files (with ``--postgres``, also fresh
  PostgreSQL databases; ``parallel=False``: the recording
  process, where the chain is computed), alternately with the chain and with the chain turned
  off in this process (the store's ``chain_append`` replaced by one that does nothing:
  no hashes, no chain rows), ``--rounds`` times each; the fastest of each counts. Same run,
  alternating: the ratio holds when the machine's load is steady. As it often is not, also the
  time spent inside ``chain_append`` itself (its share of each chained ingest, the median),
  which no other process's load can shift much. Target (issue 15): encryption and
  the chain together lose at most 20% of ingest.

    python benchmarks/bench_verify.py                          # 1M events, SQLite (~2.5 min)
    python benchmarks/bench_verify.py --events 200000 --postgres --json /tmp/verify.json
    python benchmarks/bench_verify.py --events 0 --ingest 50000 --rounds 5 --mix identity
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
from harness import Timer, console, fmt_rate, fmt_ratio, rate
from idstitch.adapters import chain
from idstitch.adapters.codec import TOPICS

import idstitch
from idstitch.testing import TemporaryPostgres
from idstitch.workspace import Workspace

TARGET = 200_000
BATCH = 10_000
PER_DEVICE = 20


def real_states(n_messages: int = 3000) -> list[tuple[str, bytes]]:
    """(topic, state) of the events a real ingest of the attributes workload records."""
    with tempfile.TemporaryDirectory() as tmp, idstitch.open("memory:") as ws:
        path = Path(tmp) / "w.ndjson"
        harness.write_workload(path, n_messages)
        harness.feed(ws, path)
        encode = ws.log.codec.encoder()
        return [(TOPICS[type(e.event)], encode(e.event))
                for e in ws.log.read(0, 10**7)]


def rows(n: int, states: list[tuple[str, bytes]]) -> list[tuple[str, int, str, bytes]]:
    """n event rows: devices of PER_DEVICE events, the real states cycled."""
    cycle = itertools.cycle(states)
    out = []
    for i in range(n):
        device = hashlib.md5(str(i // PER_DEVICE).encode()).hexdigest()
        topic, state = next(cycle)
        out.append((device, i % PER_DEVICE + 1, topic, state))
    return out


def fill(ws: Workspace, events: list[tuple[str, int, str, bytes]]) -> float:
    """Append the rows through the store's own append path; the seconds it took."""
    with Timer() as t:
        for i in range(0, len(events), BATCH):
            ws.log.fast.append_events(events[i : i + BATCH])
    return t.seconds


def measure(name: str, url: str, events: list[tuple[str, int, str, bytes]], runs: int
            ) -> dict[str, Any]:
    """Fill one store, then time verify, verify against a digest, and digest."""
    with idstitch.open(url) as ws:
        append = fill(ws, events)
        n = len(events)
        with Timer() as t:
            chain.link(chain.GENESIS, range(1, n + 1), events)
        link = t.seconds
        position = n // 2
        with ws.log.fast.chain_view() as view:
            first, hashes = view.chain_runs(position - 1, position)[0]
        at = (position - first) * chain.SIZE
        # The digest someone would have kept back then.
        middle = idstitch.Digest(position=position, head=hashes[at : at + chain.SIZE].hex())
        best = best_against = float("inf")
        for _ in range(runs):
            with Timer() as t:
                result = ws.verify()
            assert result.ok, result
            assert result.checked == n, result
            best = min(best, t.seconds)
            with Timer() as t:
                result = ws.verify(against=middle)
            assert result.ok, result
            best_against = min(best_against, t.seconds)
        with Timer() as t:
            ws.digest()
        digest = t.seconds
    return {"store": name, "events": n, "append_seconds": append, "link_seconds": link,
            "verify_seconds": best, "verify_rate": rate(n, best),
            "verify_against_seconds": best_against, "digest_ms": digest * 1000}


def ingest_cost(n_messages: int, mix: str, rounds: int, store: str,
                new_url: Callable[[str], str]) -> dict[str, Any]:
    """The same ingest with and without the chain, alternating; the fastest of each."""
    module: Any
    if store == "sqlite":
        # The module whose append calls chain_append (SQLite's half of the log).
        from idstitch.adapters import sqlite_log as module
    else:
        from idstitch.adapters import postgres_log as module

    linked = module.chain_append
    times: dict[str, list[float]] = {"chain": [], "no chain": []}
    inside: list[float] = []  # per chained ingest: the seconds spent in chain_append itself

    def timed(*args: Any) -> None:
        start = time.perf_counter()
        linked(*args)
        inside[-1] += time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w.ndjson"
        harness.write_workload(work, n_messages, mix=mix)
        for r in range(rounds):
            for mode in ("chain", "no chain") if r % 2 == 0 else ("no chain", "chain"):
                module.chain_append = timed if mode == "chain" else (lambda *args: None)
                inside.append(0.0)
                try:
                    with idstitch.open(new_url(f"r{r}{mode.replace(' ', '')}")) as ws:
                        with open(work, "rb") as lines, Timer() as t:
                            ws.ingest(lines, parallel=False)
                        events = ws.log.head()
                    times[mode].append(round(t.seconds, 3))
                    if mode != "chain":
                        inside.pop()
                finally:
                    module.chain_append = linked
    best = {mode: min(seconds) for mode, seconds in times.items()}
    return {"store": store, "messages": n_messages, "mix": mix, "events": events,
            "rounds": rounds, "runs": times, "chain_seconds": best["chain"],
            "no_chain_seconds": best["no chain"],
            "chain_vs_no_chain": best["no chain"] / best["chain"],
            "chain_work_seconds": [round(x, 3) for x in inside],
            "chain_work_share": statistics.median(
                x / t for x, t in zip(inside, times["chain"], strict=True))}


def ingest_costs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """ingest_cost on SQLite (and PostgreSQL), printed."""
    costs = []
    with tempfile.TemporaryDirectory() as tmp:
        costs.append(ingest_cost(args.ingest, args.mix, args.rounds, "sqlite",
                                 lambda name: harness.sqlite_url(Path(tmp) / f"{name}.db")))
    if args.postgres:
        server = TemporaryPostgres().start()
        try:
            costs.append(ingest_cost(args.ingest, args.mix, args.rounds, "postgres",
                                     server.create_database))
        finally:
            server.stop()
    for cost in costs:
        harness.table(
            f"ws.ingest of {args.ingest:,} messages ({args.mix} mix, {cost['events']:,} "
            f"events), {cost['store']}, one process, fastest of {args.rounds} each, alternating",
            ["", "seconds", "events/s", "with / without"],
            [("without the chain", f"{cost['no_chain_seconds']:.3f}",
              fmt_rate(rate(cost["events"], cost["no_chain_seconds"])), "1.00x"),
             ("with the chain", f"{cost['chain_seconds']:.3f}",
              fmt_rate(rate(cost["events"], cost["chain_seconds"])),
              fmt_ratio(cost["chain_vs_no_chain"], 0.8))])
        console.print(f"{cost['store']}: inside chain_append (hashing, the tail read, the run's "
                      f"insert): {cost['chain_work_share']:.1%} of a chained ingest (median), "
                      f"{min(cost['chain_work_seconds']):.3f}-"
                      f"{max(cost['chain_work_seconds']):.3f} s")
    return costs


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, printed as a table; the numbers."""
    out: dict[str, Any] = {"events": args.events}
    if args.ingest:
        out["ingest"] = ingest_costs(args)
    if args.events:
        out.update(verify_all(args))
    return out


def verify_all(args: argparse.Namespace) -> dict[str, Any]:
    """Fill a log of ``--events`` events per store and time verify and digest on it."""
    states = real_states()
    events = rows(args.events, states)
    mean = sum(len(s) for _, s in states) / len(states)
    console.print(f"log: {args.events:,} events, {mean:.0f} bytes of state on average")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(measure("sqlite", harness.sqlite_url(Path(tmp) / "v.db"), events,
                               args.runs))
    if args.postgres:
        server = TemporaryPostgres().start()
        try:
            results.append(measure("postgres", server.create_database("verify"), events,
                                   args.runs))
        finally:
            server.stop()
    harness.table(
        f"verify of {args.events:,} events (target: >= {TARGET:,} events/s on SQLite)",
        ["store", "verify s", "events/s", "vs target", "against a digest s", "digest ms",
         "append s", "of which chain s", "chain share"],
        [(r["store"], f"{r['verify_seconds']:.2f}", fmt_rate(r["verify_rate"]),
          fmt_ratio(r["verify_rate"] / TARGET, 1.0) if r["store"] == "sqlite" else "-",
          f"{r['verify_against_seconds']:.2f}", f"{r['digest_ms']:.2f}",
          f"{r['append_seconds']:.2f}", f"{r['link_seconds']:.2f}",
          f"{r['link_seconds'] / r['append_seconds']:.0%}") for r in results])
    return {"results": results}


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run, print, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events in the log (default 1000000)")
    parser.add_argument("--runs", type=int, default=3, help="verify runs; the best counts")
    parser.add_argument("--ingest", type=int, default=50_000,
                        help="messages of the ingest with and without the chain (0: skip)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="ingests with and without the chain, each (default 3)")
    harness.add_mix_argument(parser)
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=False,
                        help="also measure PostgreSQL (default off)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args(argv)
    harness.write_json(args.json, {"benchmark": "verify", **run(args)})


if __name__ == "__main__":
    main()
