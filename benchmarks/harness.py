"""What the benchmarks share: workload files, feeding a workspace, timing, tables, JSON output.

Not a benchmark itself. The bench_*.py scripts import it from this folder (``python
benchmarks/bench_x.py`` puts the folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import workload
from eventsourcing.application import Application
from eventsourcing.persistence import Mapper
from idstitch.adapters.codec import EventCodec, StructMapper
from idstitch.adapters.eventlog import DeviceLog
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from idstitch import IngestReport, Workspace

# Piped or redirected output gets a fixed width instead of rich's 80 columns, so tables stay whole.
console = Console(width=None if sys.stdout.isatty() else 150)

STOCK_EVENTS_DDL = ("CREATE TABLE IF NOT EXISTS stored_events (originator_id TEXT, "
                    "originator_version INTEGER, topic TEXT, state BLOB, "
                    "PRIMARY KEY (originator_id, originator_version))")
"""eventsourcing 9.5's SQLite events table (its ``SQLiteApplicationRecorder``): the stream id
as text in every row and in the primary key. The raw-insert references write to it."""



def stock_log(source: Path, target: Path) -> None:
    """Write the log of the idstitch SQLite file ``source`` into eventsourcing's own table
    (:data:`STOCK_EVENTS_DDL`, positions kept as its rowids) in the SQLite file ``target``
    (``source`` itself: in place, beside idstitch's tables, its tombstone replaced): what the
    stock library's recorder reads, for the references that follow a log with it."""
    with contextlib.closing(sqlite3.connect(target)) as db:
        events = "idstitch_log"
        if Path(target).resolve() != Path(source).resolve():
            db.execute("ATTACH DATABASE ? AS source", (str(source),))
            events = "source.idstitch_log"
        db.execute("DROP TABLE IF EXISTS main.stored_events")
        db.execute(STOCK_EVENTS_DDL)
        with db:
            db.execute("INSERT INTO main.stored_events (rowid, originator_id, originator_version, "
                       f"topic, state) SELECT position, originator_id, originator_version, topic, "
                       f"state FROM {events} ORDER BY position")


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///`` plus an absolute path (so four slashes)."""
    return "sqlite:///" + str(Path(path).resolve())


def write_workload(path: str | Path, n_messages: int, seed: int = 0,
                   mix: str = "attributes") -> int:
    """Write the workload (``mix``: see workload.MIXES) as NDJSON; its size in bytes."""
    size = 0
    with open(path, "wb") as out:
        for line in workload.generate(n_messages, seed, mix):
            out.write(line)
            out.write(b"\n")
            size += len(line) + 1
    return size


def add_mix_argument(parser: Any) -> None:
    """``--mix``, the workload's mix of messages (the scripts share it)."""
    parser.add_argument("--mix", choices=sorted(workload.MIXES), default="attributes",
                        help="workload mix: attributes (default) or identity (see workload.py)")


def report_counts(report: IngestReport) -> dict[str, int]:
    """accepted / duplicates / ignored / rejected of an ingest report, as numbers."""
    return {"accepted": report.accepted, "duplicates": report.duplicates,
            "ignored": report.ignored, "rejected": len(report.rejected)}


def feed(ws: Workspace, path: str | Path) -> dict[str, int]:
    """``ws.ingest`` of a workload file, streamed; the report's counts."""
    with open(path, "rb") as lines:
        return report_counts(ws.ingest(lines))


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``. It collects garbage before starting, so
    the timed block is not charged for garbage made before it."""

    seconds: float

    def __enter__(self) -> Timer:
        gc.collect()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of the samples, by linear interpolation."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=1000, method="inclusive")[round(p * 10) - 1]


def rate(count: float, seconds: float) -> float:
    """count / seconds, 0 when nothing was timed."""
    return count / seconds if seconds > 0 else 0.0


def fmt_rate(value: float | None) -> str:
    """A rate for a table cell."""
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None, target: float | None = None, *, at_most: bool = False) -> str:
    """A ratio, green when it meets the target, red when not."""
    if value is None:
        return "-"
    text = f"{value:.2f}x"
    if target is None:
        return text
    ok = value <= target if at_most else value >= target
    return f"[green]{text}[/green]" if ok else f"[red]{text}[/red]"


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a results table."""
    t = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*[str(cell) for cell in row])
    console.print(t)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write the numbers with a little context (machine, time) when ``--json FILE`` was given."""
    if not path:
        return
    data = {"recorded_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), **data}
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
    console.print(f"numbers written to {path}")


class StockDeviceLog(Application[UUID]):
    """The device log as a stock eventsourcing ``Application``: the store's own recorder and
    idstitch's codec, none of the fast paths. What eventsourcing's ``ProjectionRunner``
    follows in the references (``DeviceLog`` itself insists on a fast log of its own)."""

    name = DeviceLog.name

    def construct_mapper(self) -> Mapper[UUID]:
        return StructMapper(EventCodec())
