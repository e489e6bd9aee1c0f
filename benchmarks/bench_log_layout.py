"""What the log's layout costs as it grows: the recording process's writes of a real log,
replayed into a fresh SQLite file under another table layout.

Reads the events of an idstitch SQLite file (one ``bench_growth.py --url sqlite:///FILE`` left
behind) in order and appends them again, ``--batch`` events a synced commit (an ingest's
commit: 5,000 messages are about 6,250 identity-mix events), each with a 32-byte chain entry
and, as the file had them, its share of the key store's new keys. Printed, per tenth: the KiB
handed to write calls per event (the WAL's frames and the checkpoints' copies) and the CPU
seconds; at the end the new file's bytes per event. No Python of idstitch's runs: only the
B-trees' pages are measured.

Layouts (``--layout``):

- ``text``: the log as idstitch stored it before it numbered streams (and as eventsourcing
  does): ``stored_events`` with its primary key (originator id as 32 hex digits, version), a
  second B-tree with a random key;
- ``number``: a stream table (text id -> integer) and the events keyed by (stream number,
  version): a third of the index's bytes, the text id stored once a stream (what idstitch's
  SQLite store does now, see ``idstitch.adapters.sqlite_layout``);
- ``none``: no stream index at all (the floor: the events' table, the chain and the keys).

    python benchmarks/bench_log_layout.py                      # a 200k-event store, every layout
    python benchmarks/bench_log_layout.py /tmp/growth.db --layout text
    python benchmarks/bench_log_layout.py /tmp/growth.db --layout number --batch 25000
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import harness
from harness import console, table

import idstitch

LAYOUTS = {
    "text": [harness.STOCK_EVENTS_DDL],
    "number": ["CREATE TABLE streams (originator_id TEXT PRIMARY KEY, number INTEGER NOT NULL) "
               "WITHOUT ROWID",
               "CREATE TABLE stored_events (stream INTEGER, originator_version INTEGER, "
               "topic TEXT, state BLOB)",
               "CREATE UNIQUE INDEX stored_events_stream ON stored_events "
               "(stream, originator_version)"],
    "none": ["CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, "
             "topic TEXT, state BLOB)"],
}
COMMON = ["CREATE TABLE idstitch_chain (position INTEGER PRIMARY KEY, hashes BLOB NOT NULL)",
          "CREATE TABLE idstitch_keys (key_id TEXT PRIMARY KEY, key BLOB) WITHOUT ROWID"]


def written() -> int:
    """Bytes this process handed to write calls so far (Linux ``/proc/self/io``)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar"))


def replay(source: Path, target: Path, layout: str, batch: int, wal_pages: int,
           limit: int | None) -> tuple[list[tuple[float, float]], float]:
    """(KiB written per event, CPU seconds) of each tenth, and the file's bytes per event."""
    with sqlite3.connect(source) as src:
        events = src.execute("SELECT originator_id, originator_version, topic, state FROM "
                             "idstitch_log ORDER BY position LIMIT ?", (limit or -1,)).fetchall()
        keys = src.execute("SELECT key_id, key FROM idstitch_keys").fetchall()
    # The key store keeps no creation order (its table has no rowid): new keys arrive in an
    # order as random as the subjects' hashed ids, not sorted.
    random.Random(0).shuffle(keys)
    n = len(events)
    keys_per_event = len(keys) / n
    db = sqlite3.connect(target, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
    db.execute("PRAGMA cache_size=-65536")  # as the workspace's connection
    db.execute("PRAGMA synchronous=FULL")  # as an append
    for ddl in LAYOUTS[layout] + COMMON:
        db.execute(ddl)
    streams: dict[str, int] = {}
    tenths: list[tuple[float, float]] = []
    keys_done = 0
    w0, c0 = written(), time.process_time()
    for start in range(0, n, batch):
        part = events[start:start + batch]
        db.execute("BEGIN IMMEDIATE")
        if layout == "number":
            new = [(s, streams.setdefault(s, len(streams) + 1)) for s, *_ in part
                   if s not in streams]
            db.executemany("INSERT INTO streams VALUES (?, ?)", new)
            db.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)",
                           [(streams[s], v, t, st) for s, v, t, st in part])
        else:
            db.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)", part)
        last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        db.executemany("INSERT INTO idstitch_chain VALUES (?, ?)",
                       [(p, bytes(32)) for p in range(last - len(part) + 1, last + 1)])
        due = int((start + len(part)) * keys_per_event)
        db.executemany("INSERT INTO idstitch_keys VALUES (?, ?)", keys[keys_done:due])
        keys_done = due
        db.execute("COMMIT")
        if (start + len(part)) * 10 // n > len(tenths):
            w, c = written(), time.process_time()
            tenths.append(((w - w0) / (n / 10) / 1024, c - c0))
            w0, c0 = w, c
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return tenths, target.stat().st_size / n


def made_log(folder: Path, events: int) -> Path:
    """A store of about ``events`` identity-mix events, ingested into ``folder`` (for a run
    given no file: ``make bench``)."""
    data, path = folder / "workload.ndjson", folder / "source.db"
    harness.write_workload(data, round(events / 1.25), 0, "identity")
    console.print(f"ingesting about {events:,} identity-mix events to replay ...")
    with idstitch.open(harness.sqlite_url(path)) as ws, open(data, "rb") as lines:
        ws.ingest(lines)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, nargs="?",
                        help="an idstitch SQLite file to read the log of (default: a store of "
                             "200,000 identity-mix events, made first)")
    parser.add_argument("--layout", choices=[*sorted(LAYOUTS), "all"], default="all")
    parser.add_argument("--batch", type=int, default=6250, help="events a commit (6250)")
    parser.add_argument("--wal-pages", type=int, default=10_000,
                        help="wal_autocheckpoint (the workspace's: 10000)")
    parser.add_argument("--events", type=int, help="only the first EVENTS events")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idstitch-layout-") as tmp:
        source = args.file or made_log(Path(tmp), 200_000)
        for layout in sorted(LAYOUTS) if args.layout == "all" else [args.layout]:
            show(layout, args, *replay(source, Path(tmp) / f"{layout}.db", layout, args.batch,
                                       args.wal_pages, args.events))


def show(layout: str, args: argparse.Namespace, tenths: list[tuple[float, float]],
         size: float) -> None:
    """One layout's tenths and halves."""
    if len(tenths) < 10:
        raise SystemExit("too few events to cut into tenths: give a larger store")
    table(f"{layout} layout, {args.batch:,} events a commit, checkpoint every "
          f"{args.wal_pages:,} pages",
          ["tenth", "KiB written/event", "CPU s"],
          [[i + 1, f"{k:.1f}", f"{c:.2f}"] for i, (k, c) in enumerate(tenths)])
    # Halves, not the last tenth: a checkpoint falls in some tenths and not others.
    first, second = tenths[:5], tenths[5:]
    console.print(f"KiB written per event, first half {sum(k for k, _ in first) / 5:.1f}, "
                  f"second half {sum(k for k, _ in second) / len(second):.1f}; CPU s, first half "
                  f"{sum(c for _, c in first):.1f}, second {sum(c for _, c in second):.1f}; "
                  f"{size:.0f} bytes an event in the file")


if __name__ == "__main__":
    main()
