"""One user on many devices: the cost of a message as the person grows (issue 16, item 5).

Identifies ``userId=wide`` from new devices, in ingest batches, and measures the time a
message takes once the person holds 1k, 10k and 40k devices (the mean over the next
``--probe`` messages, each on a new device). Before the person's lists were indexed, every
join and merge record scanned them: the cost grew with the person (0.13 ms a message at 10k
devices, 0.41 ms at 40k). Flat figures mean a per-message cost independent of the person's
size; the store is memory unless ``--url`` says otherwise.

    python benchmarks/bench_wide_person.py                      # memory, 1k/10k/40k
    python benchmarks/bench_wide_person.py --url sqlite:///tmp/wide.db --sizes 1000 10000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import idstitch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def identifies(first: int, count: int) -> Iterator[dict[str, Any]]:
    """Identify messages of the one wide user, on devices ``first`` .. ``first+count-1``."""
    for i in range(first, first + count):
        yield {"type": "identify", "anonymousId": f"device-{i}", "userId": "wide",
               "messageId": f"m{i}", "timestamp": (T0 + timedelta(seconds=i)).isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="memory:")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 40_000])
    parser.add_argument("--probe", type=int, default=5000)
    args = parser.parse_args()
    with idstitch.open(args.url, clock=lambda: T0) as ws:
        held = 0
        print(f"{'devices':>8} {'ms/message':>11}")
        for size in sorted(args.sizes):
            if size > held:
                ws.ingest(list(identifies(held, size - held)), parallel=False)
                held = size
            start = time.perf_counter()
            ws.ingest(list(identifies(held, args.probe)), parallel=False)
            spent = time.perf_counter() - start
            held += args.probe
            print(f"{size:>8} {spent / args.probe * 1000:>11.3f}")
        profile = ws.profile("wide")
        assert profile is not None
        assert len(profile.devices) == held  # every one joined: below the limit


if __name__ == "__main__":
    main()
