"""Custom projections: a user's projection catching up, against eventsourcing's
ProjectionRunner running the same fold, and what one registered projection costs a rebuild.

Measures, in one run, on one SQLite file (by default the log of 700,000 messages: 1,035,776
events, the issue's scale; ``--n 20000`` for a quick look at 29,153):

- idstitch: N generated SDK messages are fed once (``ws.ingest``); then
  ``ws.run_projection(Counter)`` (:class:`idstitch.testing_projections.Counter`: one
  ``INSERT ... ON CONFLICT DO UPDATE`` through its ``ProjectionDB`` per Change, counting Changes
  per event name) catches up from position 0 over the whole log: Changes built as ``history``
  shows them (person after the event, attribute changes, merges), a transaction per 5,000
  positions, read, built and handled 250 positions at a time inside it (so that a chunk's
  Changes die young). Rate = events in the log / seconds;
- the reference: eventsourcing 9.5's own ``ProjectionRunner`` over a copy of the same file (the
  stock SQLite application recorder plus the page-pulling ``subscribe()`` it lacks, as in
  bench_rebuild), with a ``Projection`` whose ``process_event`` runs the same counting statement
  on the same kind of table and moves a tracking row, one transaction per event (the library's
  exactly-once pattern), commits not synced (WAL, ``synchronous=NORMAL``: the generous
  reference), and again with ``synchronous=FULL``, the durability eventsourcing's own SQLite
  recorders have. Each runs for the first ``--ref-events`` / ``--stock-ref-events`` events (its
  rate is steady);
- the same catch-up with :class:`BatchCounter`, which folds a batch with ``handle_batch`` (one
  statement per event name a batch);
- ``ws.rebuild()`` of the built-in projections on the same file, alternately without and with
  one custom projection registered that wants no events (:class:`NoEvents`), ``--rounds`` times
  each; the best of each is compared.

Targets (issue 14): the custom catch-up >= 20x the reference; the rebuild with the idle custom
projection at most 10% slower than without.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

import harness
from bench_rebuild import copy_database, count_events, sqlite_env
from eventsourcing.persistence import Tracking
from eventsourcing.popo import POPOTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from harness import Timer, console, fmt_rate, fmt_ratio, rate

import idstitch
from idstitch.testing_projections import BatchCounter, Counter, NoEvents

RATIO_TARGET = 20.0
REBUILD_SLOWDOWN_LIMIT = 1.10


class CountingProjection(Projection[POPOTrackingRecorder]):
    """The counting fold as an eventsourcing Projection: one transaction per event."""

    name = "Counting"
    path: ClassVar[str] = ""
    processed: ClassVar[int] = 0
    stop_after: ClassVar[int] = 0
    done = threading.Event()
    conn: ClassVar[sqlite3.Connection | None] = None
    synchronous: ClassVar[str] = "NORMAL"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Count the event and move the tracking row, in one transaction."""
        cls = type(self)
        if cls.conn is None:
            cls.conn = sqlite3.connect(cls.path, isolation_level=None, check_same_thread=False)
            cls.conn.execute(f"PRAGMA synchronous={cls.synchronous}")
            cls.conn.execute("CREATE TABLE IF NOT EXISTS ref_counts (event TEXT PRIMARY KEY, "
                             "n BIGINT NOT NULL)")
            cls.conn.execute("CREATE TABLE IF NOT EXISTS ref_tracking (name TEXT PRIMARY KEY, "
                             "position BIGINT NOT NULL)")
        conn = cls.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO ref_counts (event, n) VALUES (?, 1) ON CONFLICT (event) DO "
                     "UPDATE SET n = ref_counts.n + 1", (type(domain_event).__name__,))
        conn.execute("INSERT INTO ref_tracking VALUES ('counting', ?) ON CONFLICT (name) DO "
                     "UPDATE SET position = excluded.position", (tracking.notification_id,))
        conn.execute("COMMIT")
        self.view.insert_tracking(tracking)
        cls.processed += 1
        if cls.processed >= cls.stop_after:
            cls.done.set()


def reference(copy: Path, limit: int, synchronous: str = "NORMAL") -> dict[str, Any]:
    """The ProjectionRunner with the counting fold over the copy, for ``limit`` events."""
    projection = CountingProjection
    projection.path, projection.processed, projection.stop_after = str(copy), 0, limit
    projection.conn, projection.synchronous = None, synchronous
    projection.done.clear()
    env = {**sqlite_env(copy), f"{projection.name.upper()}_PERSISTENCE_MODULE": "eventsourcing.popo"}
    with Timer() as t, ProjectionRunner(application_class=harness.StockDeviceLog, projection_class=projection,
                                        view_class=POPOTrackingRecorder, env=env) as runner:
        while not projection.done.wait(0.05):
            if runner.is_interrupted.is_set():
                break
    return {"events": projection.processed, "seconds": t.seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Feed, catch a custom projection up, run the reference, time the rebuilds."""
    results: dict[str, Any] = {"n_messages": args.n, "mix": args.mix, "ref_events": args.ref_events}
    with tempfile.TemporaryDirectory(prefix="idstitch-bench-") as tmp_:
        tmp = Path(tmp_)
        data = tmp / "workload.ndjson"
        harness.write_workload(data, args.n, args.seed, args.mix)
        db = tmp / "idstitch.db"
        url = harness.sqlite_url(db)
        with idstitch.open(url) as ws:
            harness.feed(ws, data)
            ws.catch_up()
        events = count_events(url)
        results["events"] = events
        console.print(f"workload: {args.n:,} messages, {events:,} events")
        # The reference's runner reads the log with the stock recorder: eventsourcing's own
        # table, written into the copy beside idstitch's.
        copy = tmp / "reference.db"
        copy_database(db, copy)
        harness.stock_log(copy, copy)

        with idstitch.open(url) as ws, Timer() as t:
            ws.run_projection(Counter)
            counted = ws.projection_db("counter").query("SELECT sum(n) FROM counts")
        assert counted == [(events,)], counted
        results["custom"] = {"events": events, "seconds": t.seconds}
        with idstitch.open(url) as ws, Timer() as t:
            ws.run_projection(BatchCounter)
        results["custom_batch"] = {"events": events, "seconds": t.seconds}
        results["reference"] = reference(copy, min(args.ref_events, events))
        copy_database(db, copy)
        harness.stock_log(copy, copy)
        results["stock_reference"] = reference(copy, min(args.stock_ref_events, events), "FULL")

        plain: list[float] = []
        idle: list[float] = []
        for _ in range(args.rounds):
            with idstitch.open(url) as ws, Timer() as t:
                ws.rebuild()
            plain.append(t.seconds)
            with idstitch.open(url, projections=[NoEvents()]) as ws, Timer() as t:
                ws.rebuild()
            idle.append(t.seconds)
        results["rebuild_seconds"], results["rebuild_with_idle_seconds"] = plain, idle
    show(results)
    return results


def show(results: dict[str, Any]) -> None:
    """The results table."""
    ref, custom = results["reference"], results["custom"]
    ref_rate = rate(ref["events"], ref["seconds"])
    stock = results["stock_reference"]
    stock_rate = rate(stock["events"], stock["seconds"])
    ours = rate(custom["events"], custom["seconds"])
    batch = rate(results["custom_batch"]["events"], results["custom_batch"]["seconds"])
    results["ratio"] = ours / ref_rate if ref_rate else None
    results["batch_ratio"] = batch / ref_rate if ref_rate else None
    results["stock_ratio"] = ours / stock_rate if stock_rate else None
    results["batch_stock_ratio"] = batch / stock_rate if stock_rate else None
    best, best_idle = min(results["rebuild_seconds"]), min(results["rebuild_with_idle_seconds"])
    results["rebuild_slowdown"] = best_idle / best
    events = results["events"]
    harness.table(
        f"a custom projection from {results['n_messages']:,} messages, SQLite (targets: >= "
        f"{RATIO_TARGET:.0f}x the reference; rebuild with an idle one at most "
        f"{REBUILD_SLOWDOWN_LIMIT:.2f}x)",
        ("what", "events", "seconds", "events/s", "vs reference"),
        [("eventsourcing ProjectionRunner, counting fold, 1 transaction per event",
          f"{ref['events']:,}", f"{ref['seconds']:.2f}", fmt_rate(ref_rate), "1.00x"),
         ("the same runner, commits synced as eventsourcing's SQLite recorders do "
          "(synchronous=FULL)", f"{stock['events']:,}", f"{stock['seconds']:.2f}",
          fmt_rate(stock_rate), "1.00x"),
         ("idstitch run_projection(Counter): Changes as history shows them, handle() per Change",
          f"{events:,}", f"{custom['seconds']:.2f}", fmt_rate(ours),
          f"{fmt_ratio(results['ratio'], RATIO_TARGET)} / "
          f"{fmt_ratio(results['stock_ratio'], RATIO_TARGET)} (synced)"),
         ("idstitch run_projection(BatchCounter): the same, handle_batch()", f"{events:,}",
          f"{results['custom_batch']['seconds']:.2f}", fmt_rate(batch),
          f"{fmt_ratio(results['batch_ratio'], RATIO_TARGET)} / "
          f"{fmt_ratio(results['batch_stock_ratio'], RATIO_TARGET)} (synced)"),
         ("ws.rebuild() (best of rounds)", f"{events:,}", f"{best:.2f}",
          fmt_rate(rate(events, best)), ""),
         ("ws.rebuild() with NoEvents registered (best of rounds)", f"{events:,}",
          f"{best_idle:.2f}", fmt_rate(rate(events, best_idle)),
          fmt_ratio(results["rebuild_slowdown"], REBUILD_SLOWDOWN_LIMIT, at_most=True))])


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run, print, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=700_000,
                        help="messages to feed (default 700000: 1,035,776 events, the scale of "
                             "issue 14's target; 20000 for a quick look)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    harness.add_mix_argument(parser)
    parser.add_argument("--ref-events", type=int, default=5_000,
                        help="events the reference runs over (default 5000)")
    parser.add_argument("--stock-ref-events", type=int, default=1_000,
                        help="events the reference with synced commits runs over (default 1000)")
    parser.add_argument("--rounds", type=int, default=2, help="rebuilds of each kind (default 2)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args(argv)
    harness.write_json(args.json, {"benchmark": "projection", **run(args)})


if __name__ == "__main__":
    main()
