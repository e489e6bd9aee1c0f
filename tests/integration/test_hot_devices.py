"""Hot devices (issue 16 item 12): writers in separate processes sharing a few devices see
ConcurrencyConflict only when it is real. A single command whose append was refused runs again
holding the store's append lock, as a contended batch does, so it cannot lose again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import idstitch
from idstitch.testing import TemporaryPostgres, recorded_events

WRITER = """
import json, sys
import idstitch
from idstitch.errors import ConcurrencyConflict
url, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conflicts = recorded = 0
with idstitch.open(url) as ws:
    ws.retries = 2  # one optimistic attempt, then the one under the append lock
    for i in range(n):
        device = f"hot{(i + me) % 3}"
        try:
            if i % 3 == 0:
                ws.identify(device, f"user{me}-{i % 5}", {"n": i}, message_id=f"w{me}-{i}")
            else:
                ws.set_profile_attributes(device, {"w": me, "i": i}, message_id=f"w{me}-{i}")
            recorded += 1
        except ConcurrencyConflict:
            conflicts += 1
print(json.dumps({"conflicts": conflicts, "recorded": recorded}))
"""


def run_writers(url: str, tmp_path: Path, writers: int = 4, n: int = 120) -> list[dict[str, int]]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, "-P", str(script), url, str(w), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(writers)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_four_writers_on_three_hot_devices_see_no_conflict(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/hot.db"
    else:
        postgres: TemporaryPostgres = request.getfixturevalue("postgres")
        url = postgres.create_database("hot_devices")
    with idstitch.open(url):
        pass  # tables created once, before the writers race
    results = run_writers(url, tmp_path)
    assert [r["conflicts"] for r in results] == [0, 0, 0, 0]
    with idstitch.open(url) as ws:
        # Every command recorded once: 4 writers x 120 commands, one event each (positions
        # on PostgreSQL have gaps where an append was refused: count the events).
        ids = [e.message_id for _, e in recorded_events(ws)]
        assert len(ids) == len(set(ids)) == sum(r["recorded"] for r in results) == 4 * 120
