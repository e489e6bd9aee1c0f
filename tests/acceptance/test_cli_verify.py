"""``idstitch digest`` and ``idstitch verify [--digest FILE]``, run for real on SQLite files,
tampered with by raw SQL: exit 0 while the log holds, 1 with the broken position named when it
does not, 2 with one line for a bad digest file; never a traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from idstitch.adapters.chain import GENESIS, link

import idstitch
from idstitch.cli import main


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at the terminal width; a wide one keeps asserted phrases on one line."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("IDSTITCH_DATABASE_URL", raising=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite store holding the demo's stories."""
    path = tmp_path / "x.db"
    assert main(["demo", "--db", f"sqlite:///{path}"]) == 0
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command line; its exit status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def digest_to(capsys: pytest.CaptureFixture[str], db: Path, path: Path) -> dict[str, object]:
    """``idstitch digest > path``: stdout is the digest alone."""
    status, out, _ = run(capsys, "digest", "--db", f"sqlite:///{db}")
    assert status == 0
    path.write_text(out)
    return json.loads(out)  # type: ignore[no-any-return]


def sql(db: Path, statement: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(statement)


def test_digest_then_verify_holds(db: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    digest = digest_to(capsys, db, tmp_path / "d.json")
    with idstitch.open(f"sqlite:///{db}") as ws:
        assert digest == {"position": ws.log.head(), "head": ws.digest().head}

    status, out, err = run(capsys, "verify", "--db", f"sqlite:///{db}", "--digest",
                           str(tmp_path / "d.json"))

    assert (status, err) == (0, "")
    assert out.startswith("ok: the chain holds over all")
    assert f"matches the digest at position {digest['position']}" in out


def test_a_changed_byte_fails_with_its_position(db: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    digest_to(capsys, db, tmp_path / "d.json")
    sql(db, "UPDATE idstitch_events SET state = CAST(state || x'00' AS BLOB) WHERE position = 7")

    status, out, err = run(capsys, "verify", "--db", f"sqlite:///{db}", "--digest",
                           str(tmp_path / "d.json"))

    assert status == 1
    assert "BROKEN at position 7" in out
    assert "Traceback" not in out + err
    status, out, _ = run(capsys, "verify", "--db", f"sqlite:///{db}")
    assert status == 1
    assert "BROKEN at position 7" in out


def test_a_rewrite_with_recomputed_hashes_fails_against_the_digest(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    digest = digest_to(capsys, db, tmp_path / "d.json")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE idstitch_events SET originator_version = 99 WHERE position = 3")
        rows = conn.execute("SELECT position, originator_id, originator_version, topic, state "
                            "FROM idstitch_log ORDER BY position").fetchall()
        conn.execute("DELETE FROM idstitch_chain")
        conn.execute("INSERT INTO idstitch_chain VALUES (1, ?)", (b"".join(
            link(GENESIS, [r[0] for r in rows], [r[1:] for r in rows])),))
    assert run(capsys, "verify", "--db", f"sqlite:///{db}")[0] == 0  # recomputed: it holds

    status, out, _ = run(capsys, "verify", "--db", f"sqlite:///{db}", "--digest",
                           str(tmp_path / "d.json"))

    assert status == 1
    assert f"BROKEN at position {digest['position']}" in out
    assert "rewritten" in out


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read"),
    ("not json", "is not a digest"),
    ('{"position": 3}', "missing required field `head`"),
    ('{"position": -1, "head": "' + "0" * 64 + '"}', "is not a digest"),
    ('{"position": 3, "head": "xyz"}', "is not a digest"),
])
def test_a_bad_digest_file_is_one_line_and_exit_2(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, says: str
) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    capsys.readouterr()

    status, out, err = run(capsys, "verify", "--db", f"sqlite:///{db}", "--digest", str(path))

    assert (status, out) == (2, "")
    assert err.startswith("error: --digest: ")
    assert says in err
    assert "Traceback" not in err
