"""Rebuild throughput: ``ws.rebuild()`` of profiles and the identity graph on SQLite, against
eventsourcing's ProjectionRunner doing the same projection one transaction per event.

Measures, in one run:

- idstitch: N generated SDK messages are fed once (``ws.ingest``), then ``ws.rebuild()`` replays
  the whole log from position 0 into fresh projection rows on a SQLite file. Rate = events in the
  log / seconds of the rebuild;
- the reference: eventsourcing 9.5's own ``ProjectionRunner`` over a copy of the same SQLite
  file, with a ``Projection`` whose ``process_event`` applies the same identity fold
  (``IdentityProjection.apply``) to one event in one projection-store transaction that reads the
  rows it needs, writes them and moves the tracking position (the library's exactly-once
  pattern; no cache kept between events). The stock SQLite recorder has no ``subscribe()``, so
  the runner gets a recorder subclass whose subscription pulls pages with ``select_notifications``
  (the library's own ``ListenNotifySubscription``, never notified: a rebuild only reads what is
  there). It runs for the first ``--ref-events`` events (its rate is steady; a full run would take
  minutes); with ``--ref-events 0`` it runs over all of them and the rows are checked equal to the
  rebuild's, proving both did the same work. Its transactions go through our SQLite projection
  store (WAL, ``synchronous=NORMAL``: no fsync per commit); a stock ``SQLiteTrackingRecorder``
  view (``synchronous=FULL``) would fsync every event, so this is the generous reference.

Targets (issue 3): rebuild >= 50x the reference, and >= 100,000 events/s.

    python benchmarks/bench_rebuild.py                     # N=100000 messages, reference 20000 events
    python benchmarks/bench_rebuild.py --n 5000 --ref-events 0 --json /tmp/rebuild.json
"""

from __future__ import annotations

import argparse
import inspect
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import harness
from eventsourcing.persistence import ListenNotifySubscription, Subscription, Tracking
from eventsourcing.popo import POPOTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.sqlite import SQLiteApplicationRecorder
from harness import Timer, console, fmt_rate, fmt_ratio, rate
from idstitch.adapters.eventlog import DeviceLog
from idstitch.projections.identity import IdentityProjection
from idstitch.projections.rows import KINDS
from idstitch.projections.store import LoggedEvent
from idstitch.projections.unit import Unit

import idstitch

RATIO_TARGET = 50.0
RATE_TARGET = 100_000
APP_NAME = DeviceLog.name


class PulledSubscription(ListenNotifySubscription[SQLiteApplicationRecorder]):
    """The library's page-pulling subscription; nothing notifies it, so it reads what exists."""


class SubscribableSQLiteRecorder(SQLiteApplicationRecorder):
    """The stock SQLite application recorder plus the ``subscribe()`` the runner needs."""

    def subscribe(self, gt: int | None = None, topics: Any = ()) -> Subscription[Any]:
        """Pull pages of notifications after ``gt``."""
        return PulledSubscription(recorder=self, gt=gt, topics=topics)


def logged_event(position: int, recorded: Any) -> LoggedEvent:
    """Our LoggedEvent from the runner's (envelope, tracking), whichever fields it has."""
    available = {"position": position, "event": recorded.event,
                 "originator_id": recorded.originator_id, "version": recorded.originator_version}
    names = inspect.signature(LoggedEvent).parameters
    return LoggedEvent(**{name: available[name] for name in names})


class IdentityFoldProjection(Projection[POPOTrackingRecorder]):
    """Our identity fold as an eventsourcing Projection: one store transaction per event."""

    name = "IdentityFold"
    store: ClassVar[Any] = None
    fold: ClassVar[IdentityProjection] = IdentityProjection()
    processed: ClassVar[int] = 0
    done = threading.Event()
    stop_after: ClassVar[int] = 0

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Read the rows the event touches, apply it, write rows and position: one transaction."""
        cls = type(self)
        position = tracking.notification_id
        with cls.store.transaction(IdentityProjection.name) as tx:
            unit = Unit(tx, {})
            cls.fold.apply(unit, logged_event(position, domain_event))
            tx.write(unit.encoded(), position, cls.fold.meta)
        self.view.insert_tracking(tracking)
        cls.processed += 1
        if cls.processed >= cls.stop_after:
            cls.done.set()


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite file (WAL included), through the backup API."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def reference(path: Path, limit: int, head: int) -> dict[str, Any]:
    """Run the ProjectionRunner over the log in ``path`` for ``limit`` events (0: all)."""
    ws = idstitch.open(harness.sqlite_url(path), auto_catch_up=False)
    ws.rows.reset(IdentityProjection.name, KINDS)
    target = head if limit <= 0 else min(limit, head)
    projection = IdentityFoldProjection
    projection.store, projection.fold = ws.rows, IdentityProjection(ws.anonymous_merge)
    projection.processed, projection.stop_after = 0, target
    projection.done.clear()
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "SQLITE_LOCK_TIMEOUT": "30",
        "APPLICATION_RECORDER_TOPIC": f"{__name__}:SubscribableSQLiteRecorder",
        # The runner's view (its tracking recorder) is in memory: the rows and their position are
        # written by our store, in the same transaction, in the same file as the events.
        f"{projection.name.upper()}_PERSISTENCE_MODULE": "eventsourcing.popo",
    }
    started = time.perf_counter()
    with ProjectionRunner(application_class=DeviceLog, projection_class=projection,
                          view_class=POPOTrackingRecorder, env=env) as runner:
        while not projection.done.wait(0.05):
            if runner.is_interrupted.is_set():
                break
        seconds = time.perf_counter() - started
        processed = projection.processed
    return {"events": processed, "seconds": seconds, "workspace": ws}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Feed, rebuild, run the reference; the numbers."""
    results: dict[str, Any] = {"n_messages": args.n}
    with tempfile.TemporaryDirectory(prefix="idstitch-bench-") as tmp_:
        tmp = Path(tmp_)
        data = tmp / "workload.ndjson"
        harness.write_workload(data, args.n, args.seed)
        db = tmp / "idstitch.db"
        with idstitch.open(harness.sqlite_url(db)) as ws:
            with Timer() as f:
                counts = harness.feed(ws, data)
                ws.catch_up()
            head = ws.log.head()
            results.update(feed_seconds=f.seconds, events=head, report=counts)
            console.print(f"fed {args.n:,} messages by ingest in {f.seconds:.1f}s: {counts}; "
                          f"{head:,} events in the log")
            before = ws.dump() if args.ref_events <= 0 else None
            with Timer() as r:
                ws.rebuild()
            results["rebuild_seconds"] = r.seconds
            after = ws.dump() if args.ref_events <= 0 else None
        if before is not None and before != after:
            raise SystemExit("rebuild gave other rows than the incremental catch-up")

        copy = tmp / "reference.db"
        copy_database(db, copy)
        ref = reference(copy, args.ref_events, head)
        ref_ws = ref.pop("workspace")
        if args.ref_events <= 0:
            same = ref_ws.dump() == after
            results["reference_rows_equal"] = same
            console.print("reference rows equal to the rebuild's: "
                          + ("[green]yes[/green]" if same else "[red]NO[/red]"))
        ref_ws.close()
        results["reference"] = ref
    show(results)
    return results


def show(results: dict[str, Any]) -> None:
    """The results table."""
    ref = results["reference"]
    ref_rate = rate(ref["events"], ref["seconds"])
    ours = rate(results["events"], results["rebuild_seconds"])
    results["reference_events_per_s"], results["rebuild_events_per_s"] = ref_rate, ours
    results["ratio"] = ours / ref_rate if ref_rate else None
    rows = [
        ("eventsourcing ProjectionRunner, our fold, 1 transaction per event", f"{ref['events']:,}",
         f"{ref['seconds']:.2f}", fmt_rate(ref_rate), "1.00x"),
        ("idstitch ws.rebuild()", f"{results['events']:,}", f"{results['rebuild_seconds']:.2f}",
         fmt_rate(ours) if ours >= RATE_TARGET else f"[red]{fmt_rate(ours)}[/red]",
         fmt_ratio(results["ratio"], RATIO_TARGET)),
    ]
    harness.table(f"rebuild of profiles + identity graph, SQLite, {results['events']:,} events from "
                  f"{results['n_messages']:,} messages (targets: >= {RATIO_TARGET:.0f}x the reference, "
                  f">= {RATE_TARGET:,} events/s)",
                  ("what", "events", "seconds", "events/s", "vs reference"), rows)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run, print, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="messages to feed (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    parser.add_argument("--ref-events", type=int, default=20_000,
                        help="events the reference runs over (default 20000; 0: all, and compare rows)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args(argv)
    harness.write_json(args.json, {"benchmark": "rebuild", **run(args)})


if __name__ == "__main__":
    main()
