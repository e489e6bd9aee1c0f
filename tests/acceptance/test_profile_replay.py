"""``benchmarks/profile_replay.py`` run as its own process on a real SQLite file: it replays a
copy, and leaves the folder as it found it (the copy, its WAL, and the lease and write-lock
files the workspace makes beside the copy all removed), the original file untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import idstitch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_replay.py"


@pytest.mark.parametrize("what", ["rebuild", "custom"])
def test_a_replay_leaves_no_file_of_its_copy_behind(tmp_path: Path, what: str) -> None:
    db = tmp_path / "identity.db"
    with idstitch.open(f"sqlite:///{db}") as ws:
        for n in range(5):
            ws.identify(f"d{n}", f"u{n % 2}", {"n": n})
    before = sorted(p.name for p in tmp_path.iterdir())
    original = db.read_bytes()
    done = subprocess.run([sys.executable, "-P", str(SCRIPT), str(db), what],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{what}: ") and "events/s" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert db.read_bytes() == original
