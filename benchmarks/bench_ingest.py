"""Bulk ingest throughput: ``ws.ingest`` of N generated SDK messages, against reference points.

Measures, in one run and on the same machine:

- idstitch: ``ws.ingest`` of N Segment-spec messages (benchmarks/workload.py, streamed from an
  NDJSON file) into a fresh SQLite file and a fresh PostgreSQL database, identity rules included;
  then the time of the ``ws.catch_up()`` that follows (zero when ingest already caught up). Once
  at the default (a large input projects in a second process, ``idstitch.child``): the
  best of three runs, each into a fresh store, as for the raw references below; and once with
  ``parallel=False`` (everything in this process);
  "Events" are the events idstitch recorded (``ws.log.head()`` on SQLite, a row count on
  PostgreSQL), so rates are comparable with the references below;
- raw ``sqlite3``: ``executemany`` in one transaction of as many rows of the same mean payload
  size into a minimal event table (integer position primary key, unique (stream, version),
  payload blob), WAL mode like the library's recorder; the best of three runs, each into a
  fresh file (its one commit syncs ~60 MB, and single runs varied 92k-167k rows/s);
- raw psycopg ``COPY`` (binary) of as many rows of the same size into the same minimal table,
  also the best of three;
- stock eventsourcing 9.5: an ``Application`` with its default JSON transcoder appending as many
  events, 100 aggregates per ``save()``, no identity rules at all, on SQLite and PostgreSQL;
  the best of three runs, each into a fresh store, as for idstitch;
- the floor (SQLite): the part of an ingest that runs in C whatever the Python around it does:
  decoding every line with the ingest's typed msgspec decoder, encoding the events idstitch
  recorded with its codec, and inserting those very rows into a fresh idstitch file in
  transactions of the ingest's size, synced as ingest syncs them. An ingest whose every Python
  rule cost nothing would take this long; the gap between the floor and 1/0.35 of the raw time
  is what all the identity rules may cost for the 0.35x target.

Targets (issue 3): ingest >= 0.35 of the raw rate (SQLite executemany, PostgreSQL COPY), and
>= 2x the stock library's rate. PostgreSQL is a throwaway server (``idstitch.testing.
TemporaryPostgres``: fsync off, synchronous_commit off), the same for every PostgreSQL row.

    python benchmarks/bench_ingest.py                      # N=100000, SQLite and PostgreSQL
    python benchmarks/bench_ingest.py --n 20000 --no-postgres --json /tmp/ingest.json
    python benchmarks/bench_ingest.py --mix identity           # the identity-heavy workload
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any

import harness
import msgspec
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from harness import Timer, console, fmt_rate, fmt_ratio, rate
from idstitch.adapters import segment
from idstitch.adapters.codec import EventCodec

import idstitch
from idstitch.service.ingest import INGEST_BATCH

RAW_TARGET = 0.35
RAW_RUNS = 3
RUNS = 3
"""Runs of the default ingest (each into a fresh store); the fastest counts, as for raw."""
STOCK_TARGET = 2.0
AGGREGATES_PER_SAVE = 100


class StockDevice(Aggregate):
    """The stock library's way: an aggregate whose events carry an attribute dict."""

    def __init__(self, device_id: str, attributes: dict[str, Any]) -> None:
        self.device_id = device_id
        self.attributes = attributes

    @event("Updated")
    def update(self, attributes: dict[str, Any]) -> None:
        """Replace the attributes (one event)."""
        self.attributes = attributes


# The references.


def minimal_rows(n_rows: int, n_streams: int, payload_size: int) -> list[tuple[uuid.UUID, int, bytes]]:
    """Rows for the raw references: streams round robin (versions 1, 2, ...), random payloads."""
    streams = [uuid.UUID(bytes=os.urandom(16)) for _ in range(n_streams)]
    return [(streams[i % n_streams], i // n_streams + 1, os.urandom(payload_size))
            for i in range(n_rows)]


def raw_sqlite(path: Path, rows: list[tuple[uuid.UUID, int, bytes]]) -> float:
    """Seconds for one executemany of the rows in one transaction into a minimal table."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, "
                "version INTEGER NOT NULL, payload BLOB NOT NULL, UNIQUE (stream, version))")
    # Text stream ids as the library's SQLite recorder stores them; converted outside the timing.
    params = [(s.hex, v, p) for s, v, p in rows]
    with Timer() as t:
        con.execute("BEGIN")
        con.executemany("INSERT INTO events (stream, version, payload) VALUES (?, ?, ?)", params)
        con.execute("COMMIT")
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == len(rows)
    con.close()
    return t.seconds


def raw_copy(url: str, rows: list[tuple[uuid.UUID, int, bytes]]) -> float:
    """Seconds for one binary COPY of the rows in one transaction into a minimal table."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE events (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                     "stream uuid NOT NULL, version integer NOT NULL, payload bytea NOT NULL, "
                     "UNIQUE (stream, version))")
        conn.commit()
        with Timer() as t, conn.transaction(), conn.cursor() as cur, cur.copy(
            "COPY events (stream, version, payload) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "int4", "bytea"])
            for row in rows:
                copy.write_row(row)
        count = conn.execute("SELECT count(*) FROM events").fetchone()
        assert count is not None
        assert count[0] == len(rows)
    return t.seconds


def stock_attributes(app: Application[Any], payload_size: int) -> dict[str, Any]:
    """Attributes whose stored Updated event (JSON) is about ``payload_size`` bytes."""
    attrs: dict[str, Any] = {"device_os": "18.0", "app_version": "4.14.2", "push_enabled": True,
                             "prefs": {"theme": "dark", "notifications": {"email": True}}}
    probe = StockDevice(device_id="probe", attributes=attrs)
    probe.update(attributes=attrs)
    updated = probe.collect_events()[-1]
    overhead = len(app.mapper.to_stored_event(updated).state)
    attrs["padding"] = "x" * max(0, payload_size - overhead - len(',"padding":""'))
    return attrs


def stock_append(env: dict[str, str], n_events: int, n_streams: int, payload_size: int) -> float:
    """Seconds for the stock Application to append n_events, 100 aggregates per save."""
    app: Application[Any] = Application(env=env)
    attrs = stock_attributes(app, payload_size)
    n_streams = max(n_streams, AGGREGATES_PER_SAVE)
    devices: list[StockDevice] = []
    with Timer() as t:
        i = 0
        while i < n_events:
            batch = []
            for j in range(i, min(i + AGGREGATES_PER_SAVE, n_events)):
                k = j % n_streams
                if k == len(devices):
                    devices.append(StockDevice(device_id=f"device-{k}", attributes=dict(attrs, seq=j)))
                else:
                    devices[k].update(attributes=dict(attrs, seq=j))
                batch.append(devices[k])
            app.save(*batch)
            i += len(batch)
    head = app.recorder.max_notification_id()
    app.close()
    assert head == n_events, (head, n_events)
    return t.seconds


def floor_seconds(data: Path, source: Path, targets: list[Path], n_messages: int,
                  batch_size: int) -> dict[str, float]:
    """The C work of an ingest alone, the best of one run per target file: decode the lines,
    encode the recorded events, insert the recorded rows in transactions of ``batch_size``
    messages' worth of events, each synced."""
    con = sqlite3.connect(source)
    rows = con.execute("SELECT originator_id, originator_version, topic, state FROM idstitch_log "
                       "ORDER BY position").fetchall()
    con.close()
    codec = EventCodec()
    events = codec.decode_all(state for _, _, _, state in rows)
    decoder: msgspec.json.Decoder[segment.Message] = msgspec.json.Decoder(segment.Message)
    lines = [line for line in data.read_bytes().splitlines() if decodes(decoder, line)]
    encode = codec.encoder()
    per_batch = max(1, round(len(rows) * batch_size / n_messages))
    runs = []
    for target in targets:
        with Timer() as decoding:
            for line in lines:
                decoder.decode(line)
        with Timer() as encoding:
            for event in events:
                encode(event)
        # The reference the issue names: the same rows into eventsourcing's own table (random
        # stream ids in its key), whatever layout idstitch's file has.
        con = sqlite3.connect(target, isolation_level=None)
        con.execute(harness.STOCK_EVENTS_DDL)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA wal_autocheckpoint=10000")
        con.execute("PRAGMA synchronous=FULL")
        with Timer() as inserting:
            for start in range(0, len(rows), per_batch):
                con.execute("BEGIN IMMEDIATE")
                con.executemany("INSERT INTO stored_events (originator_id, originator_version, "
                                "topic, state) VALUES (?, ?, ?, ?)", rows[start:start + per_batch])
                con.execute("COMMIT")
        con.close()
        runs.append({"decode": decoding.seconds, "encode": encoding.seconds,
                     "insert": inserting.seconds,
                     "seconds": decoding.seconds + encoding.seconds + inserting.seconds})
    return min(runs, key=lambda run: run["seconds"])


def decodes(decoder: msgspec.json.Decoder[segment.Message], line: bytes) -> bool:
    """Whether the line decodes (the workload's few bad lines are left out of the floor)."""
    try:
        decoder.decode(line)
    except msgspec.DecodeError:
        return False
    return True


# idstitch.


def ingest_best(urls: list[str], data: Path, batch_size: int | None) -> dict[str, Any]:
    """The fastest of several ingests of the file, each into its own fresh store."""
    runs = [ingest_once(url, data, batch_size) for url in urls]
    best = min(runs, key=lambda r: r["seconds"] + r["catch_up_seconds"])
    return {**best, "runs_seconds": [round(r["seconds"] + r["catch_up_seconds"], 3) for r in runs]}


def ingest_once(url: str, data: Path, batch_size: int | None,
                parallel: bool | None = None) -> dict[str, Any]:
    """Ingest the file into a fresh store: seconds, catch-up seconds, report."""
    options: dict[str, Any] = {"parallel": parallel}
    if batch_size is not None:
        options["batch_size"] = batch_size
    with idstitch.open(url) as ws:
        with Timer() as t, open(data, "rb") as lines:
            report = ws.ingest(lines, **options)
        with Timer() as c:
            ws.catch_up()
        return {"seconds": t.seconds, "catch_up_seconds": c.seconds,
                "report": harness.report_counts(report), "head": ws.log.head()}


def sqlite_shape(path: Path) -> tuple[int, int, int]:
    """(events, distinct devices, mean stored payload bytes) of an idstitch SQLite file."""
    con = sqlite3.connect(path)
    n, devices, size = con.execute(
        "SELECT count(*), count(DISTINCT originator_id), avg(length(state)) FROM idstitch_log"
    ).fetchone()
    con.close()
    return int(n), int(devices), round(size or 0)


def postgres_shape(url: str) -> tuple[int, int, int]:
    """The same for PostgreSQL: rows counted (positions can have gaps), not the head."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT originator_id), avg(length(state)) "
                           "FROM idstitch_events").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), round(row[2] or 0)


# The run.


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement; the numbers."""
    results: dict[str, Any] = {"n_messages": args.n, "mix": args.mix, "batch_size": args.batch,
                               "stores": {}}
    with tempfile.TemporaryDirectory(prefix="idstitch-bench-") as tmp_:
        tmp = Path(tmp_)
        data = tmp / "workload.ndjson"
        with Timer() as g:
            size = harness.write_workload(data, args.n, args.seed, args.mix)
        console.print(f"workload: {args.n:,} messages ({args.mix} mix), {size / args.n:.0f} bytes per line "
                      f"(generated in {g.seconds:.1f}s)")
        results["bytes_per_line"] = round(size / args.n)

        db = tmp / "idstitch0.db"
        sqlite_run = ingest_best([harness.sqlite_url(tmp / f"idstitch{i}.db") for i in range(RUNS)],
                                 data, args.batch)
        shape = sqlite_shape(db)
        assert shape[0] == sqlite_run["head"], "events counted differ from the log head"
        n_events, n_devices, payload = shape
        results["events"], results["devices"], results["payload_bytes"] = shape
        console.print(f"events: {n_events:,} on {n_devices:,} devices, {payload} bytes of payload "
                      "each")
        rows = minimal_rows(n_events, n_devices, payload)

        store: dict[str, Any] = {"idstitch": sqlite_run}
        store["idstitch_one_process"] = ingest_once(harness.sqlite_url(tmp / "one.db"), data,
                                                    args.batch, parallel=False)
        # Best of RAW_RUNS, each into a fresh file: a single run's commit syncs ~60 MB and
        # moved 92k-167k rows/s between runs; the best is the fairest floor.
        store["raw_seconds"] = min(raw_sqlite(tmp / f"raw{i}.db", rows) for i in range(RAW_RUNS))
        store["floor"] = floor_seconds(data, db, [tmp / f"floor{i}.db" for i in range(RAW_RUNS)],
                                       args.n, args.batch or INGEST_BATCH)
        # The best of as many runs as idstitch's, each into a fresh file: its rate moved
        # 12.4k-16.9k events/s from run to run, more than idstitch's.
        store["stock_seconds"] = min(stock_append(
            {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp / f"stock{i}.db")},
            n_events, n_devices, payload) for i in range(RUNS))
        results["stores"]["sqlite"] = store

        if args.postgres:
            results["stores"]["postgresql"] = run_postgres(args, data, rows, n_devices, payload)
    show(results)
    return results


def run_postgres(args: argparse.Namespace, data: Path, rows: list[tuple[uuid.UUID, int, bytes]],
                 n_devices: int, payload: int) -> dict[str, Any]:
    """The PostgreSQL rows: a throwaway server, one database per measurement."""
    from idstitch.testing import TemporaryPostgres

    store: dict[str, Any] = {}
    with TemporaryPostgres() as pg:
        n_events = len(rows)
        urls = [pg.create_database(f"idstitch{i}") for i in range(RUNS)]
        url = urls[0]
        run_ = ingest_best(urls, data, args.batch)
        events, _, pg_payload = postgres_shape(url)
        run_["events"], run_["payload_bytes"] = events, pg_payload
        store["idstitch"] = run_
        one = ingest_once(pg.create_database("one_process"), data, args.batch, parallel=False)
        one["events"] = events
        store["idstitch_one_process"] = one
        if events != n_events:
            # Same messages, same rules: the counts should agree; use PostgreSQL's own.
            console.print(f"[yellow]PostgreSQL recorded {events:,} events, SQLite {n_events:,}"
                          "[/yellow]")
            rows = minimal_rows(events, n_devices, payload)
            n_events = events
        store["raw_seconds"] = min(raw_copy(pg.create_database(f"raw{i}"), rows)
                                   for i in range(RAW_RUNS))
        stock_runs = []
        for i in range(RUNS):
            stock_url = pg.create_database(f"stock{i}")
            env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": f"stock{i}",
                   "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(pg.port),
                   "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": ""}
            assert stock_url.endswith(f"/stock{i}")
            stock_runs.append(stock_append(env, n_events, n_devices, payload))
        store["stock_seconds"] = min(stock_runs)
        store["events"] = n_events
    return store


def show(results: dict[str, Any]) -> None:
    """The results table."""
    lines = []
    for name, store in results["stores"].items():
        n_events = store.get("events", results["events"])
        raw = rate(n_events, store["raw_seconds"])
        stock = rate(n_events, store["stock_seconds"])
        store["raw_events_per_s"], store["stock_events_per_s"] = raw, stock
        raw_name = "raw sqlite3 executemany, 1 tx" if name == "sqlite" else "raw psycopg COPY binary, 1 tx"
        lines.append((name, raw_name, f"{n_events:,}", f"{store['raw_seconds']:.2f}", fmt_rate(raw),
                      "-", "1.00x", "-"))
        lines.append((name, "stock eventsourcing, JSON, 100 aggregates/save", f"{n_events:,}",
                      f"{store['stock_seconds']:.2f}", fmt_rate(stock), "-",
                      fmt_ratio(stock / raw), "1.00x"))
        floor = store.get("floor")
        if floor is not None:
            floor_rate = rate(n_events, floor["seconds"])
            store["floor_vs_raw"] = floor_rate / raw
            lines.append((name, "floor: decode + encode + insert, no Python rules "
                          f"({floor['decode']:.2f} + {floor['encode']:.2f} + "
                          f"{floor['insert']:.2f} s)", f"{n_events:,}", f"{floor['seconds']:.2f}",
                          fmt_rate(floor_rate), "-", fmt_ratio(floor_rate / raw), "-"))
        for key, what in (("idstitch_one_process",
                           "idstitch ws.ingest(parallel=False): one process"),
                          ("idstitch", "idstitch ws.ingest (rules included; projects in a 2nd "
                                       "process)")):
            run_ = store.get(key)
            if run_ is None:
                continue
            events = run_.get("events", run_["head"])
            ev_rate = rate(events, run_["seconds"])
            run_["events_per_s"] = ev_rate
            run_["messages_per_s"] = rate(results["n_messages"], run_["seconds"])
            run_["vs_raw"], run_["vs_stock"] = ev_rate / raw, ev_rate / stock
            lines.append((name, what, f"{events:,}", f"{run_['seconds']:.2f}", fmt_rate(ev_rate),
                          fmt_rate(run_["messages_per_s"]), fmt_ratio(run_["vs_raw"], RAW_TARGET),
                          fmt_ratio(run_["vs_stock"], STOCK_TARGET)))
            total = run_["seconds"] + run_["catch_up_seconds"]
            if run_["catch_up_seconds"] > 0.05 * total:
                both = rate(events, total)
                lines.append((name, "  ... plus the catch_up() after it", f"{events:,}",
                              f"{total:.2f}", fmt_rate(both),
                              fmt_rate(rate(results["n_messages"], total)),
                              fmt_ratio(both / raw, RAW_TARGET), fmt_ratio(both / stock, STOCK_TARGET)))
    harness.table(f"ingest of {results['n_messages']:,} messages "
                  f"(targets: >= {RAW_TARGET} of raw, >= {STOCK_TARGET:.0f}x stock)",
                  ("store", "what", "events", "seconds", "events/s", "messages/s", "vs raw", "vs stock"),
                  lines)
    for name, store in results["stores"].items():
        if "floor" in store:
            budget = store["raw_seconds"] / RAW_TARGET - store["floor"]["seconds"]
            store["rules_budget_seconds"] = budget
            console.print(f"{name}: at {RAW_TARGET}x of raw, ingest may take "
                          f"{store['raw_seconds'] / RAW_TARGET:.2f} s; the floor takes "
                          f"{store['floor']['seconds']:.2f} s, leaving {budget:.2f} s "
                          f"({budget / results['n_messages'] * 1e6:.1f} us a message) for "
                          "every Python rule of the recording process, and its waits for the "
                          "projecting child")
        console.print(f"{name} ingest report: {store['idstitch']['report']}")


def encryption_ab(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest with and without encryption (IDSTITCH_ENCRYPTION=off), alternating, on fresh
    SQLite files, one process: the same run's ratio is what the target (>= 0.8) is about.
    With ``--ab-chain``, the runs "off" also write no hash chain (SQLite's ``chain_append``
    replaced by one that does nothing, in this process): issue 15's target is about both."""
    from idstitch.adapters import sqlite_log

    log_module: Any = sqlite_log  # its chain_append is patched (an import, not an export)
    linked = log_module.chain_append
    runs: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "workload.ndjson"
        harness.write_workload(data, args.n, args.seed, args.mix)
        for i in range(args.ab):
            for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                os.environ["IDSTITCH_ENCRYPTION"] = mode
                if args.ab_chain and mode == "off":
                    log_module.chain_append = lambda *a: None
                try:
                    result = ingest_once(harness.sqlite_url(tmp / f"{mode}{i}.db"), data,
                                         args.batch, parallel=False)
                finally:
                    del os.environ["IDSTITCH_ENCRYPTION"]
                    log_module.chain_append = linked
                runs[mode].append(result["seconds"])
    best = {mode: min(seconds) for mode, seconds in runs.items()}
    ratio = best["off"] / best["on"]
    what = "encryption and chain" if args.ab_chain else "encryption"
    console.print(f"{what} A/B ({args.mix} mix, {args.n:,} messages, best of {args.ab}): "
                  f"on {args.n / best['on']:,.0f} msg/s, off {args.n / best['off']:,.0f} msg/s, "
                  f"on/off {ratio:.2f} (target >= 0.80)")
    return {"mix": args.mix, "n_messages": args.n, "runs": runs, "on_over_off": ratio,
            "chain_too": args.ab_chain}


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run, print, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="messages to ingest (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    harness.add_mix_argument(parser)
    parser.add_argument("--batch", type=int, default=None, help="ingest batch size (default: the library's)")
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure PostgreSQL (default on)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    parser.add_argument("--ab", type=int, default=0, metavar="K",
                        help="instead: ingest K times with and K times without encryption, "
                             "alternating (the encryption A/B)")
    parser.add_argument("--ab-chain", action="store_true",
                        help="with --ab: the runs without encryption also write no hash chain")
    args = parser.parse_args(argv)
    if args.ab:
        harness.write_json(args.json, {"benchmark": "ingest-encryption-ab",
                                       **encryption_ab(args)})
        return
    harness.write_json(args.json, {"benchmark": "ingest", **run(args)})


if __name__ == "__main__":
    main()
