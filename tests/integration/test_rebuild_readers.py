"""Readers in other processes during a rebuild (issue 16, item 3): a query sees the complete old
state or waits for the new one, never the empty or half-replayed rows in between."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from idstitch.projections import replay, runner

from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)

READER = textwrap.dedent("""
    import json, sys
    import idstitch
    ws = idstitch.open(sys.argv[1])
    ready = sys.argv[2]
    reads, misses = 0, []
    import os
    while not os.path.exists(sys.argv[3]):
        if ws.profile("u1") is None:
            misses.append("profile")
        if not ws.history("u1"):
            misses.append("history")
        reads += 1
        if reads == 1:
            open(ready, "w").close()
    ws.close()
    print(json.dumps({"reads": reads, "misses": misses}))
""")


def known_traffic(ws: Workspace, n: int) -> None:
    """u1 identified first, then traffic of other users on other devices."""
    ws.identify("d1", "u1", {"plan": "pro"}, timestamp=T0)
    for i in range(1, n):
        ws.identify(f"d{2 + i % 30}", f"u{2 + i % 20}", {"k": i},
                    timestamp=T0 + timedelta(seconds=i))


@pytest.mark.parametrize("parallel", [False, True])
def test_a_reader_in_another_process_never_sees_a_known_person_missing(
    make_durable_ws: WorkspaceFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    parallel: bool,
) -> None:
    ws = make_durable_ws()
    known_traffic(ws, 600)
    assert ws.profile("u1") is not None
    url = ws.url
    script = tmp_path / "reader.py"
    script.write_text(READER)
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, str(script), url, str(ready), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert reader.poll() is None, "the reader failed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Small pages and replay transactions: many intermediate commits, each followed by a
        # pause in which the reader gets to read.
        monkeypatch.setattr(runner, "PAGE_SIZE", 20)
        monkeypatch.setattr(replay, "REPLAY_BATCH", 20)
        steps: list[int] = []

        def slowly(n: int) -> None:
            steps.append(n)
            time.sleep(0.02)

        assert ws.rebuild(progress=slowly, parallel=parallel) == ws.log.head()
        assert len(steps) > 10  # the rebuild did take a while, commit after commit
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=120)
    seen = json.loads(out)
    assert seen["reads"] >= 1
    assert seen["misses"] == []
    assert ws.profile("u1") is not None
