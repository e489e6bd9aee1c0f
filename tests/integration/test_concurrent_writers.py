"""Several writers on one store (issue 9, item 5): every message recorded exactly once, and one
process at a time folds a projection while the others wait for the position they need instead
of folding it again (how a batch decides again the devices another writer moved:
test_writer_reloads)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from idstitch.projections.runner import leases_of

import idstitch
from idstitch.testing import TemporaryPostgres, recorded_events
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
NOW = datetime(2026, 1, 9, 12, tzinfo=UTC)


def traffic(seed: int, n: int, devices: int = 40, users: int = 15) -> list[dict[str, Any]]:
    """Identity-heavy traffic on a few shared devices: identifies with emails, users on several
    devices, devices switching users, anonymous traits, tokens moving, exact repeats."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        if out and rng.random() < 0.04:
            out.append(dict(out[rng.randrange(len(out))]))  # an exact repeat
            continue
        device = f"dev{rng.randrange(devices)}"
        stamp = (T0 + timedelta(seconds=i)).isoformat()
        r = rng.random()
        if r < 0.55:
            user = rng.randrange(users)
            out.append({"type": "identify", "anonymousId": device, "userId": f"u{user}",
                        "traits": {"email": f"u{user}@example.com", f"k{rng.randrange(4)}": i},
                        "messageId": f"m{i}", "timestamp": stamp})
        elif r < 0.7:
            out.append({"type": "identify", "anonymousId": device, "messageId": f"m{i}",
                        "traits": {f"a{rng.randrange(3)}": i}, "timestamp": stamp})
        else:
            out.append({"type": "track", "event": "Device Created or Updated",
                        "anonymousId": device, "messageId": f"m{i}", "timestamp": stamp,
                        "properties": {"app_version": f"1.{i % 7}", "theme": rng.choice("ab")},
                        "context": {"device": {"id": device, "token": f"tok{rng.randrange(20)}",
                                               "type": "ios"}}})
    return out


WORKER = """
import json, sys
from datetime import datetime
import idstitch
from idstitch.testing import recorded_events

url, path, parallel = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
messages = json.loads(open(path).read())
now = datetime.fromisoformat(sys.argv[4])
with idstitch.open(url, clock=lambda: now) as ws:
    print("ready", flush=True)
    sys.stdin.readline()
    report = ws.ingest(messages, batch_size=40, parallel=parallel)
    # Committed positions as the ingest left them (no catch-up here), against the last event
    # of this writer's that each projection folds: read-your-writes.
    committed = {p.name: ws.rows.position(p.name) for p in ws.projections}
    mine = {m["messageId"] for m in messages}
    events = [(n, e) for n, e in recorded_events(ws) if e.message_id.split("#")[0] in mine]
    last = {p.name: max((n for n, e in events if type(e) in p.event_types), default=0)
            for p in ws.projections}
print(json.dumps({"accepted": report.accepted, "duplicates": report.duplicates,
                  "rejected": report.rejected, "committed": committed, "last": last}), flush=True)
"""


def run_writers(url: str, messages: list[dict[str, Any]], writers: int, tmp: Path,
                parallel: Iterable[bool], chunk: int = 5) -> list[dict[str, Any]]:
    """``writers`` processes ingest the messages, split in turns of ``chunk``, all at once."""
    script = tmp / "worker.py"
    script.write_text(WORKER)
    procs = []
    for w, par in zip(range(writers), parallel, strict=True):
        share = [m for i, m in enumerate(messages) if (i // chunk) % writers == w]
        path = tmp / f"share{w}.json"
        path.write_text(json.dumps(share))
        procs.append(subprocess.Popen(
            [sys.executable, str(script), url, str(path), "1" if par else "0", NOW.isoformat()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            assert proc.stdout is not None
            results.append(json.loads(proc.stdout.readline()))
    finally:
        for proc in procs:
            if proc.wait(timeout=120) != 0:
                raise AssertionError("a writer failed")
    return results


def by_device(ws: Workspace) -> dict[str, list[Any]]:
    devices: dict[str, list[Any]] = defaultdict(list)
    for _, event in recorded_events(ws):
        devices[event.device_id].append(event)
    return devices


def landed(messages: list[dict[str, Any]], ws: Workspace) -> list[dict[str, Any]]:
    """The messages in the order their events landed in ws's log; those that recorded nothing
    (repeats) after them."""
    first: dict[str, int] = {}
    for position, event in recorded_events(ws):
        first.setdefault(event.message_id.split("#")[0], position)
    placed: list[tuple[int, int]] = []
    rest: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        mid = message["messageId"]
        if mid in first:
            placed.append((first.pop(mid), i))
        else:
            rest.append(message)
    return [messages[i] for _, i in sorted(placed)] + rest


def view(ws: Workspace, users: int, devices: int) -> dict[str, Any]:
    """What a reader sees, without the ids minted from log positions (a PostgreSQL log has
    gaps where an append was refused; the order of positions is what the fold depends on)."""
    out: dict[str, Any] = {}
    for u in range(users):
        p = ws.profile(f"u{u}")
        out[f"u{u}"] = None if p is None else (
            p.identified, p.identifiers, p.attributes, sorted(d.device_id for d in p.devices))
    for d in range(devices):
        dev = ws.device(f"dev{d}")
        out[f"dev{d}"] = None if dev is None else (dev.token, dev.attributes, dev.collected)
    return out


def check_exactly_once(url: str, messages: list[dict[str, Any]], results: list[dict[str, Any]]
                       ) -> None:
    """Every message recorded once, the devices decided as one process would have in the
    order the appends landed, and the projections those of that order."""
    with idstitch.open(url, clock=lambda: NOW) as shared:
        shared.catch_up()
        concurrent = by_device(shared)
        rows = shared.dump()
        seen = view(shared, 15, 40)
        one = idstitch.open("memory:", clock=lambda: NOW)
        one.ingest(messages)
        reference = idstitch.open("memory:", clock=lambda: NOW)
        reference.ingest(landed(messages, shared))
        shared.rebuild()
        assert shared.dump() == rows  # every event applied once by the writers' catch-ups

    def signature(devices: dict[str, list[Any]]) -> Counter[tuple[str, str, str]]:
        return Counter((d, e.message_id, type(e).__name__) for d, es in devices.items()
                       for e in es)

    recorded = signature(concurrent)
    assert max(recorded.values()) == 1  # nothing doubled
    assert recorded == signature(by_device(one))  # nothing lost
    assert sum(r["accepted"] + r["duplicates"] for r in results) == len(messages)
    assert not any(r["rejected"] for r in results)
    assert concurrent == by_device(reference)  # the same decisions, device by device
    assert seen == view(reference, 15, 40)
    for r in results:
        assert all(r["committed"][n] >= r["last"][n] for n in r["last"]), r  # read-your-writes


def test_four_writers_on_postgres_record_every_message_once(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    url = postgres.create_database("four_writers")
    with idstitch.open(url):
        pass  # tables created once, before the writers race
    messages = traffic(1, 1600)
    results = run_writers(url, messages, 4, tmp_path, parallel=[True, True, False, False])
    check_exactly_once(url, messages, results)


def test_two_writers_on_sqlite_record_every_message_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    with idstitch.open(url):
        pass
    messages = traffic(2, 1200)
    results = run_writers(url, messages, 2, tmp_path, parallel=[True, False])
    check_exactly_once(url, messages, results)


def identify(device: str, user: str, n: int) -> dict[str, Any]:
    return {"type": "identify", "anonymousId": device, "userId": user, "messageId": f"m{n}",
            "traits": {"n": n}, "timestamp": (T0 + timedelta(seconds=n)).isoformat()}


class CountingRows:
    """The real projection store, counting the projection commits."""

    def __init__(self, rows: Any) -> None:
        self._rows = rows
        self.transactions = 0

    def transaction(self, name: str) -> Any:
        self.transactions += 1
        return self._rows.transaction(name)

    def write_if(self, *args: Any) -> Any:
        # A commit by compare-and-set: one transaction of the store's own.
        self.transactions += 1
        return self._rows.write_if(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rows, name)


def test_messages_run_one_by_one_are_projected_in_one_catch_up(
    make_durable_ws: WorkspaceFactory,
) -> None:
    first = make_durable_ws()
    second = make_durable_ws(first.url)
    devices = [f"d{i}" for i in range(8)]
    first.ingest([identify(d, "u1", i) for i, d in enumerate(devices)])
    second.ingest([identify("d2", "u2", 100)])
    first.retries = 1  # the batch gives up at its first conflict: one message at a time
    counting = CountingRows(first.rows)
    first._services.projector.rows = counting  # type: ignore[assignment]
    report = first.ingest([identify(d, "u3", 200 + i) for i, d in enumerate(devices)])
    assert (report.accepted, report.rejected) == (8, [])
    assert counting.transactions <= len(first.projections)  # not one catch-up per message
    assert {d.device_id for d in first.profile("u3").devices} == set(devices)  # type: ignore[union-attr]


def test_a_catch_up_waits_for_the_process_that_holds_the_lease(
    make_durable_ws: WorkspaceFactory,
) -> None:
    holder = make_durable_ws(auto_catch_up=False)
    other = make_durable_ws(holder.url)
    holder.identify("d1", "u1")
    leases = leases_of(holder.rows)
    assert leases is not None
    names = holder.projections.names
    assert all(leases.try_lease(n) for n in names)
    done: list[int] = []
    waiter = threading.Thread(target=lambda: done.append(other.catch_up()))
    waiter.start()
    time.sleep(0.3)
    # It folds nothing while another process holds the leases: it asks the holder instead.
    assert done == [] and all(holder.rows.position(n) == 0 for n in names)
    assert leases.wanted(names[0]) >= holder.log.head()  # they catch up one after the other
    for n in names:
        leases.release_lease(n)
    waiter.join(10)
    assert done == [holder.log.head()]
    assert other.profile("u1") is not None


def test_an_ingest_leaves_a_leased_projection_to_its_holder_between_batches(
    make_durable_ws: WorkspaceFactory,
) -> None:
    holder = make_durable_ws(auto_catch_up=False)
    writer = make_durable_ws(holder.url)
    leases = leases_of(holder.rows)
    assert leases is not None
    names = holder.projections.names
    assert all(leases.try_lease(n) for n in names)
    # A holder that, once asked for a position, lets go (the asker then folds).
    asked_at: list[list[int]] = []

    def serve() -> None:
        while not any(leases.wanted(n) for n in names):
            time.sleep(0.01)
        asked_at.append([holder.rows.position(n) for n in names])
        for n in names:
            leases.release_lease(n)

    server = threading.Thread(target=serve)
    server.start()
    from idstitch.service import ingest

    before = ingest.CATCH_UP_EVENTS
    ingest.CATCH_UP_EVENTS = 5  # a catch-up between batches
    try:
        writer.ingest([identify(f"d{i}", "u1", i) for i in range(30)], batch_size=10,
                      parallel=False)
    finally:
        ingest.CATCH_UP_EVENTS = before
    server.join(10)
    # The catch-ups between batches skipped the leased projections (nothing was committed
    # while the holder held them); the last one asked the holder, waited for it to let go,
    # then projected everything: read-your-writes.
    assert asked_at == [[0] * len(names)]
    assert writer.rows.position(names[0]) == writer.log.head()
    assert len(writer.profile("u1").devices) == 30  # type: ignore[union-attr]
