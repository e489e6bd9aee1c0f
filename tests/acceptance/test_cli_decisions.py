"""``idstitch merge``, run for real on SQLite files: its output, its errors and the store."""

from __future__ import annotations

from pathlib import Path

import pytest

import idstitch
from idstitch.cli import main


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at the terminal width; a wide one keeps asserted phrases on one line."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("IDSTITCH_DATABASE_URL", raising=False)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite store holding two identified persons."""
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        ws.identify("phone", "ann", {"plan": "pro"})
        ws.identify("laptop", "ann@example.com", {"plan": "free", "age": 40})
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_merge_prints_the_merge_id_and_merges(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--db", url, "merge", "ann", "ann@example.com",
                           "--reason", "one customer")
    assert status == 0, err
    merge_id = out.strip()
    assert "\n" not in merge_id and len(merge_id) == 36
    with idstitch.open(url) as ws:
        profile = ws.profile("ann@example.com")
        assert profile is not None and profile.attributes == {"plan": "pro", "age": 40}
        assert [(m.merge_id, m.reason) for m in ws.merges("ann") if m.kind == "explicit"] == [
            (merge_id, "one customer")]
    status, out, _ = run(capsys, "--db", url, "merges", "ann")
    assert status == 0 and "explicit" in out


def test_merge_never_creates_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "--db", f"sqlite:///{tmp_path}/none.db", "merge", "a", "b",
                         "--reason", "r")
    assert status == 2 and err
    assert not (tmp_path / "none.db").exists()


def test_unmerge_undoes_a_merge(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--db", url, "merge", "ann", "ann@example.com", "--reason", "dup")
    merge_id = out.strip()
    status, out, err = run(capsys, "--db", url, "unmerge", merge_id, "--reason", "wrong")
    assert status == 0 and out == "" and "undone" in err
    with idstitch.open(url) as ws:
        ann, other = ws.profile("ann"), ws.profile("ann@example.com")
        assert ann is not None and other is not None and ann.person_id != other.person_id
        assert other.attributes == {"plan": "free", "age": 40}
    status, out, _ = run(capsys, "--db", url, "merges", "ann")
    assert status == 0 and "unmerged" in out
    status, out, err = run(capsys, "--db", url, "unmerge", merge_id, "--reason", "again")
    assert status == 2 and "undone already" in err and "Traceback" not in err


def test_forget_erases_the_person_and_refuses_its_identifiers(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--db", url, "forget", "ann", "--reason", "ticket 9")
    assert status == 0 and out == "" and "forgot ann" in err
    with idstitch.open(url) as ws:
        assert ws.profile("ann") is None and ws.history("ann") == []
        assert ws.profile("ann@example.com") is not None  # another person
        assert ws.verify().ok
    status, out, err = run(capsys, "--db", url, "profile", "ann")
    assert status == 1
    status, out, err = run(capsys, "--db", url, "forget", "ann", "--reason", "again")
    assert status == 2 and "forgotten" in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "says"), [
    (("merge", "ann", "nobody", "--reason", "dup"), "secondary: person 'nobody' is unknown"),
    (("merge", "ann", "ann", "--reason", "dup"), "same person"),
    (("merge", "ann", "ann@example.com", "--reason", " "), "reason"),
    (("forget", "nobody", "--reason", "ticket 9"), "nobody"),
    (("forget", "ann", "--reason", " "), "reason"),
])
def test_a_refused_decision_is_one_error_line_and_changes_nothing(
    url: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str,
) -> None:
    with idstitch.open(url) as ws:
        before = ws.dump()
    status, out, err = run(capsys, "--db", url, *argv)
    assert status == 2 and out == "" and says in err and "Traceback" not in err
    with idstitch.open(url) as ws:
        assert ws.dump() == before and ws.profile("ann") is not None
