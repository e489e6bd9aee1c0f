"""``ws.forget`` of one person in a long SQLite log: purged in place, against a full rebuild.

Ingests N Segment messages (default 100,000) into a fresh SQLite file: two victims with
``--person`` events each (default 1,000: identify calls over 10 devices each), the rest spread
over other users of 20 events each (identify, then attribute calls). Then times one
``ws.forget`` of the first victim (its rows purged in place: the cost grows with the person)
and, in the same run, a forget of the second victim that rebuilds every projection from
position 0 instead (the way forget worked before the purge: the cost grows with the log).
Target (issue 15): <= 2 s for a person of 10,000 events in a 1M-event log.

    python benchmarks/bench_forget.py                      # 100k events, persons of 1,000
    python benchmarks/bench_forget.py --events 1000000 --person 10000
    python benchmarks/bench_forget.py --no-rebuild         # skip the rebuild's comparison
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import idstitch
from idstitch.service import erasure

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VICTIMS = 2


def messages(events: int, person: int) -> Iterator[dict[str, Any]]:
    """The victims' events first-interleaved with everyone else's, each with its own time."""
    for i in range(events):
        ts = (T0 + timedelta(milliseconds=i)).isoformat()
        if i < person * 2 * VICTIMS and i % 2 == 0:  # a victim: every other message at first
            v, n = (i // 2) % VICTIMS, (i // 2) // VICTIMS
            device = f"victim{v}-dev-{n % 10}"
            traits = ({"email": f"victim{v}@example.com"} if n < 10 else {"step": n})
            yield {"type": "identify", "userId": f"victim-{v}", "anonymousId": device,
                   "traits": traits, "messageId": f"v{v}-{n}", "timestamp": ts}
            continue
        user, k = divmod(i, 20)
        traits = {"email": f"user{user}@example.com"} if k == 0 else {"n": k}
        yield {"type": "identify", "userId": f"user-{user}", "anonymousId": f"dev-{user}",
               "traits": traits, "messageId": f"m{i}", "timestamp": ts}


def timed_forget(ws: idstitch.Workspace, user_id: str, *, in_place: bool) -> float:
    """Seconds one forget took (checks, keys, decision, rows, WAL checkpoint)."""
    services = ws._services
    start = time.perf_counter()
    report = erasure.forget(services.stores, services.bus, services.projector, user_id,
                            "benchmark", in_place=in_place)
    took = time.perf_counter() - start
    assert report.purged_in_place is in_place, report
    assert ws.profile(user_id) is None
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--person", type=int, default=1_000)
    parser.add_argument("--no-rebuild", action="store_true",
                        help="skip the second forget (the full rebuild's comparison)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'forget.db'}"
        with idstitch.open(url) as ws:
            start = time.perf_counter()
            report = ws.ingest(messages(args.events, args.person))
            print(f"ingested {report.accepted} messages in {time.perf_counter() - start:.1f} s; "
                  f"log head {ws.log.head()}")
            for v in range(VICTIMS):
                assert ws.profile(f"victim-{v}") is not None
            in_place = timed_forget(ws, "victim-0", in_place=True)
            print(f"forget, purged in place: a person of {args.person} events in a log of "
                  f"{args.events}: {in_place:.2f} s")
            if not args.no_rebuild:
                rebuilt = timed_forget(ws, "victim-1", in_place=False)
                print(f"forget, every projection rebuilt: a person of {args.person} events in "
                      f"a log of {args.events}: {rebuilt:.2f} s")
            assert ws.verify().ok


if __name__ == "__main__":
    main()
