"""Rebuild throughput: ``ws.rebuild()`` of profiles and the identity graph on SQLite and
PostgreSQL, against eventsourcing's ProjectionRunner doing the same projection one transaction
per event.

Measures, in one run and for each store:

- idstitch: N generated SDK messages are fed once (``ws.ingest``), then ``ws.rebuild()`` replays
  the whole log from position 0 into fresh projection rows, in a fresh SQLite file and in a fresh
  PostgreSQL database (at its defaults: the identity projection in this process, the device
  attributes in a second one, each reading only its own events; ``--one-process`` keeps both
  here). Rate = events in the log (rows counted: PostgreSQL positions can have
  gaps) / seconds of the rebuild;
- the reference: eventsourcing 9.5's own ``ProjectionRunner`` over a copy of the same store (the
  SQLite file copied with the backup API, the PostgreSQL database with ``CREATE DATABASE ...
  TEMPLATE``), over the stock application recorder of that store, with a ``Projection`` whose
  ``process_event`` applies the same identity fold (``IdentityProjection.apply``) to one event
  in one projection-store transaction that reads the rows it needs, writes them and moves the
  tracking position (the library's exactly-once pattern; no cache kept between events). On
  PostgreSQL the runner uses the stock ``PostgresApplicationRecorder`` and its own LISTEN/NOTIFY
  subscription, unchanged. The stock SQLite recorder has no ``subscribe()``, so there the runner
  gets a recorder subclass whose subscription pulls pages with ``select_notifications`` (the
  library's own ``ListenNotifySubscription``, never notified: a rebuild only reads what is
  there). The reference runs for the first ``--ref-events`` events on SQLite and
  ``--pg-ref-events`` on PostgreSQL (its rate is steady; a full run would take minutes, and on
  PostgreSQL, under 1,000 events/s, far longer: hence its smaller default); with
  ``--ref-events 0`` it runs over all of them on both stores (``--pg-ref-events 0``: on
  PostgreSQL only) and the rows are checked equal to the rebuild's, proving both did the same
  work. Its transactions go through our projection
  stores: on SQLite WAL, ``synchronous=NORMAL`` (no fsync per commit: the generous reference);
  on PostgreSQL one pooled connection per transaction, several round trips per event;
- on SQLite, the same runner again with ``synchronous=FULL`` for ``--stock-ref-events`` events:
  the durability eventsourcing's own SQLite recorders have (they leave SQLite's default), so a
  stock ``SQLiteTrackingRecorder`` view would sync every event like this. The issue's "about 2k
  events/s" for the ProjectionRunner is this configuration.

Targets (issue 3): rebuild >= 50x the reference, and >= 100,000 events/s (the issue sets them
for SQLite; the PostgreSQL rows are shown against the same numbers). PostgreSQL is a throwaway
server (``idstitch.testing.TemporaryPostgres``: fsync off, synchronous_commit off), a fresh
database per measurement.

    python benchmarks/bench_rebuild.py                     # N=100000; reference 20000 / 5000 events
    python benchmarks/bench_rebuild.py --n 5000 --ref-events 0 --json /tmp/rebuild.json
    python benchmarks/bench_rebuild.py --no-postgres       # SQLite only
    python benchmarks/bench_rebuild.py --mix identity      # the identity-heavy workload
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
from urllib.parse import urlsplit

import harness
from eventsourcing.persistence import ListenNotifySubscription, Subscription, Tracking
from eventsourcing.popo import POPOTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.sqlite import SQLiteApplicationRecorder
from harness import Timer, console, fmt_rate, fmt_ratio, rate
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import IdentityProjection
from idstitch.projections.store import LoggedEvent
from idstitch.projections.unit import new_cache

import idstitch

RATIO_TARGET = 50.0
RATE_TARGET = 100_000
APP_NAME = harness.StockDeviceLog.name
Rows = dict[str, list[tuple[str, bytes]]]


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
    """Our folds (identity and device attributes) as an eventsourcing Projection: one store
    transaction per event."""

    name = "IdentityFold"
    store: ClassVar[Any] = None
    fold: ClassVar[IdentityProjection] = IdentityProjection()
    attributes: ClassVar[DeviceAttributesProjection] = DeviceAttributesProjection()
    processed: ClassVar[int] = 0
    done = threading.Event()
    stop_after: ClassVar[int] = 0

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Read the rows the event touches, apply it, write rows and position: one transaction."""
        cls = type(self)
        position = tracking.notification_id
        with cls.store.transaction(IdentityProjection.name) as tx:
            # Both folds in one transaction (ours keeps a position per projection, so two):
            # the generous reading of "the same projection".
            logged = [logged_event(position, domain_event)]
            rows: dict[tuple[str, str], bytes | None] = {}
            for fold in (cls.fold, cls.attributes):
                # Each fold's own unit class (the loop's type is the two folds' common base).
                unit: Any = fold.unit_class(tx, new_cache(fold.row_types), fold.row_types)
                fold.apply_all(unit, logged)
                rows.update(unit.encoded())
            tx.write(rows, position, cls.fold.meta)
        self.view.insert_tracking(tracking)
        cls.processed += 1
        if cls.processed >= cls.stop_after:
            cls.done.set()


# The stores.


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite file (WAL included), through the backup API."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def sqlite_env(path: Path) -> dict[str, str]:
    """The runner's application on the SQLite file, with the subscribable recorder."""
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path),
            "SQLITE_LOCK_TIMEOUT": "30",
            "APPLICATION_RECORDER_TOPIC": f"{__name__}:SubscribableSQLiteRecorder"}


def postgres_env(url: str) -> dict[str, str]:
    """The runner's application on the PostgreSQL database of ``url``, stock recorder."""
    parts = urlsplit(url)
    return {"PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/"), "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432), "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or ""}


def count_events(url: str) -> int:
    """Events stored (rows, not the head: PostgreSQL positions can have gaps)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as con:
            n = int(con.execute("SELECT count(*) FROM idstitch_events").fetchone()[0])
        con.close()
        return n
    import psycopg
    from idstitch.adapters.postgres_log import EVENTS_TABLE

    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
    assert row is not None
    return int(row[0])


# The measurements.


def feed_and_rebuild(
    name: str, url: str, data: Path, compare: bool, parallel: bool = True
) -> tuple[dict[str, Any], Rows]:
    """Ingest the workload into a fresh store, then time ``ws.rebuild()``; the numbers and,
    when ``compare``, the rows after the rebuild (checked equal to those before it)."""
    store: dict[str, Any] = {}
    with idstitch.open(url) as ws:
        with Timer() as f:
            counts = harness.feed(ws, data)
            ws.catch_up()
        events = count_events(url)
        store.update(feed_seconds=f.seconds, events=events, head=ws.log.head(), report=counts)
        console.print(f"{name}: ingest in {f.seconds:.1f}s, {events:,} events in the log; {counts}")
        before = ws.dump() if compare else {}
        with Timer() as r:
            ws.rebuild(parallel=None if parallel else False)
        store["rebuild_seconds"] = r.seconds
        after = ws.dump() if compare else {}
    if before != after:
        raise SystemExit(f"{name}: rebuild gave other rows than the incremental catch-up")
    return store, after


def reference(name: str, url: str, env: dict[str, str], limit: int, events: int,
              expected: Rows, synchronous: str | None = None) -> dict[str, Any]:
    """Run the ProjectionRunner over the log of the store at ``url`` for ``limit`` events (0: all,
    and then compare its rows with ``expected``). ``synchronous``: SQLite's setting for its
    commits (our store's NORMAL when None)."""
    ws = idstitch.open(url, auto_catch_up=False)
    if synchronous is not None:
        ws.rows._conn.execute(f"PRAGMA synchronous={synchronous}")  # type: ignore[attr-defined]
    try:
        ws.rows.reset(ws.projections.names, ws.projections.kinds)
        target = events if limit <= 0 else min(limit, events)
        projection = IdentityFoldProjection
        projection.store, projection.fold = ws.rows, IdentityProjection(ws.anonymous_merge)
        projection.processed, projection.stop_after = 0, target
        projection.done.clear()
        env = {
            **env,
            # The runner's view (its tracking recorder) is in memory: the rows and their position
            # are written by our store, in the same transaction, in the same database as the events.
            f"{projection.name.upper()}_PERSISTENCE_MODULE": "eventsourcing.popo",
        }
        started = time.perf_counter()
        with ProjectionRunner(application_class=harness.StockDeviceLog, projection_class=projection,
                              view_class=POPOTrackingRecorder, env=env) as runner:
            while not projection.done.wait(0.05):
                if runner.is_interrupted.is_set():
                    break
            seconds = time.perf_counter() - started
            processed = projection.processed
        out: dict[str, Any] = {"events": processed, "seconds": seconds}
        if limit <= 0:
            same = ws.dump() == expected
            out["rows_equal"] = same
            console.print(f"{name}: reference rows equal to the rebuild's: "
                          + ("[green]yes[/green]" if same else "[red]NO[/red]"))
        return out
    finally:
        ws.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Feed, rebuild, run the reference, on each store; the numbers."""
    compare = args.ref_events <= 0
    results: dict[str, Any] = {"n_messages": args.n, "mix": args.mix, "ref_events": args.ref_events,
                               "parallel": args.parallel,
                               "pg_ref_events": 0 if compare else args.pg_ref_events, "stores": {}}
    with tempfile.TemporaryDirectory(prefix="idstitch-bench-") as tmp_:
        tmp = Path(tmp_)
        data = tmp / "workload.ndjson"
        harness.write_workload(data, args.n, args.seed, args.mix)

        db = tmp / "idstitch.db"
        console.print(f"workload: {args.n:,} messages ({args.mix} mix)")
        store, after = feed_and_rebuild("sqlite", harness.sqlite_url(db), data, compare,
                                        args.parallel)
        # The runner reads the log with the stock recorder, from eventsourcing's own table (in
        # a file of its own: idstitch's keeps the log in its own tables); the rows go to a copy
        # of the store.
        copy, events = tmp / "reference.db", tmp / "reference-events.db"
        harness.stock_log(db, events)
        copy_database(db, copy)
        store["reference"] = reference("sqlite", harness.sqlite_url(copy), sqlite_env(events),
                                       args.ref_events, store["events"], after)
        if args.stock_ref_events:
            copy_database(db, copy)
            store["stock_reference"] = reference(
                "sqlite", harness.sqlite_url(copy), sqlite_env(events), args.stock_ref_events,
                store["events"], after, synchronous="FULL")
        results["stores"]["sqlite"] = store
        if args.postgres:
            results["stores"]["postgresql"] = run_postgres(data, results["pg_ref_events"],
                                                           args.parallel)
    show(results)
    return results


def run_postgres(data: Path, limit: int, parallel: bool) -> dict[str, Any]:
    """The PostgreSQL rows: a throwaway server; the reference on a copy of the rebuilt database."""
    import psycopg

    from idstitch.testing import TemporaryPostgres

    with TemporaryPostgres() as pg:
        url = pg.create_database("idstitch")
        store, after = feed_and_rebuild("postgresql", url, data, limit <= 0, parallel)
        # Every connection to the source is closed by now, as CREATE DATABASE ... TEMPLATE needs.
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "reference" TEMPLATE "idstitch"')
        ref_url = pg.url("reference")
        store["reference"] = reference("postgresql", ref_url, postgres_env(ref_url), limit,
                                       store["events"], after)
    return store


def show(results: dict[str, Any]) -> None:
    """The results table."""
    lines = []
    for name, store in results["stores"].items():
        ref = store["reference"]
        ref_rate = rate(ref["events"], ref["seconds"])
        ours = rate(store["events"], store["rebuild_seconds"])
        store["reference_events_per_s"], store["rebuild_events_per_s"] = ref_rate, ours
        store["ratio"] = ours / ref_rate if ref_rate else None
        lines.append((name, "eventsourcing ProjectionRunner, our fold, 1 transaction per event, "
                      "commits not synced (our store)", f"{ref['events']:,}",
                      f"{ref['seconds']:.2f}", fmt_rate(ref_rate), "1.00x"))
        ratios = fmt_ratio(store["ratio"], RATIO_TARGET)
        stock = store.get("stock_reference")
        if stock is not None:
            stock_rate = rate(stock["events"], stock["seconds"])
            store["stock_reference_events_per_s"] = stock_rate
            store["stock_ratio"] = ours / stock_rate if stock_rate else None
            lines.append((name, "the same runner, commits synced as eventsourcing's SQLite "
                          "recorders do (synchronous=FULL)", f"{stock['events']:,}",
                          f"{stock['seconds']:.2f}", fmt_rate(stock_rate), "1.00x"))
            ratios += f" / {fmt_ratio(store['stock_ratio'], RATIO_TARGET)} (synced)"
        lines.append((name, "idstitch ws.rebuild()", f"{store['events']:,}",
                      f"{store['rebuild_seconds']:.2f}",
                      fmt_rate(ours) if ours >= RATE_TARGET else f"[red]{fmt_rate(ours)}[/red]",
                      ratios))
    harness.table(f"rebuild of profiles + identity graph from {results['n_messages']:,} messages "
                  f"(targets: >= {RATIO_TARGET:.0f}x the reference, >= {RATE_TARGET:,} events/s)",
                  ("store", "what", "events", "seconds", "events/s", "vs reference"), lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run, print, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="messages to feed (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    harness.add_mix_argument(parser)
    parser.add_argument("--ref-events", type=int, default=20_000,
                        help="events the SQLite reference runs over (default 20000; 0: all, on both "
                             "stores, and compare rows)")
    parser.add_argument("--stock-ref-events", type=int, default=3_000,
                        help="events the SQLite reference with synced commits runs over (default "
                             "3000; 0: skip it)")
    parser.add_argument("--pg-ref-events", type=int, default=5_000,
                        help="events the PostgreSQL reference runs over (default 5000; 0: all, and "
                             "compare rows)")
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure PostgreSQL (default on)")
    parser.add_argument("--one-process", dest="parallel", action="store_false",
                        help="rebuild both projections in this process (default: the device "
                             "attributes in a second one)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args(argv)
    harness.write_json(args.json, {"benchmark": "rebuild", **run(args)})


if __name__ == "__main__":
    main()
