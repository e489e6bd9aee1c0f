"""Writers that only append, and ``idstitch project`` keeping the projections (issue 14 §3).

Measures, in one run, on a throwaway PostgreSQL (``idstitch.testing.TemporaryPostgres``):

- **embedded**: 4 writer processes ``ws.ingest`` a quarter of N generated messages each into
  one fresh schema, each catching the projections up itself (the default; ``parallel=False``
  so that no writer starts a projecting child of its own);
- **external**: the same 4 writers opened with ``projections="external"`` into another fresh
  schema, while one ``idstitch project`` process follows the log. The projector's lag (log head
  minus the lowest committed position) is sampled every 50 ms while the writers run, and the
  time from the last writer's return until the lag is 0 is the drain time.

The two modes alternate (A, B, A, B) and the best writer time of each is compared: the
ratio embedded / external is the writers' speed-up (target >= 1.5x); the drain target is 2 s.

How the traffic is split between the writers (``--split``) decides how much they contend:

- ``line`` (the default): line i goes to writer i % 4, so every device's messages reach all
  four writers at once: each batch of each writer meets devices the others just moved (the
  worst case: API nodes behind a round-robin balancer replaying a backlog);
- ``device``: each device's messages (by ``context.device.id``, else ``anonymousId``, else
  ``userId``) go to one writer, as a balancer routing on the device id does: the writers
  share persons (a user's devices may reach different writers) but not devices.

    python benchmarks/bench_external.py                 # N=20000
    python benchmarks/bench_external.py --n 40000 --rounds 1 --split device --mix identity
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import harness
from harness import console

import idstitch
from idstitch.testing import TemporaryPostgres

WRITERS = 4


def _write(url: str, path: str, external: bool, start: mp.synchronize.Event) -> None:
    ws = idstitch.open(url, projections="external" if external else None)
    start.wait()
    with open(path, "rb") as f:
        ws.ingest(f, parallel=False)
    ws.close()


def device_of(line: bytes) -> str:
    """The device a line's message is about (see the module's ``--split device``)."""
    try:
        message = json.loads(line)
    except ValueError:
        return ""  # a bad line: any writer rejects it the same way
    if not isinstance(message, dict):
        return ""
    context = message.get("context")
    device = context.get("device") if isinstance(context, dict) else None
    found = device.get("id") if isinstance(device, dict) else None
    return str(found or message.get("anonymousId") or message.get("userId") or "")


def split(lines: list[bytes], how: str) -> list[list[bytes]]:
    """The lines of each writer, in input order."""
    if how == "line":
        return [lines[i::WRITERS] for i in range(WRITERS)]
    parts: list[list[bytes]] = [[] for _ in range(WRITERS)]
    for line in lines:
        parts[zlib.crc32(device_of(line).encode()) % WRITERS].append(line)
    return parts


def run(url: str, parts: list[str], external: bool) -> tuple[float, float, int]:
    """(writers' seconds, drain seconds, the highest lag sampled)."""
    ctx = mp.get_context("spawn")
    project = None
    samples: list[int] = []
    stop = threading.Event()
    with idstitch.open(url):
        pass  # the schema and tables, before anyone races to create them
    if external:
        idstitch_bin = str(Path(sys.executable).with_name("idstitch"))
        project = subprocess.Popen([idstitch_bin, "project", "--db", url],
                                   stderr=subprocess.DEVNULL)
    watcher = idstitch.open(url, projections="external")

    def sample() -> None:
        while not stop.is_set():
            samples.append(watcher.lag())
            time.sleep(0.05)

    start = ctx.Event()
    workers = [ctx.Process(target=_write, args=(url, part, external, start)) for part in parts]
    for w in workers:
        w.start()
    time.sleep(3)  # every worker has opened its store (spawn + imports)
    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.perf_counter()
    start.set()
    for w in workers:
        w.join()
    written = time.perf_counter() - began
    drained = 0.0
    if external:
        t0 = time.perf_counter()
        watcher.wait_for(watcher.log.head(), timeout=120)
        drained = time.perf_counter() - t0
    stop.set()
    sampler.join()
    watcher.close()
    if project is not None:
        project.terminate()
        project.wait(30)
    return written, drained, max(samples, default=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mix", choices=("attributes", "identity"), default="attributes")
    parser.add_argument("--split", choices=("line", "device"), default="line",
                        help="lines dealt in turn (every device on every writer), or each "
                             "device's lines to one writer")
    args = parser.parse_args()
    server = TemporaryPostgres().start()
    try:
        server.create_database("bench")
        with tempfile.TemporaryDirectory() as tmp:
            whole = Path(tmp) / "all.ndjson"
            harness.write_workload(whole, args.n, 0, args.mix)
            lines = whole.read_bytes().splitlines(keepends=True)
            parts = []
            for i, mine in enumerate(split(lines, args.split)):
                part = Path(tmp) / f"part{i}.ndjson"
                part.write_bytes(b"".join(mine))
                parts.append(str(part))
            results: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
            for r in range(args.rounds):
                for external in (False, True):
                    url = server.url("bench") + f"?schema=r{r}{'x' if external else 'e'}"
                    results[external].append(run(url, parts, external))
        embedded = min(w for w, _, _ in results[False])
        external_best = min(results[True])
        harness.table(
            f"{WRITERS} writers, {args.n} messages ({args.mix} mix, split by {args.split}), "
            "PostgreSQL",
            ["mode", "writers' seconds (best)", "msg/s", "drain s", "max lag sampled"],
            [["embedded (catch-up in writers)", f"{embedded:.2f}",
              harness.fmt_rate(args.n / embedded), "-", "-"],
             ["external + idstitch project", f"{external_best[0]:.2f}",
              harness.fmt_rate(args.n / external_best[0]), f"{external_best[1]:.2f}",
              str(max(lag for _, _, lag in results[True]))]])
        console.print(f"writers' speed-up, embedded / external: {embedded / external_best[0]:.2f}x "
                      "(target >= 1.5x); drain after the writers stop: "
                      f"{max(d for _, d, _ in results[True]):.2f} s (target <= 2 s)")
        console.print(f"every run: {results}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
