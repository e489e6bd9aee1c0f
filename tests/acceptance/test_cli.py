"""The ``idstitch`` command line, run for real on SQLite files: its output and the store."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import idstitch
from idstitch.cli import main

PIXEL = "android-lee-pixel"
TABLET = "android-lee-tablet"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at the terminal width; a wide one keeps asserted phrases on one line."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("IDSTITCH_DATABASE_URL", raising=False)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A fresh SQLite store in the test's directory."""
    return f"sqlite:///{tmp_path}/x.db"


def first_anonymous_id(device_id: str) -> str:
    """The anonymous id a device gets when it first appears (deterministic by the spec)."""
    with idstitch.open("memory:") as ws:
        ws.activate(device_id)
        device = ws.device(device_id)
        assert device is not None
        return device.anonymous_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command line; its exit status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_demo_writes_a_fresh_default_file_and_tells_the_stories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "idstitch-demo.db").write_bytes(b"")  # left by a run killed at its start

    status, out, err = run(capsys, "demo")

    assert (status, err) == (0, "")
    assert "identify dana@example.com" in out
    assert "converted: the anonymous person becomes dana@example.com" in out
    assert "switched: device leaves dana@example.com for sam-7" in out
    assert "merged: anonymous" in out
    assert "explicit: lee-100 joins sam-7" in out
    assert "unmerged: sam-7 and lee-100 apart again" in out
    assert "erased: keys destroyed; profile and history of kim-55 answer nothing" in out
    assert "refused: userId: names a person who was forgotten" in out
    assert "sqlite:///idstitch-demo.db" in out
    assert not (tmp_path / "idstitch.db").exists()
    with idstitch.open("sqlite:///idstitch-demo.db") as ws:
        dana = ws.profile("dana@example.com")
        assert dana is not None
        assert dana.identified
        assert dana.attributes["first_name"] == "Dana"
        assert dana.attributes["favorite_food"] == "pizza"
        assert dana.attributes["referral_source"] == "app_store_ad"
        assert dana.devices == []

        sam = ws.profile("sam-7")
        assert sam is not None
        assert sam.devices == []
        assert "first_name" not in sam.attributes

        phone = ws.device("ios-dana-iphone")
        assert phone is not None
        assert phone.token == "apns-token-dana-2"
        assert phone.flat["network_cellular"] is True
        assert phone.attributes == {"theme": "dark"}
        anonymous = ws.profile_of_device("ios-dana-iphone")
        assert anonymous is not None
        assert not anonymous.identified

        lee = ws.profile("lee-100")
        assert lee is not None
        assert {first_anonymous_id(PIXEL), first_anonymous_id(TABLET)} <= set(lee.anonymous_ids)
        assert {d.device_id for d in lee.devices} == {PIXEL, TABLET}
        assert lee.attributes == {"favorite_genre": "sci-fi", "plan_interest": "annual"}
        kinds = [m.kind for m in ws.merges("lee-100")]
        assert kinds == ["converted", "merged", "merged", "unmerged"]
        [undone] = [m for m in ws.merges("sam-7") if m.kind == "unmerged"]
        assert undone.reason == "ticket 312: two customers after all"
        # The erasure request: nothing of Kim answers, and her laptop stays on what remains
        # of her, nameless (identified, no identifier, no value).
        assert ws.profile("kim-55") is None and ws.profile("kim@example.com") is None
        assert ws.history("kim-55") == []
        laptop = ws.profile_of_device("web-kim-laptop")
        assert laptop is not None and laptop.identified and laptop.identifiers == {}
        assert laptop.attributes == {} and ws.profile(laptop.person_id) is None
        assert ws.verify().ok


def test_demo_reruns_tell_the_same_story(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    first = run(capsys, "demo")
    second = run(capsys, "demo")
    assert first == second
    assert first[0] == 0


def test_demo_never_deletes_a_file_of_its_name_that_is_not_an_idstitch_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with closing(sqlite3.connect("idstitch-demo.db")) as other:
        other.execute("CREATE TABLE precious (x)")
        other.execute("INSERT INTO precious VALUES (42)")
        other.commit()
    status, out, err = run(capsys, "demo")
    assert status == 2 and out == ""
    assert "not an idstitch store" in err and "precious" in err
    with closing(sqlite3.connect("idstitch-demo.db")) as other:
        assert other.execute("SELECT x FROM precious").fetchall() == [(42,)]
    Path("idstitch-demo.db").write_text("notes\n")
    assert run(capsys, "demo")[0] == 2
    assert Path("idstitch-demo.db").read_text() == "notes\n"


def test_demo_under_switch_leaves_the_tablet_anonymous_person_behind(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "demo", "--db", url, "--policy", "switch")

    assert status == 0
    assert "anonymous_merge=switch" in out
    with idstitch.open(url, anonymous_merge="switch") as ws:
        lee = ws.profile("lee-100")
        assert lee is not None
        assert lee.attributes == {"favorite_genre": "sci-fi"}
        assert first_anonymous_id(TABLET) not in lee.anonymous_ids
        orphan = ws.profile(first_anonymous_id(TABLET))
        assert orphan is not None
        assert not orphan.identified
        assert orphan.attributes == {"plan_interest": "annual"}
        assert orphan.devices == []
        assert [m.kind for m in ws.merges("lee-100")] == ["converted", "switched", "switched",
                                                          "unmerged"]


def test_demo_refuses_a_store_that_already_holds_events(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "demo", "--db", url)[0] == 0
    status, out, err = run(capsys, "demo", "--db", url)
    assert status == 2
    assert "error:" in err
    assert "already holds" in err
    assert out == ""


def test_profile_prints_the_person(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "demo", "--db", url)

    status, out, err = run(capsys, "profile", "dana@example.com", "--db", url)

    assert (status, err) == (0, "")
    for text in ("dana@example.com", "first_name", "Dana", "favorite_food", "pizza",
                 "identified", "yes"):
        assert text in out


def test_profile_shows_devices_and_flattened_attributes(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "demo", "--db", url)

    # --db before the subcommand works as well as after it.
    status, out, _ = run(capsys, "--db", url, "profile", first_anonymous_id("ios-dana-iphone"))
    assert status == 0
    assert "dana@example.com" in out  # the first anonymous session was converted into Dana

    with idstitch.open(url) as ws:
        anonymous = ws.profile_of_device("ios-dana-iphone")
        assert anonymous is not None
        person_id = anonymous.person_id
    status, out, _ = run(capsys, "--db", url, "profile", f"cio_{person_id}")
    assert status == 0
    for text in ("ios-dana-iphone", "(ios)", "apns-token-dana-2", "2026-01-01 09:00:40Z",
                 "network_cellular = true", "theme = dark", "no (anonymous)"):
        assert text in out


def test_profile_of_an_unknown_identifier_exits_1(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "demo", "--db", url)
    status, out, err = run(capsys, "profile", "nobody-here", "--db", url)
    assert status == 1
    assert "no person found for nobody-here" in out + err


def test_merges_lists_conversion_and_switch(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "demo", "--db", url)

    status, out, _ = run(capsys, "merges", "dana@example.com", "--db", url)

    assert status == 0
    assert "converted" in out
    assert "switched" in out
    assert "sam-7" in out
    assert "ios-dana-iphone" in out
    assert run(capsys, "merges", "nobody-here", "--db", url)[0] == 1


def test_read_commands_keep_the_policy_the_store_was_built_under(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "demo", "--db", url, "--policy", "switch")

    status, out, _ = run(capsys, "profile", "lee-100", "--db", url)

    assert status == 0
    assert "plan_interest" not in out
    with idstitch.open(url, anonymous_merge="switch") as ws:
        lee = ws.profile("lee-100")
        assert lee is not None
        assert "plan_interest" not in lee.attributes


def test_rebuild_replays_every_event_to_the_same_rows(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "demo", "--db", url)
    with idstitch.open(url) as ws:
        head, before = ws.log.head(), ws.dump()

    status, out, err = run(capsys, "rebuild", "--db", url)

    assert (status, err) == (0, "")
    assert f"replayed {head} events" in out
    with idstitch.open(url) as ws:
        assert ws.dump() == before


def test_the_environment_names_the_store(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "demo", "--db", url)
    monkeypatch.setenv("IDSTITCH_DATABASE_URL", url)
    status, out, _ = run(capsys, "profile", "sam-7")
    assert status == 0
    assert "sam-7" in out


@pytest.mark.parametrize("command", [["profile", "x"], ["merges", "x"], ["rebuild"], ["demo"]])
def test_an_invalid_store_url_is_one_error_line_and_exit_2(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *command, "--db", "nosuch://store")
    assert status == 2
    assert err.startswith("error:")
    assert "nosuch://store" in err
    assert "Traceback" not in out + err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "profile", "merges", "rebuild", "--db"):
        assert command in out


def test_version_says_which_idstitch_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"idstitch {idstitch.__version__}"


def test_demo_in_memory_suggests_no_command_on_a_store_that_is_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, _ = run(capsys, "demo", "--db", "memory:")
    assert status == 0 and "events written to memory:" in out
    assert "next:" not in out
    status, out, _ = run(capsys, "demo")  # a file: the next command to try
    assert "next: idstitch --db" in out
