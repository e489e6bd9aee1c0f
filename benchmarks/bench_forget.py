"""``ws.forget`` of one person in a long SQLite log.

Ingests N Segment messages (default 100,000) into a fresh SQLite file: one person with
``--person`` events (default 1,000: identify and attribute calls over 10 devices), the rest
spread over other users of 20 events each (identify, then attribute calls). Then times one
``ws.forget`` of that person: the checks, the keys destroyed, the decision recorded, every
projection rebuilt from position 0, the WAL checkpointed. Target (issue 15): <= 2 s for a
person of 10,000 events in a 1M-event log; the rebuild of every projection dominates, so the
time grows with the log, not with the person.

    python benchmarks/bench_forget.py                      # 100k events, a person of 1,000
    python benchmarks/bench_forget.py --events 20000 --person 500
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

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def messages(events: int, person: int) -> Iterator[dict[str, Any]]:
    """The victim's events first-interleaved with everyone else's, each with its own time."""
    for i in range(events):
        ts = (T0 + timedelta(milliseconds=i)).isoformat()
        if i < person * 2 and i % 2 == 0:  # the victim: every other message at the start
            n = i // 2
            device = f"victim-dev-{n % 10}"
            if n < 10:
                yield {"type": "identify", "userId": "victim-1", "anonymousId": device,
                       "traits": {"email": "victim@example.com"}, "messageId": f"v{n}",
                       "timestamp": ts}
            else:
                yield {"type": "identify", "userId": "victim-1", "anonymousId": device,
                       "traits": {"step": n}, "messageId": f"v{n}", "timestamp": ts}
            continue
        user, k = divmod(i, 20)
        traits = {"email": f"user{user}@example.com"} if k == 0 else {"n": k}
        yield {"type": "identify", "userId": f"user-{user}", "anonymousId": f"dev-{user}",
               "traits": traits, "messageId": f"m{i}", "timestamp": ts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--person", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'forget.db'}"
        with idstitch.open(url) as ws:
            start = time.perf_counter()
            report = ws.ingest(messages(args.events, args.person))
            print(f"ingested {report.accepted} messages in {time.perf_counter() - start:.1f} s; "
                  f"log head {ws.log.head()}")
            person = ws.profile("victim-1")
            assert person is not None
            start = time.perf_counter()
            ws.forget("victim-1", reason="benchmark")
            took = time.perf_counter() - start
            assert ws.profile("victim-1") is None
            assert ws.verify().ok
        print(f"forget of a person of {args.person} events in a log of {args.events}: "
              f"{took:.2f} s")


if __name__ == "__main__":
    main()
