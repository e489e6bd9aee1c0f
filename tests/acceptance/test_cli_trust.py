"""The command line a user trusts, run as the real ``idstitch`` process: a read never creates
or rewrites a store, a file that is not a store is refused untouched, piped output is whole
and unpadded in one JSON style, and ``device`` shows a device."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import idstitch

READS = [
    ["profile", "lee-100"], ["profile", "lee-100", "--as-of", "3"], ["history", "lee-100"],
    ["explain", "lee-100", "favorite_genre"], ["export", "lee-100"], ["merges", "lee-100"],
    ["device", "android-lee-pixel"], ["rebuild"],
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo's store (written once; the tests here only read it, and check they do)."""
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{folder}/demo.db"
    from idstitch.cli import main  # the demo's own writing is not under test here

    assert main(["demo", "--db", url]) == 0
    return url


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# a store that is not there, or is not a store


@pytest.mark.parametrize("command", READS, ids=[" ".join(c) for c in READS])
def test_a_read_of_a_missing_store_says_so_and_creates_nothing(
    command: list[str], tmp_path: Path, cli: Any
) -> None:
    ran = cli.run("--db", f"sqlite:///{tmp_path}/missing.db", *command)

    cli.clean_failure(ran, 2, "no idstitch store at", "does not exist")
    assert cli.files_in(tmp_path) == []  # no database, -wal, -shm, lock or lease file


def test_the_default_store_is_not_created_by_a_read_either(tmp_path: Path, cli: Any) -> None:
    ran = cli.run("profile", "anyone", cwd=tmp_path)
    cli.clean_failure(ran, 2, "no idstitch store at idstitch.db")
    assert cli.files_in(tmp_path) == []


def test_a_store_another_process_has_open_is_read(tmp_path: Path, cli: Any) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        ws.identify("phone", "dana")
        assert (tmp_path / "x.db-wal").exists()  # the WAL of a store in use
        ran = cli.run("--db", url, "profile", "dana")
        assert ran.status == 0, ran
        assert "dana" in ran.out


def _another_apps_database(path: Path, *, wal: bool) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.commit()
    conn.close()


NOT_STORES = {
    "random bytes": ("it is not a SQLite database",
                     lambda p: p.write_bytes(bytes(range(256)) * 40)),
    "an empty file": ("the file is empty", lambda p: p.write_bytes(b"")),
    "another app's SQLite": ("a SQLite database of another application (tables: notes)",
                             lambda p: _another_apps_database(p, wal=False)),
    "another app's SQLite in WAL mode": ("another application",
                                         lambda p: _another_apps_database(p, wal=True)),
    "a directory": ("is a directory", lambda p: p.mkdir()),
}


@pytest.mark.parametrize("kind", list(NOT_STORES))
@pytest.mark.parametrize("command", [["profile", "x"], ["history", "x"], ["export", "x"],
                                     ["device", "x"], ["rebuild"]], ids=lambda c: c[0])
def test_a_file_that_is_not_a_store_is_refused_and_left_as_it_was(
    kind: str, command: list[str], tmp_path: Path, cli: Any
) -> None:
    reason, make = NOT_STORES[kind]
    target = tmp_path / "thing.db"
    make(target)
    before = cli.files_in(tmp_path), None if target.is_dir() else digest(target)

    ran = cli.run("--db", f"sqlite:///{target}", *command)

    cli.clean_failure(ran, 2, "is not an idstitch store" if kind != "a directory" else "",
                      reason)
    assert (cli.files_in(tmp_path), None if target.is_dir() else digest(target)) == before


def test_ingest_does_not_write_into_another_apps_database(tmp_path: Path, cli: Any) -> None:
    target = tmp_path / "notes.db"
    _another_apps_database(target, wal=False)
    before = digest(target)
    lines = tmp_path / "in.ndjson"
    lines.write_text('{"type":"identify","userId":"u1","anonymousId":"a1"}\n')

    ran = cli.run("ingest", str(lines), "--db", f"sqlite:///{target}")

    cli.clean_failure(ran, 2, "another application")
    assert digest(target) == before
    assert cli.files_in(tmp_path) == ["in.ndjson", "notes.db"]


# the policy


def test_policy_on_a_read_never_rewrites_the_store(demo: str, cli: Any) -> None:
    with idstitch.open(demo) as ws:
        assert ws.anonymous_merge == "merge"
        before = ws.dump()

    for command in (["profile", "lee-100"], ["history", "lee-100"], ["merges", "lee-100"]):
        ran = cli.run("--db", demo, "--policy", "switch", *command)
        cli.clean_failure(ran, 2, "built under anonymous_merge=merge",
                          "idstitch rebuild --policy switch")
        assert ran.out == ""
    # The same policy the store has is no change: the read goes on.
    assert cli.run("--db", demo, "--policy", "merge", "profile", "lee-100").status == 0

    with idstitch.open(demo) as ws:
        assert ws.anonymous_merge == "merge"
        assert ws.dump() == before


def test_policy_on_a_read_does_not_record_one_on_a_store_that_records_none(
        tmp_path: Path, cli: Any) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    idstitch.open(url).close()  # a store, with no policy recorded

    for command in (["profile", "dana"], ["projections"], ["verify"]):
        ran = cli.run("--db", url, "--policy", "switch", *command)
        cli.clean_failure(ran, 2, "records no anonymous_merge policy",
                          "idstitch rebuild --policy switch")
    # The default is what such a store is folded under: asking for it is no change.
    assert cli.run("--db", url, "--policy", "merge", "projections").status == 0

    with idstitch.open(url) as ws:
        assert ws.rows.meta("identity") is None
        ws.activate("tablet")
        ws.identify("phone", "dana")
        ws.identify("tablet", "dana")
        assert ws.merges("dana")[-1].kind == "merged"  # still stitched by the default


def test_only_rebuild_changes_the_policy_and_says_so(tmp_path: Path, cli: Any) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        ws.activate("tablet")
        ws.identify("phone", "dana")
        ws.identify("tablet", "dana")
        head = ws.log.head()
    lines = tmp_path / "in.ndjson"
    lines.write_text('{"type":"identify","userId":"sam","anonymousId":"watch"}\n')

    ingest = cli.run("ingest", str(lines), "--db", url, "--policy", "switch")
    cli.clean_failure(ingest, 2, "only `idstitch rebuild --policy switch` changes it")
    with idstitch.open(url) as ws:
        assert ws.log.head() == head  # nothing ingested
        assert ws.anonymous_merge == "merge"

    ran = cli.run("rebuild", "--db", url, "--policy", "switch")
    assert ran.status == 0, ran
    assert "changed the store's policy: anonymous_merge merge -> switch" in ran.out
    with idstitch.open(url) as ws:
        assert ws.anonymous_merge == "switch"
    again = cli.run("rebuild", "--db", url)
    assert again.status == 0 and "changed the store's policy" not in again.out


# piped output


def test_piped_tables_are_whole_and_carry_no_trailing_spaces(tmp_path: Path, cli: Any) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    long_value = "a value longer than any terminal: " + "x" * 200
    device = "android-device-with-a-rather-long-identifier-0123456789"
    with idstitch.open(url) as ws:
        ws.set_profile_attributes(device, {"note": long_value, "plan": "free"})
        ws.identify(device, "user-with-a-long-id-0123456789@example.com", {"plan": "pro"})
        ws.register_device_token(device, "t" * 150, platform="android")

    for command in (["profile", "user-with-a-long-id-0123456789@example.com"],
                    ["merges", "user-with-a-long-id-0123456789@example.com"],
                    ["history", "user-with-a-long-id-0123456789@example.com"],
                    ["explain", "user-with-a-long-id-0123456789@example.com", "plan"],
                    ["device", device]):
        ran = cli.run("--db", url, *command)
        assert ran.status == 0, ran
        lines = ran.out.splitlines()
        assert lines, command
        assert [line for line in lines if line != line.rstrip()] == [], command
        if command[0] in ("profile", "device"):
            assert any(("t" * 150) in line for line in lines), command
        if command[0] == "profile":
            assert any(long_value in line for line in lines)
        if command[0] == "merges":
            row = next(line for line in lines if "converted" in line)
            assert "user-with-a-long-id-0123456789@example.com" in row
            assert device in row and len(row) > 80


def test_one_json_style_everywhere(demo: str, tmp_path: Path, cli: Any) -> None:
    export = cli.run("--db", demo, "export", "lee-100")
    device = cli.run("--db", demo, "device", "android-lee-pixel", "--json")
    lines = tmp_path / "in.ndjson"
    lines.write_text('{"type":"identify","userId":"undefined","anonymousId":"é"}\n')
    rejects = tmp_path / "rejects.ndjson"
    cli.run("ingest", str(lines), "--db", f"sqlite:///{tmp_path}/x.db",
            "--rejects", str(rejects))

    written = [*export.out.splitlines(), *device.out.splitlines(),
               *rejects.read_text(encoding="utf-8").splitlines()]
    assert len(written) == 8 + 1 + 1
    assert all(cli.house_json(line) for line in written), written
    # Values inside tables and timelines use the same style: compact, keys sorted.
    history = cli.run("--db", demo, "history", "dana@example.com", "--limit", "0")
    assert '{"email":"dana@example.com","first_name":"Dana"}' in history.out


def test_history_of_a_device_counts_what_it_shows(demo: str, cli: Any) -> None:
    ran = cli.run("--db", demo, "history", "lee-100", "--device", "android-lee-tablet")
    with idstitch.open(demo) as ws:
        everything = ws.history("lee-100")
    shown = [c for c in everything if c.device_id == "android-lee-tablet"]
    assert 0 < len(shown) < len(everything)
    assert ran.status == 0
    head = ran.out.splitlines()[0]
    assert f"· {len(shown)} changes by device android-lee-tablet (of {len(everything)} in all)" \
        in head
    assert f"showing all {len(shown)} changes" in ran.out
    assert sum(line.startswith("#") for line in ran.out.splitlines()) == len(shown)


# device


def test_device_shows_a_device(demo: str, cli: Any) -> None:
    with idstitch.open(demo) as ws:
        phone = ws.device("ios-dana-iphone")
        assert phone is not None
        person = ws.profile(phone.person_id)
        assert person is not None

    ran = cli.run("--db", demo, "device", "ios-dana-iphone")

    assert (ran.status, ran.err) == (0, "")
    rows = {line.strip("│ ").split("  ")[0]: line for line in ran.out.splitlines()}
    assert phone.token is not None and phone.token in rows["token"]
    assert "ios" in rows["platform"]
    assert phone.person_id in rows["person"]
    assert phone.anonymous_id in rows["anonymous id"]
    assert "theme = dark" in rows["attributes"]
    assert "device_model = iPhone15,2" in ran.out and "collected" in rows
    assert "2026-01-01 09:00:40Z" in rows["last used"]
    assert "last status" in rows

    as_json = cli.run("--db", demo, "device", "ios-dana-iphone", "--json")
    assert as_json.status == 0 and cli.house_json(as_json.out.strip())
    import msgspec

    assert msgspec.json.decode(as_json.out, type=idstitch.Device) == phone


def test_an_unknown_device_is_a_message_and_exit_1(demo: str, cli: Any) -> None:
    for extra in ([], ["--json"]):
        ran = cli.run("--db", demo, "device", "no-such-device", *extra)
        cli.clean_failure(ran, 1, "no device found for no-such-device")
        assert ran.out == ""
