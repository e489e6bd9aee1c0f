"""`idstitch ingest FILE.ndjson` and `idstitch rebuild`, run for real on SQLite files."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

import idstitch
from idstitch.cli import main
from idstitch.testing_projections import Counter

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


def test_rebuild_of_every_projection_shows_the_custom_ones_on_a_bar_of_their_own(
    ndjson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The custom projections fold after the built-in ones: on the one bar, they folded while
    it stood full."""
    monkeypatch.setenv("COLUMNS", "200")
    db = f"sqlite:///{tmp_path}/x.db"
    main(["ingest", str(ndjson), "--db", db, "--allow-rejects"])
    counter = "idstitch.testing_projections:Counter"
    with idstitch.open(db) as ws:
        ws.run_projection(Counter)
        events = ws.log.head()
        counts = ws.projection_db("counter").query("SELECT * FROM counts ORDER BY 1")
    capsys.readouterr()
    assert main(["rebuild", "--db", db, "--projection", counter]) == 0
    out = capsys.readouterr().out
    assert f"replayed {events} events" in out
    assert out.count(f"{events}/{events}") == 2, out
    with idstitch.open(db) as ws:
        ws.run_projection(Counter)
        assert ws.projection_db("counter").query("SELECT * FROM counts ORDER BY 1") == counts


def test_ingest_of_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", str(tmp_path / "nope.ndjson"), "--db", f"sqlite:///{tmp_path}/x.db"]) == 2
    assert "error:" in capsys.readouterr().err


def test_rejected_messages_are_placed_by_line_and_batch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ingest numbers messages (a blank line none, an envelope its messages); the rejects file
    and stderr once took that number for a line and wrote another line's text."""
    bad = {"type": "identify", "userId": "null", "anonymousId": "a-1"}
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"\n".join(msgspec.json.encode(m) for m in [
        {"batch": [{"type": "identify", "userId": "e2", "anonymousId": "a-2"},
                   {"type": "identify", "userId": "undefined", "anonymousId": "a-3"}]},
        bad,
        {"type": "identify", "userId": "e5", "anonymousId": "a-5"}]).replace(b"\n", b"\n\n", 1)
        + b"\n")
    rejects = tmp_path / "rejects.ndjson"
    assert main(["ingest", str(source), "--db", f"sqlite:///{tmp_path}/ws.db",
                 "--rejects", str(rejects)]) == 3
    records = [msgspec.json.decode(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r.get("batch_index")) for r in records] == [(1, 1), (3, None)]
    assert msgspec.json.decode(records[0]["raw"])["userId"] == "undefined"
    assert msgspec.json.decode(records[1]["raw"]) == bad
    out, err = capsys.readouterr()
    assert "line 1, message 2 of its batch: user_id" in err and "line 3: user_id" in err
    # Three lines with a blank one between, four messages (the envelope holds two).
    assert re.search(r"\blines\s+4\b", out) and re.search(r"\bmessages\s+4\b", out)


def test_the_bar_and_the_summary_count_lines_envelopes_and_a_last_line_without_newline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelopes = [encode({"batch": [{"type": "identify", "userId": f"u{i}-{j}",
                                    "anonymousId": f"a{i}-{j}", "messageId": f"m{i}-{j}"}
                                   for j in range(5)]}) for i in range(3)]
    path = tmp_path / "batches.ndjson"
    path.write_bytes(b"\n".join(envelopes))  # no newline after the last line
    assert main(["ingest", str(path), "--db", f"sqlite:///{tmp_path}/x.db"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\blines\s+3\b", out) and re.search(r"\bmessages\s+15\b", out), out
    # The bar counts lines (15 messages in 3 lines read as 15/3 before).
    assert re.search(r"\b3/3\b", out) and not re.search(r"\b15/3\b", out), out


def test_a_byte_order_mark_before_the_first_line_is_not_part_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "from-windows.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(LINES[:2]) + b"\r\n")
    db = f"sqlite:///{tmp_path}/x.db"
    assert main(["ingest", str(path), "--db", db]) == 0
    with idstitch.open(db) as ws:
        person = ws.profile("u1")
        assert person is not None and person.devices[0].token == "tok-1"


def test_a_rejects_file_that_cannot_be_written_is_named_and_the_reasons_still_shown(
    ndjson: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    assert main(["ingest", str(ndjson), "--db", db, "--rejects", "/dev/full"]) == 2
    err = capsys.readouterr().err
    assert "line 3:" in err and "line 5:" in err  # the reasons, before the failure
    assert "--rejects /dev/full: cannot write it: No space left on device" in err
    assert "the messages were ingested" in err
    with idstitch.open(db) as ws:
        assert ws.profile("u1") is not None
