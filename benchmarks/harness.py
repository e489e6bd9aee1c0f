"""What the benchmarks share: workload files, feeding a workspace, timing, tables, JSON output.

Not a benchmark itself. The bench_*.py scripts import it from this folder (``python
benchmarks/bench_x.py`` puts the folder on ``sys.path``).

Feeding: :func:`feed` uses ``ws.ingest`` when the workspace has it. Otherwise, and only where a
benchmark allows it, :func:`feed_via_commands` maps the Segment messages onto the public commands
itself (one transaction per command): slow, but it puts the same kind of events in the log so
that rebuild and latency can be measured before ingest exists.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import workload
from rich.console import Console
from rich.table import Table

# Piped or redirected output gets a fixed width instead of rich's 80 columns, so tables stay whole.
console = Console(width=None if sys.stdout.isatty() else 150)

AUTO_COLLECTED = frozenset({
    "device_os", "device_model", "device_manufacturer", "app_version", "cio_sdk_version",
    "device_locale", "push_enabled", "timezone", "screen_width", "screen_height", "network_wifi",
    "network_cellular", "network_bluetooth", "ip",
})
"""The device attributes the SDK collects itself (api.md's mapping); other keys are custom."""


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///`` plus an absolute path (so four slashes)."""
    return "sqlite:///" + str(Path(path).resolve())


def write_workload(path: str | Path, n_messages: int, seed: int = 0) -> int:
    """Write the workload as NDJSON; its size in bytes."""
    size = 0
    with open(path, "wb") as out:
        for line in workload.generate(n_messages, seed):
            out.write(line)
            out.write(b"\n")
            size += len(line) + 1
    return size


def has_ingest(ws: Any) -> bool:
    """Whether the workspace has the bulk ingest yet."""
    return callable(getattr(ws, "ingest", None))


def ingest(ws: Any, messages: Iterable[Any], batch_size: int | None = None) -> Any:
    """``ws.ingest``, passing ``batch_size`` only when given and accepted."""
    if batch_size is not None and "batch_size" in inspect.signature(ws.ingest).parameters:
        return ws.ingest(messages, batch_size=batch_size)
    return ws.ingest(messages)


def report_counts(report: Any) -> dict[str, int]:
    """accepted / duplicates / ignored / rejected of an ingest report, as numbers."""
    out = {}
    for name in ("accepted", "duplicates", "ignored", "rejected"):
        value = getattr(report, name, None)
        out[name] = len(value) if isinstance(value, Sequence) else int(value or 0)
    return out


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def feed_via_commands(ws: Any, lines: Iterable[bytes | str]) -> dict[str, int]:
    """Map Segment messages onto the public commands (the fallback while ingest is missing).

    A "Device Created or Updated" becomes up to three commands (token, collected and custom
    attributes); the last two get derived message ids, because a device records one message id
    once. Counts as an ingest report would.
    """
    from idstitch.errors import IdstitchError

    decode = msgspec.json.Decoder().decode
    counts: Counter[str] = Counter()
    for line in lines:
        try:
            msg = decode(line)
            ctx = msg.get("context") or {}
            device_id = (ctx.get("device") or {}).get("id") or msg.get("anonymousId")
            common = {"message_id": msg.get("messageId"), "timestamp": _time(msg.get("timestamp"))}
            sent = {"sent_at": _time(msg.get("sentAt"))}
            kind, event = msg.get("type"), msg.get("event")
            if kind == "identify" and msg.get("userId") is not None:
                done = [ws.identify(device_id, msg["userId"], msg.get("traits"), **common, **sent)]
            elif kind == "identify":
                done = [ws.set_profile_attributes(device_id, msg.get("traits"), **common, **sent)]
            elif kind == "track" and event == "Device Created or Updated":
                props = msg.get("properties") or {}
                token = ctx.get("device", {}).get("token") or props.get("token")
                mid = common["message_id"]
                done = []
                if token:
                    done.append(ws.register_device_token(
                        device_id, token, platform=ctx.get("device", {}).get("type"), **common, **sent))
                auto = {k: v for k, v in props.items() if k in AUTO_COLLECTED}
                custom = {k: v for k, v in props.items() if k not in AUTO_COLLECTED and k != "token"}
                if auto:
                    done.append(ws.collect_device_attributes(
                        device_id, auto, message_id=f"{mid}:collected", timestamp=common["timestamp"],
                        **sent))
                if custom:
                    done.append(ws.set_device_attributes(
                        device_id, custom, message_id=f"{mid}:custom", timestamp=common["timestamp"],
                        **sent))
            elif kind == "track" and event == "Device Deleted":
                token = ctx.get("device", {}).get("token") or (msg.get("properties") or {}).get("token")
                done = [ws.remove_device_token(device_id, token, **common)]
            else:
                counts["ignored"] += 1
                continue
        except (msgspec.DecodeError, IdstitchError, TypeError, AttributeError, ValueError):
            counts["rejected"] += 1
            continue
        counts["accepted" if any(p is not None for p in done) else "duplicates"] += 1
    return {k: counts[k] for k in ("accepted", "duplicates", "ignored", "rejected")}


def feed(ws: Any, path: str | Path, *, batch_size: int | None = None,
         allow_commands: bool = True) -> tuple[str, dict[str, int]]:
    """Put a workload file into the workspace: ("ingest" | "commands", counts)."""
    with open(path, "rb") as lines:
        if has_ingest(ws):
            return "ingest", report_counts(ingest(ws, lines, batch_size))
        if not allow_commands:
            raise RuntimeError("ws.ingest is missing")
        return "commands", feed_via_commands(ws, lines)


def lines_of(path: str | Path) -> Iterator[bytes]:
    """The lines of an NDJSON file, streamed."""
    with open(path, "rb") as f:
        yield from f


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
