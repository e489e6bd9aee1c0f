"""A SQLite store written by an earlier idstitch (its log in eventsourcing's ``stored_events``
table): read commands refuse it without touching the file and say how to upgrade it;
``idstitch upgrade`` (or any command that writes) moves it to this version's tables, after
which the read commands answer as before. Real files, the real command line."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

import idstitch
from idstitch.cli import main


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at the terminal width; a wide one keeps asserted phrases on one line."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("IDSTITCH_DATABASE_URL", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def files(path: Path) -> str:
    """A digest of the database file and everything beside it."""
    found = sorted(path.parent.glob(path.name + "*"))
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in found)).hexdigest()


@pytest.fixture
def former(tmp_path: Path, former_log: Callable[[Path], None]) -> Path:
    """A store of the former layout, as an earlier idstitch left it (closed, checkpointed)."""
    path = tmp_path / "old.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        ws.identify("phone", "kim", {"email": "kim@example.com", "plan": "pro"})
        ws.identify("laptop", "kim", {"plan": "team"})
    former_log(path)
    return path


@pytest.mark.parametrize("command", [["verify"], ["digest"], ["profile", "kim"],
                                     ["history", "kim"], ["merges", "kim"], ["projections"]])
def test_a_read_command_refuses_a_store_of_the_former_layout(
        former: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    before = files(former)
    status, out, err = run(capsys, *command, "--db", f"sqlite:///{former}")
    assert status == 2 and out == ""
    assert "written by an earlier idstitch" in err and "idstitch upgrade --db" in err
    assert "Traceback" not in err
    assert files(former) == before  # not a byte changed, nothing created beside it


def test_upgrade_moves_the_store_and_the_read_commands_answer(
        former: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{former}"
    status, out, _ = run(capsys, "upgrade", "--db", url)
    assert status == 0 and "upgraded" in out and "3 events" not in out and "2 events" in out

    status, out, _ = run(capsys, "verify", "--db", url)
    assert status == 0 and "holds" in out
    status, out, _ = run(capsys, "profile", "kim", "--db", url)
    assert status == 0 and "team" in out and "kim@example.com" in out
    status, out, _ = run(capsys, "upgrade", "--db", url)  # once is enough
    assert status == 0 and "nothing to do" in out


def test_a_read_command_refuses_a_file_it_cannot_read_without_writing(
        former: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Something named like the file's WAL that SQLite cannot open read-only: only an open
    # that may write would get further, and such an open would upgrade the store.
    (former.parent / (former.name + "-wal")).mkdir()
    before, beside = former.read_bytes(), sorted(former.parent.iterdir())
    status, out, err = run(capsys, "profile", "kim", "--db", f"sqlite:///{former}")
    assert status == 2 and out == ""
    assert "without writing to it" in err and "Traceback" not in err
    assert former.read_bytes() == before
    assert sorted(former.parent.iterdir()) == beside  # nothing created
