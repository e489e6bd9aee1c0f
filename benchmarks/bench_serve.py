"""The HTTP endpoint against in-process ingest: ``idstitch serve`` taking 100-message batches
from several concurrent clients over loopback, on a SQLite file and on PostgreSQL.

Measures, in one run, for each store, the same N generated messages (``workload.py``; the few
lines it makes unparsable on purpose are left out of both runs):

- in process: ``ws.ingest(messages)`` on a fresh store (the messages already parsed, one call);
- served: ``idstitch serve`` as its own process on a fresh store, and ``--clients`` threads of
  this process each posting its share of the messages to ``/v1/batch`` as 100-message batches
  (``--batch``), one keep-alive connection each, bodies encoded beforehand: the time from the
  first request until every one has been answered 200 (every message committed), and each
  request's latency from send to answer.

Printed: both rates, their ratio (target, issue 13: at least 0.5x the in-process rate), and the
p50 / p99 request latency (target: p99 under 100 ms at that rate). Each served run then reopens
its store and checks that it holds about as many events as the in-process one (within 2%: the
clients' batches interleave, and a message's context attributes are recorded only where they
changed, so the count depends a little on the order of arrival): the server must not answer 200
for messages it did not record.

PostgreSQL is a throwaway server (``idstitch.testing.TemporaryPostgres``: fsync off), reached
over loopback TCP by both runs.

    python benchmarks/bench_serve.py                          # N=20000, 4 clients, both stores
    python benchmarks/bench_serve.py --n 5000 --clients 8 --no-postgres --json /tmp/serve.json
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import harness
import msgspec
import workload
from harness import console, percentile

import idstitch

RATIO_TARGET = 0.5
P99_TARGET_MS = 100.0
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def events_in(url: str) -> int:
    with idstitch.open(url) as ws:
        return ws.catch_up()


def in_process(url: str, messages: list[dict[str, Any]]) -> float:
    """Seconds for one ``ws.ingest`` of the parsed messages (projections caught up)."""
    with idstitch.open(url) as ws, harness.Timer() as timer:
        ws.ingest(messages)
    return timer.seconds


CLI = [sys.executable, "-P", "-c", "import sys; from idstitch.cli import main; sys.exit(main())"]
"""The command line (-P: a checkout's source folder must not shadow the install)."""


def start_server(url: str, port: int, rejects: str, external: bool) -> subprocess.Popen[bytes]:
    # --create: each run serves a fresh store.
    argv = [*CLI, "serve", "--create", "--db", url, "--port", str(port), "--write-key", KEY,
            "--rejects", rejects, *(["--external"] if external else [])]
    server = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("idstitch serve did not start") from None
            time.sleep(0.05)


def client(port: int, bodies: list[bytes], latencies: list[float], failures: list[str],
           go: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    # As urllib3 (under requests, under the SDK clients) does: no Nagle delay on small writes.
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    auth = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    go.wait()
    for body in bodies:
        start = time.perf_counter()
        conn.request("POST", "/v1/batch", body=body,
                     headers={"Content-Type": "application/json", "Authorization": auth})
        answer = conn.getresponse()
        data = answer.read()
        latencies.append(time.perf_counter() - start)
        if answer.status != 200:
            failures.append(f"{answer.status} {data[:200]!r}")
    conn.close()


def served(url: str, messages: list[dict[str, Any]], clients: int, batch: int,
           rejects: str, external: bool) -> tuple[float, float, list[float]]:
    """Seconds until every batch is answered, seconds until the read models hold it all too
    (with ``external``, an ``idstitch project`` process keeps them), and each request's latency
    in seconds."""
    port = free_port()
    projector = (subprocess.Popen([*CLI, "project", "--db", url], stderr=subprocess.DEVNULL)
                 if external else None)
    server = start_server(url, port, rejects, external)
    try:
        sent_at = "2026-01-01T00:00:00+00:00"
        bodies = [msgspec.json.encode({"batch": messages[i:i + batch], "sentAt": sent_at})
                  for i in range(0, len(messages), batch)]
        shares: list[list[bytes]] = [bodies[c::clients] for c in range(clients)]
        latencies: list[list[float]] = [[] for _ in range(clients)]
        failures: list[str] = []
        go = threading.Event()
        threads = [threading.Thread(target=client, args=(port, shares[c], latencies[c], failures, go))
                   for c in range(clients)]
        for thread in threads:
            thread.start()
        start = time.perf_counter()
        go.set()
        for thread in threads:
            thread.join()
        answered = time.perf_counter() - start
        if failures:
            raise RuntimeError(f"{len(failures)} requests failed, the first: {failures[0]}")
        if projector is not None:
            with idstitch.open(url, projections="external") as ws:
                ws.wait_for(ws.log.head(), timeout=600)
        projected = time.perf_counter() - start
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        if projector is not None:
            projector.send_signal(signal.SIGTERM)
            projector.wait(60)
    return answered, projected, [x for part in latencies for x in part]


def measure(name: str, make_url: Any, messages: list[dict[str, Any]],
            args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    reference_url, served_url = make_url("inproc"), make_url("served")
    seconds_in = in_process(reference_url, messages)
    seconds_served, seconds_projected, latencies = served(
        served_url, messages, args.clients, args.batch, str(Path(tmp) / f"{name}-rejects.ndjson"),
        args.external)
    expected, got = events_in(reference_url), events_in(served_url)
    if abs(expected - got) > expected // 50:
        raise RuntimeError(f"{name}: the served store holds {got} events, in process {expected}")
    rate_in = harness.rate(len(messages), seconds_in)
    rate_served = harness.rate(len(messages), seconds_served)
    ms = [x * 1000 for x in latencies]
    return {"store": name, "in_process_per_s": rate_in, "served_per_s": rate_served,
            "ratio": rate_served / rate_in if rate_in else None,
            "projected_ratio": seconds_in / seconds_projected if seconds_projected else None,
            "requests": len(ms),
            "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms),
            "events": got}


def parsed(lines: Any) -> list[dict[str, Any]]:
    """The workload's lines as dicts; the few it makes unparsable on purpose are left out of
    both runs (a batch body is one JSON document: it cannot carry a broken line)."""
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            message = msgspec.json.decode(line)
        except msgspec.DecodeError:
            continue
        if isinstance(message, dict):
            out.append(message)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages (default 20000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--external", action="store_true",
                        help="serve --external, with an idstitch project process keeping the "
                             "read models (projected_ratio counts until they hold everything)")
    parser.add_argument("--batch", type=int, default=100, help="messages a request (default 100)")
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=True)
    harness.add_mix_argument(parser)
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args()
    messages = parsed(workload.generate(args.n, 0, args.mix))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(measure("sqlite", lambda tag: harness.sqlite_url(Path(tmp) / f"{tag}.db"),
                               messages, args, tmp))
        if args.postgres:
            from idstitch.testing import TemporaryPostgres

            with TemporaryPostgres() as pg:
                results.append(measure("postgresql", pg.create_database, messages, args, tmp))
    mode = "; serve --external with idstitch project" if args.external else ""
    harness.table(
        f"idstitch serve: {args.n} messages, {args.clients} clients, {args.batch}-message batches "
        f"({args.mix}; {os.cpu_count()} CPUs{mode})",
        ["store", "in process /s", "served /s", "ratio (>= 0.5x)", "until projected", "p50 ms",
         "p99 ms (< 100)", "max ms"],
        [(r["store"], harness.fmt_rate(r["in_process_per_s"]), harness.fmt_rate(r["served_per_s"]),
          harness.fmt_ratio(r["ratio"], RATIO_TARGET), f"{r['projected_ratio']:.2f}x",
          f"{r['p50_ms']:.1f}",
          ("[green]{:.1f}[/green]" if r["p99_ms"] < P99_TARGET_MS else "[red]{:.1f}[/red]").format(
              r["p99_ms"]),
          f"{r['max_ms']:.1f}") for r in results])
    harness.write_json(args.json, {"n": args.n, "clients": args.clients, "batch": args.batch,
                                   "mix": args.mix, "results": results})
    console.print("the served store held as many events as the in-process one (within 2%), on every store")


if __name__ == "__main__":
    main()
