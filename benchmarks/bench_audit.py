"""The audit's read latency: ``history``, ``profile_as_of`` and ``explain`` of one heavy person,
on SQLite files holding logs of different lengths.

For each size, a fresh SQLite file is filled by ``ws.ingest`` with generated traffic
(``workload.py``, ``--mix``) until the log holds about that many events, with one audited
person's traffic spread evenly through it: about ``--person-events`` events on 3 devices, two
of which start anonymous (attributes, tokens, collected device attributes) and are merged into
the person when they identify (2 merges); then attribute updates on all three, token refreshes,
device attributes, and late messages (older client times) among them. Then, warm (after
``--warmup`` calls), ``--calls`` timed calls of each:

- ``ws.history(person)``: every Change of the person (about ``--person-events`` of them);
- ``ws.profile_as_of(person, position)``: at the middle of the log;
- ``ws.explain(person, "plan")``: an attribute written hundreds of times, late writes included.

Targets (issue 10): history <= 50 ms, profile_as_of <= 50 ms, explain <= 10 ms (p50, warm), and
none growing with the rest of the log (the sizes side by side: a 10x longer log should not cost
more than noise). The first call of each (cold: nothing of the person decoded or cached by
SQLite yet) is shown too.

With ``--undone``, also: one of the person's anonymous merges is undone (``ws.unmerge``) and
``profile_as_of`` at the middle of the log (after the merge, before its undo) timed before and
after (after the undo the answer replays the log up to that position: it grows with the log,
and must not change).

    python benchmarks/bench_audit.py                                  # 100k and 1M events
    python benchmarks/bench_audit.py --sizes 100000 --mix identity --undone
    python benchmarks/bench_audit.py --sizes 100000 --calls 10 --json /tmp/audit.json
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import harness
import msgspec
import workload
from harness import console, percentile
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import idstitch

PERSON = "audit-subject@example.com"
DEVICES = ("audit-phone", "audit-tablet", "audit-laptop")
TARGETS_MS = {"history": 50.0, "profile_as_of": 50.0, "explain": 10.0}


def person_lines(n_events: int, seed: int) -> list[bytes]:
    """The audited person's messages, in order: about ``n_events`` events."""
    rng = random.Random(seed)
    encode = msgspec.json.encode
    t = workload.START
    lines: list[bytes] = []
    count = 0

    def message(kind: str, device: str, **fields: Any) -> None:
        nonlocal t, count
        t += timedelta(seconds=rng.randint(1, 90))
        late = rng.random() < 0.05
        stamp = t - timedelta(hours=rng.randint(1, 48)) if late else t
        body = {"type": kind, "messageId": f"audit-{len(lines)}", "anonymousId": f"anon-{device}",
                "timestamp": stamp.isoformat(), "context": {"device": {"id": device}}, **fields}
        lines.append(encode(body))
        count += 3 if kind == "track" else 1  # a device update: token, collected, custom

    def device_update(device: str) -> None:
        message("track", device, event="Device Created or Updated",
                properties={"device_os": rng.choice(("17.4", "17.5", "18.0")),
                            "app_version": rng.choice(("4.1", "4.2")), "push_enabled": True,
                            "tier": rng.choice(("a", "b"))},
                context={"device": {"id": device, "token": f"tok-{device}-{rng.randint(1, 9)}",
                                    "type": "ios"}})

    # Two devices anonymous for a while, the third identified from the start.
    for device in DEVICES[:2]:
        device_update(device)
        message("identify", device, traits={"plan": "free", "theme": rng.choice(("dark", "light"))})
    message("identify", DEVICES[2], userId=PERSON, traits={"first_name": "Audrey", "plan": "trial"})
    for device in DEVICES[:2]:
        message("identify", device, userId=PERSON)  # a merge each
    while count < n_events:
        device = rng.choice(DEVICES)
        roll = rng.random()
        if roll < 0.45:
            message("identify", device, traits={"plan": rng.choice(("free", "pro", "team")),
                                                 "visits": rng.randint(1, 500)})
        elif roll < 0.60:
            message("identify", device, userId=PERSON,
                    traits={"plan": rng.choice(("pro", "team")), "last_seen": t.isoformat()})
        else:
            device_update(device)
    return lines


def stream(target_events: int, person: list[bytes], mix: str, seed: int) -> Iterator[bytes]:
    """Generated traffic with the person's lines spread evenly through it: about
    ``target_events`` events (the workload makes about 1.45 events a message)."""
    messages = int(target_events / 1.45)
    every = max(1, messages // max(1, len(person)))
    kwargs = {"mix": mix} if mix != "attribute" else {}
    mine = iter(person)
    for i, line in enumerate(workload.generate(messages, seed, **kwargs)):
        yield line
        if i % every == 0:
            yield from _take(mine)
    yield from mine


def _take(lines: Iterator[bytes]) -> list[bytes]:
    found = next(lines, None)
    return [] if found is None else [found]


def timed(url: str, call: Callable[[Any], Any], warmup: int, calls: int) -> dict[str, float]:
    """Cold, then p50 / p90 / max of ``calls`` warm calls, in milliseconds. Cold: the first
    call of a workspace just opened on the store (nothing of the person computed or kept by
    idstitch yet; the operating system's file cache is warm from the fill)."""
    with idstitch.open(url) as fresh:
        fresh.catch_up()
        start = time.perf_counter()
        call(fresh)
        cold = (time.perf_counter() - start) * 1000
    with idstitch.open(url) as ws:
        return _warm(lambda: call(ws), cold, warmup, calls)


def _warm(call: Callable[[], Any], cold: float, warmup: int, calls: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"cold": cold, "p50": percentile(samples, 50), "p90": percentile(samples, 90),
            "max": samples[-1]}


def measure(size: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Fill a fresh SQLite file to about ``size`` events; time the three audit calls."""
    person = person_lines(args.person_events, args.seed)
    url = harness.sqlite_url(folder / f"audit-{size}.db")
    with idstitch.open(url) as ws:
        columns = (TextColumn(f"filling {size:,} events"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("fill", total=int(size / 1.45) + len(person))
            report = ws.ingest(stream(size, person, args.mix, args.seed),
                               progress=lambda n: bar.advance(task, n))
        head = ws.log.head()
        history = ws.history(PERSON)
        merges = [m.kind for m in ws.merges(PERSON)]
        devices = {c.device_id for c in history}
        console.print(f"{size:,}: {head:,} events in the log; the person: {len(history):,} "
                      f"events on {len(devices)} devices, merges {merges.count('merged')}; "
                      f"ingest {harness.report_counts(report)}")
    middle = head // 2
    return {
        "events": head, "person_events": len(history), "devices": len(devices),
        "merges": merges.count("merged"),
        "history": timed(url, lambda w: w.history(PERSON), args.warmup, args.calls),
        "profile_as_of": timed(url, lambda w: w.profile_as_of(PERSON, middle), args.warmup,
                               args.calls),
        "explain": timed(url, lambda w: w.explain(PERSON, "plan"), args.warmup, args.calls),
    }


def undone(url: str) -> dict[str, Any]:
    """profile_as_of at the middle of the log, after an anonymous merge, before and after its
    undo."""
    with idstitch.open(url) as ws:
        merge = next(m for m in ws.merges(PERSON) if m.kind == "merged")
        at = max(merge.position, ws.log.head() // 2)
        ws.profile_as_of(PERSON, at)
        began = time.perf_counter()
        before = ws.profile_as_of(PERSON, at)
        warm_before = time.perf_counter() - began
        ws.unmerge(merge.merge_id, reason="benchmark")
        began = time.perf_counter()
        after = ws.profile_as_of(PERSON, at)
        replayed = time.perf_counter() - began
    assert after == before, "an undo changed an answer before it"
    console.print(f"as-of at position {at:,} (merge at {merge.position:,}): "
                  f"{warm_before * 1000:.1f} ms before its undo (warm), {replayed:.2f} s after "
                  f"({at / replayed:,.0f} events/s replayed), the same answer")
    return {"position": at, "before_s": warm_before, "after_s": replayed,
            "events_per_s": at / replayed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000",
                        help="log lengths in events, comma-separated (default 100000,1000000)")
    parser.add_argument("--person-events", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mix", default="attribute", help="workload mix of the other traffic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--undone", action="store_true",
                        help="also time an as-of across an undone merge (see above)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {"sizes": {}, "person_events": args.person_events, "mix": args.mix}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            results["sizes"][str(size)] = measure(size, args, Path(tmp))
            if args.undone:
                url = harness.sqlite_url(Path(tmp) / f"audit-{size}.db")
                results["sizes"][str(size)]["undone"] = undone(url)
    rows = []
    for size, r in results["sizes"].items():
        for name, target in TARGETS_MS.items():
            t = r[name]
            ok = t["p50"] <= target
            p50 = f"[green]{t['p50']:.1f}[/green]" if ok else f"[red]{t['p50']:.1f}[/red]"
            rows.append((f"{int(size):,}", r["events"], name, r["person_events"],
                         f"{t['cold']:.1f}", p50, f"{t['p90']:.1f}", f"<= {target:.0f}"))
    harness.table(f"audit of one person (~{args.person_events:,} events, 3 devices, 2 merges), "
                  f"SQLite file, warm p50 in ms",
                  ["log size", "events", "call", "person events", "cold ms", "p50 ms", "p90 ms",
                   "target"], rows)
    if len(sizes) > 1:
        small, large = (results["sizes"][str(s)] for s in (sizes[0], sizes[-1]))
        growth = {name: large[name]["p50"] / small[name]["p50"] for name in TARGETS_MS}
        results["growth"] = growth
        console.print("p50 at the largest size / at the smallest: " + ", ".join(
            f"{name} {g:.2f}x" for name, g in growth.items()))
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
