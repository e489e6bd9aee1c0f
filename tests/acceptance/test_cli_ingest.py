"""`idstitch ingest FILE.ndjson` and `idstitch rebuild`, run for real on SQLite files."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import idstitch
from idstitch.cli import main

encode = msgspec.json.Encoder().encode

LINES = [
    encode({"type": "identify", "userId": "u1", "anonymousId": "phone", "messageId": "m1",
            "traits": {"first_name": "Dana"}, "timestamp": "2026-01-01T09:00:00Z"}),
    encode({"type": "track", "event": "Device Created or Updated", "anonymousId": "phone",
            "messageId": "m2", "timestamp": "2026-01-01T09:00:01Z",
            "context": {"device": {"id": "phone", "token": "tok-1", "type": "ios"}},
            "properties": {"device_os": "18.0", "theme": "dark"}}),
    b"{this is not json",
    encode({"type": "screen", "anonymousId": "phone", "name": "Home"}),
    encode({"type": "identify", "userId": "undefined", "anonymousId": "tablet"}),
]


@pytest.fixture
def ndjson(tmp_path: Path) -> Path:
    path = tmp_path / "traffic.ndjson"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    return path


def test_ingest_reports_and_writes_rejects(
    ndjson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    db = f"sqlite:///{tmp_path}/x.db"
    rejects = tmp_path / "rejects.ndjson"
    # Rejected lines make the exit status 3 (the file says which and why).
    assert main(["ingest", str(ndjson), "--db", db, "--batch", "2", "--rejects", str(rejects)]) == 3
    out = capsys.readouterr()
    assert "accepted" in out.out and "rejected" in out.out
    assert "line 3:" in out.err and "line 5:" in out.err and "placeholder" in out.err
    assert f"rejected lines with their reasons (2): {rejects}" in out.err
    rows = [msgspec.json.decode(line) for line in rejects.read_bytes().splitlines()]
    assert [r["line"] for r in rows] == [3, 5]
    assert rows[0]["raw"] == "{this is not json"
    with idstitch.open(db) as ws:
        person = ws.profile("u1")
        assert person is not None and person.attributes == {"first_name": "Dana"}
        assert person.devices[0].token == "tok-1"
        head = ws.log.head()
    # The same file again adds nothing: every message id was seen. --allow-rejects: exit 0.
    assert main(["ingest", str(ndjson), "--db", db, "--allow-rejects"]) == 0
    with idstitch.open(db) as ws:
        assert ws.log.head() == head


def test_rebuild_replays_with_progress(
    ndjson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    db = f"sqlite:///{tmp_path}/x.db"
    main(["ingest", str(ndjson), "--db", db, "--allow-rejects"])
    with idstitch.open(db) as ws:
        before = ws.dump()
        events = ws.log.head()
    capsys.readouterr()
    assert main(["rebuild", "--db", db]) == 0
    assert f"replayed {events} events" in capsys.readouterr().out
    with idstitch.open(db) as ws:
        assert ws.dump() == before


def test_ingest_of_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", str(tmp_path / "nope.ndjson"), "--db", f"sqlite:///{tmp_path}/x.db"]) == 2
    assert "error:" in capsys.readouterr().err
