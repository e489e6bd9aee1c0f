"""The audit commands (`history`, `profile --as-of`, `explain`, `export`), run for real on SQLite
files: what they print is checked against what the API answers for the same store."""

from __future__ import annotations

import json
import os
import pydoc
import re
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from rich.console import Console, Group
from rich.text import Text

import idstitch
from idstitch.cli import main
from idstitch.cli.audit import show
from idstitch.testing import FrozenClock

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
RECORDED = datetime(2026, 3, 1, 8, tzinfo=UTC)
"""When the stitched story below is recorded (the workspace's clock), far from T0 on purpose:
a command that printed one time where the other belongs would fail."""
BLOCK = re.compile(r"^ *#(?P<position>\d+)\s+\S+ \S+Z\s+(?P<device>\S+)\s+(?P<event>\w+)?", re.M)
"""The first line of a timeline block: position, client time, device, event."""


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at the terminal width; a wide one keeps asserted phrases on one line."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("IDSTITCH_DATABASE_URL", raising=False)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A fresh SQLite store in the test's directory."""
    return f"sqlite:///{tmp_path}/x.db"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command line; its exit status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stitched(url: str) -> dict[str, int]:
    """An anonymous tablet merged into Dana, her phone, a late write, the phone handed to Sam,
    and a second user refused Dana's email; each step recorded an hour after the one before.
    The positions of each step, by name."""
    clock = FrozenClock(RECORDED)
    p: dict[str, int] = {}
    with idstitch.open(url, clock=clock) as ws:

        def step(name: str, position: int | None) -> None:
            assert position is not None
            p[name] = position
            clock.advance(hours=1)

        step("tablet_anon", ws.set_profile_attributes(
            "tablet", {"theme": "dark", "plan": "free"}, timestamp=at(1), message_id="m1"))
        step("phone_identify", ws.identify(
            "phone", "dana", {"first_name": "Dana", "email": "dana@example.com"},
            timestamp=at(2), message_id="m2"))
        step("token", ws.register_device_token("phone", "apns-1", platform="ios",
                                               timestamp=at(3)))
        step("tablet_merge", ws.identify("tablet", "dana@example.com", {"plan": "pro"},
                                         timestamp=at(4), message_id="m4"))
        step("late", ws.set_profile_attributes("tablet", {"first_name": "Old"},
                                               timestamp=at(0), message_id="m5"))
        step("sam", ws.identify("phone", "sam", {"first_name": "Sam"}, timestamp=at(6)))
        step("refused", ws.identify("watch", "u2", {"email": "dana@example.com"},
                                    timestamp=at(7)))
    return p


def blocks(out: str) -> list[tuple[int, str, str | None]]:
    """(position, device, event) of every block of a printed timeline, in order."""
    return [(int(m["position"]), m["device"], m["event"]) for m in BLOCK.finditer(out)]


# history


def test_history_prints_every_change_of_the_demo_person_in_log_order(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "demo", "--db", url)
    with idstitch.open(url) as ws:
        history = ws.history("lee-100")
        lee = ws.profile("lee-100")
        [undone] = [m for m in ws.merges("lee-100") if m.kind == "unmerged"]
    assert lee is not None

    status, out, err = run(capsys, "history", "lee-100", "--db", url)

    assert (status, err) == (0, "")
    # The last block: the support story's unmerge, a decision shown at its position.
    assert blocks(out) == [*((c.position, c.device_id, c.event) for c in history),
                           (undone.position, "workspace:decisions", "MergeUndone")]
    first, last = history[0].position, history[-1].position
    assert f"history of lee-100 · person {lee.person_id[:8]} · 8 changes, positions " \
           f"{first}-{last}" in out
    assert "favorite_genre: (none) -> sci-fi" in out
    assert "◆ converted: anonymous id" in out
    # The tablet's anonymous sessions were merged in: their events are marked, and the merge
    # that absorbed each names the same short id.
    absorbed = {c.person_id for c in history if c.person_id != lee.person_id}
    assert len(absorbed) == 2
    for person_id in absorbed:
        assert f"on person {person_id[:8]}, merged in later" in out
        assert f"◆ merged: retired person {person_id[:8]} -> lee-100 {lee.person_id[:8]}" in out
    # The merge carried the tablet's attribute over to Lee: a change of Lee's.
    assert out.count("plan_interest: (none) -> annual") == 2
    assert "showing all 8 changes" in out


def test_history_shows_both_clocks_message_ids_and_what_changed_nothing(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = stitched(url)

    status, out, _ = run(capsys, "history", "dana", "--db", url)

    assert status == 0
    late = out[out.index(f"#{p['late']} "):]
    recorded_late = RECORDED + timedelta(hours=4)
    assert late.startswith(f"#{p['late']}  2026-01-01 09:00:00Z  tablet  ProfileAttributesChanged")
    assert f"recorded {recorded_late:%Y-%m-%d %H:%M:%S}Z · message m5" in late
    assert 'set={"first_name":"Old"}' in late
    assert "(no attribute changed)" in late.split(f"#{p['sam']} ")[0]
    assert 'user_id=dana traits={"email":"dana@example.com","first_name":"Dana"}' in out
    assert "first_name: (none) -> Dana" in out


def test_history_marks_a_switch_made_by_another_persons_event(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = stitched(url)
    with idstitch.open(url) as ws:
        dana, sam = ws.profile("dana"), ws.profile("sam")
        assert dana is not None and sam is not None
        assert p["sam"] not in [c.position for c in ws.history("dana")]

    status, out, _ = run(capsys, "history", "dana", "--db", url)

    assert status == 0
    switch = out[out.index(f"#{p['sam']} "):]
    assert switch.startswith(f"#{p['sam']}  2026-01-01 09:00:06Z  phone")
    assert f"◆ switched: dana {dana.person_id[:8]} -> sam {sam.person_id[:8]}" in switch
    assert "(an event of another person's history)" in switch
    # It is Sam's event: his timeline shows it as his own change.
    status, out, _ = run(capsys, "history", "sam", "--db", url)
    assert blocks(out) == [(p["sam"], "phone", "Identified")]
    assert "first_name: (none) -> Sam" in out
    assert "showing the only change" in out


def test_history_marks_a_refused_identifier(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = stitched(url)
    with idstitch.open(url) as ws:
        dana = ws.profile("dana")
        assert dana is not None

    status, out, _ = run(capsys, "history", "u2", "--db", url)

    assert status == 0
    assert blocks(out) == [(p["refused"], "watch", "Identified")]
    assert (f"✗ refused email dana@example.com: held by another person: dana "
            f"{dana.person_id[:8]}") in out


def test_history_of_one_device(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = stitched(url)

    status, out, _ = run(capsys, "history", "dana", "--device", "tablet", "--db", url)

    assert status == 0
    assert [b[0] for b in blocks(out)] == [p["tablet_anon"], p["tablet_merge"], p["late"]]
    assert {b[1] for b in blocks(out)} == {"tablet"}
    # The count is of what is shown: the device's changes, then the whole history's.
    assert "3 changes by device tablet (of 5 in all)" in out
    assert "showing all 3 changes" in out

    status, out, _ = run(capsys, "history", "dana", "--device", "nope", "--db", url)
    assert status == 0
    assert blocks(out) == []
    assert "0 changes by device nope (of 5 in all)" in out
    assert "(no changes)" in out


def test_a_long_history_is_paged_with_counts_and_the_next_command(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with idstitch.open(url) as ws:
        for i in range(120):
            ws.set_profile_attributes("phone", {"n": i}, timestamp=at(i))
        ws.identify("phone", "busy", timestamp=at(200))
        positions = [c.position for c in ws.history("busy")]
    assert len(positions) == 121

    status, out, _ = run(capsys, "history", "busy", "--db", url)
    assert status == 0
    assert [b[0] for b in blocks(out)] == positions[:50]  # a page of 50 by default
    assert "showing 1-50 of 121 changes; the next page:" in out
    assert f"idstitch --db {url} history busy --offset 50" in out
    assert "n: 48 -> 49" in out and "n: 49 -> 50" not in out

    status, out, _ = run(capsys, "history", "busy", "--offset", "50", "--limit", "60",
                         "--db", url)
    assert [b[0] for b in blocks(out)] == positions[50:110]
    assert "showing 51-110 of 121 changes" in out
    assert "history busy --offset 110 --limit 60" in out

    status, out, _ = run(capsys, "history", "busy", "--offset", "120", "--db", url)
    assert [b[0] for b in blocks(out)] == positions[120:]
    assert "showing 121 of 121 changes" in out
    assert "next page" not in out

    status, out, _ = run(capsys, "history", "busy", "--limit", "0", "--db", url)
    assert [b[0] for b in blocks(out)] == positions
    assert "showing all 121 changes" in out

    status, out, _ = run(capsys, "history", "busy", "--offset", "500", "--db", url)
    assert status == 0
    assert blocks(out) == []
    assert "showing none of 121 changes (--offset 500 is past the end)" in out


@pytest.mark.parametrize("option", [["--limit", "-1"], ["--offset", "-5"], ["--limit", "ten"]])
def test_history_refuses_a_bad_page(
    option: list[str], url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["history", "x", "--db", url, *option])
    assert exited.value.code == 2
    assert option[0] in capsys.readouterr().err


# profile --as-of


def test_profile_as_of_a_position(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = stitched(url)

    status, out, err = run(capsys, "profile", "dana", "--as-of", str(p["token"]), "--db", url)

    assert (status, err) == (0, "")
    assert f"dana as of position {p['token']}" in out
    assert "apns-1" in out and "phone" in out
    assert "tablet" not in out and "theme" not in out  # the tablet was merged in later
    # After the merge, before the phone went to Sam: both devices, the tablet's theme.
    status, out, _ = run(capsys, "profile", "dana", "--as-of", str(p["late"]), "--db", url)
    assert status == 0
    assert "tablet" in out and "phone" in out and "theme" in out and "dark" in out
    # Now the phone is Sam's.
    status, out, _ = run(capsys, "profile", "dana", "--db", url)
    assert "tablet" in out and "apns-1" not in out


def test_profile_as_of_a_time_with_a_timezone(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = stitched(url)
    merged_at = RECORDED + timedelta(hours=3)  # when the tablet's identify was recorded
    just_before = merged_at - timedelta(minutes=1)

    status, out, _ = run(capsys, "profile", "dana", "--as-of",
                         just_before.isoformat().replace("+00:00", "Z"), "--db", url)
    assert status == 0
    assert f"dana as of {just_before:%Y-%m-%d %H:%M:%S}Z" in out
    assert "plan" not in out and "tablet" not in out

    # The same moment with an offset, and the merge's own moment.
    elsewhere = merged_at.astimezone(
        datetime.fromisoformat("2026-01-01T00:00:00+02:00").tzinfo)
    status, out, _ = run(capsys, "profile", "dana", "--as-of", elsewhere.isoformat(),
                         "--db", url)
    assert status == 0
    assert f"dana as of {merged_at:%Y-%m-%d %H:%M:%S}Z" in out
    assert "tablet" in out and "pro" in out
    with idstitch.open(url) as ws:
        then = ws.profile_as_of("dana", merged_at)
        assert then is not None and then.attributes["plan"] == "pro"
        assert ws.profile_as_of("dana", p["tablet_merge"]) == then


def test_profile_as_of_before_the_identifier_existed_exits_1(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = stitched(url)
    status, out, err = run(capsys, "profile", "dana@example.com", "--as-of",
                           str(p["tablet_anon"]), "--db", url)
    assert (status, out) == (1, "")
    assert f"no person found for dana@example.com as of position {p['tablet_anon']}" in err
    status, _, err = run(capsys, "profile", "dana", "--as-of", "2026-02-01T00:00:00Z",
                         "--db", url)
    assert status == 1
    assert "no person found for dana as of 2026-02-01 00:00:00Z" in err


@pytest.mark.parametrize(("value", "says"), [
    ("2026-03-01T12:00:00", "has no timezone"),
    ("2026-03-01", "has no timezone"),
    ("-1", "0 or more"),
    ("yesterday", "neither a log position nor an ISO-8601 time"),
])
def test_profile_as_of_refuses_what_names_no_moment(
    value: str, says: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stitched(url)
    status, out, err = run(capsys, "profile", "dana", "--as-of", value, "--db", url)
    assert (status, out) == (2, "")
    assert err.startswith("error: --as-of: ")
    assert says in err
    assert "Traceback" not in err


# explain


def test_explain_names_the_setting_event_and_the_writes_that_lost(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = stitched(url)
    with idstitch.open(url) as ws:
        dana = ws.profile("dana")
        assert dana is not None
        tablet_person = ws.history("dana")[0].person_id

    status, out, err = run(capsys, "explain", "dana", "first_name", "--db", url)

    assert (status, err) == (0, "")
    assert f"first_name = Dana   dana · person {dana.person_id[:8]}" in out
    assert re.search(rf"set by\s+#{p['phone_identify']}  Identified on phone", out)
    assert re.search(r"client time\s+2026-01-01 09:00:02Z", out)
    recorded = RECORDED + timedelta(hours=1)
    assert re.search(rf"recorded\s+{recorded:%Y-%m-%d %H:%M:%S}Z", out)
    assert re.search(r"message id\s+m2", out)
    assert "writes that lost to it (1)" in out
    late_recorded = RECORDED + timedelta(hours=4)
    lost = re.search(rf"^\s+{p['late']}\s+2026-01-01 09:00:00Z\s+tablet\s+Old\s+"
                     rf"arrived later with an older client time *\n"
                     rf"\s+{late_recorded:%Y-%m-%d %H:%M:%S}Z\s+ProfileAttributesChanged *\n",
                     out, re.M)
    assert lost is not None, out

    status, out, _ = run(capsys, "explain", "dana", "plan", "--db", url)
    assert status == 0
    assert "plan = pro" in out
    assert re.search(rf"set by\s+#{p['tablet_merge']}  Identified on tablet", out)
    assert re.search(rf"^\s+{p['tablet_anon']}\s+2026-01-01 09:00:01Z\s+tablet\s+free\s+"
                     rf"replaced by a newer write; on person {tablet_person[:8]}, merged in later",
                     out, re.M), out

    # The theme was set on the tablet's anonymous person, before it was merged in.
    status, out, _ = run(capsys, "explain", "dana", "theme", "--db", url)
    assert status == 0
    assert f"on person {tablet_person[:8]}, merged in later" in out
    assert "no other write of this key lost to it" in out


def test_explain_of_a_missing_attribute_or_person_exits_1(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stitched(url)
    status, out, err = run(capsys, "explain", "dana", "favorite_color", "--db", url)
    assert (status, out) == (1, "")
    assert "dana has no attribute 'favorite_color'" in err
    assert "email, first_name, plan, theme" in err
    status, out, err = run(capsys, "explain", "nobody-here", "plan", "--db", url)
    assert (status, out) == (1, "")
    assert "no person found for nobody-here" in err


# export


def test_export_writes_the_history_as_ndjson_and_nothing_else(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "demo", "--db", url)
    with idstitch.open(url) as ws:
        history = ws.history("lee-100")
        lee = ws.profile("lee-100")
    assert lee is not None

    status, out, err = run(capsys, "export", "lee-100", "--db", url)

    assert status == 0
    lines = out.splitlines()
    assert out.endswith("\n") and len(lines) == len(history) == 8
    for line, change in zip(lines, history, strict=True):
        decoded = msgspec.json.decode(line, type=idstitch.Change)
        for field in idstitch.Change.__struct_fields__:
            assert getattr(decoded, field) == getattr(change, field), field
        raw = json.loads(line)  # plain JSON for any reader, times as ISO-8601 strings
        assert datetime.fromisoformat(raw["timestamp"]) == change.timestamp
        assert datetime.fromisoformat(raw["recorded_at"]) == change.recorded_at
    assert [m["kind"] for line in lines for m in json.loads(line)["merges"]] == [
        "converted", "merged", "merged"]
    assert f"exported 8 changes of lee-100 (person {lee.person_id})" in err


def test_export_of_an_unknown_person_writes_nothing_and_exits_1(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "demo", "--db", url)
    status, out, err = run(capsys, "export", "nobody-here", "--db", url)
    assert (status, out) == (1, "")
    assert "no person found for nobody-here" in err


# all of them


@pytest.mark.parametrize("command", [
    ["history", "nobody-here"], ["explain", "nobody-here", "plan"],
    ["profile", "nobody-here", "--as-of", "3"], ["export", "nobody-here"]])
def test_an_unknown_identifier_exits_1_with_one_line(
    command: list[str], url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stitched(url)
    status, out, err = run(capsys, *command, "--db", url)
    assert (status, out) == (1, "")
    assert err.startswith("no person found for nobody-here")
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", [
    ["history", "x"], ["explain", "x", "a"], ["export", "x"], ["profile", "x", "--as-of", "1"]])
def test_an_invalid_store_url_is_one_error_line_and_exit_2(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *command, "--db", "nosuch://store")
    assert (status, out) == (2, "")
    assert err.startswith("error:") and "nosuch://store" in err


def test_help_names_the_audit_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("history", "explain", "export"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    out = capsys.readouterr().out
    assert "--as-of POS|TIME" in out and "timezone" in out
    with pytest.raises(SystemExit):
        main(["history", "--help"])
    out = capsys.readouterr().out
    for option in ("--limit", "--offset", "--device", "--no-pager"):
        assert option in out


# the pager


def test_a_page_taller_than_the_terminal_goes_through_the_pager(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    paged: list[str] = []
    monkeypatch.setattr(pydoc, "pager", paged.append)
    for name in ("less", "more"):  # pagers that can be started, whatever the machine has
        (tmp_path / name).write_text("#!/bin/sh\ncat\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("PAGER", "less")
    monkeypatch.setenv("LESS", "FRX")  # R: less shows colour, so the pager gets it
    console = Console(force_terminal=True, width=80, height=10)
    tall = Group(*(Text(f"line {i}", style="bold") for i in range(30)))

    show(console, tall, page=True)
    assert len(paged) == 1
    assert "line 29" in paged[0] and "\x1b[1m" in paged[0]

    monkeypatch.setenv("PAGER", "more")  # shows escape codes as they are: plain text then
    show(console, tall, page=True)
    assert "line 29" in paged[1] and "\x1b[" not in paged[1]

    show(console, tall, page=False)  # --no-pager
    show(console, Group(*(Text(f"line {i}") for i in range(5))), page=True)  # fits
    assert len(paged) == 2
    assert capsys.readouterr().out.count("line 29") == 1

    # A pager that cannot be started (a typo in PAGER): printed, not lost.
    monkeypatch.setenv("PAGER", "/nonexistent/pager -R")
    show(console, tall, page=True)
    assert len(paged) == 2
    assert capsys.readouterr().out.count("line 29") == 1


# the how-to's terminal sessions


HOWTO = Path(__file__).parents[2] / "docs" / "howto" / "answer-an-auditor.md"
FENCE = re.compile(r"^```(?P<info>[\w ]*)\n(?P<body>.*?)^```$", re.M | re.S)


def sessions(block: str) -> list[tuple[str, str]]:
    """The ``$ command`` lines of a console block, each with the output shown under it."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            out[-1][1].append(line)
    return [(command, "\n".join(lines)) for command, lines in out]


def test_the_auditor_howto_shows_what_the_commands_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """test_docs runs the page's Python; this also runs its ``console`` sessions, in page
    order on the store the Python built, and compares what they print (stdout and stderr,
    trailing spaces aside) with what the page shows, so the samples cannot drift."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("IDSTITCH_DATABASE_URL", "sqlite:///identity.db")
    text = HOWTO.read_text(encoding="utf-8")
    namespace: dict[str, object] = {}
    checked = 0
    for block in FENCE.finditer(text):
        if block["info"] == "python":
            padding = "\n" * text[:block.start("body")].count("\n")
            exec(compile(padding + block["body"], str(HOWTO), "exec"), namespace)
        elif block["info"] == "console":
            for command, shown in sessions(block["body"]):
                words = shlex.split(command)
                assert words[0] == "idstitch", command
                main(words[1:])
                captured = capsys.readouterr()
                printed = "\n".join(line.rstrip() for line in
                                    (captured.out + captured.err).rstrip("\n").splitlines())
                assert printed == shown.rstrip("\n"), f"$ {command}\n{printed}"
                checked += 1
    assert checked >= 4


def test_piped_history_shows_an_events_data_whole(url: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Piped output is never cut to a width (cli.md "Output"): an event's data was cut at
    110 characters whatever the output, so the keys after it were lost to grep."""
    traits = {f"key_{n:02d}": f"value number {n}" for n in range(12)}
    with idstitch.open(url) as ws:
        ws.identify("phone", "wide-user", traits)
    status, out, _ = run(capsys, "history", "wide-user", "--db", url)
    assert status == 0
    assert "…" not in out and '"key_11":"value number 11"' in out


def test_merges_shows_the_id_unmerge_takes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with idstitch.open(url) as ws:
        ws.identify("phone", "kim")
        ws.set_profile_attributes("tablet", {"plan": "trial"})
        ws.identify("tablet", "kim")  # the tablet's anonymous person merged into kim
        [merged] = [m for m in ws.merges("kim") if m.kind == "merged"]
    status, out, _ = run(capsys, "merges", "kim", "--db", url)
    assert status == 0
    [shown] = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", out)
    assert shown == merged.merge_id  # the conversion's id is not shown: nothing to undo
    status, _, _ = run(capsys, "unmerge", shown, "--reason", "the child's tablet", "--db", url)
    assert status == 0
    with idstitch.open(url) as ws:
        assert [m.kind for m in ws.merges("kim")][-1] == "unmerged"


def test_control_characters_from_sdk_traffic_never_reach_the_terminal(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A trait carrying an escape sequence cleared and recoloured the operator's screen."""
    with idstitch.open(url) as ws:
        ws.identify("phone\x1b[1m", "eve", {"note": "hi \x1b[2J\x1b[31mOWNED\nfake line",
                                             "k\x1b[41mEY": "v"}, message_id="m\x1b]0;PWNED")
        ws.register_device_token("phone\x1b[1m", "tok", platform="ios\x1b[41mX")
    for command in (("profile", "eve"), ("history", "eve"), ("device", "phone\x1b[1m"),
                    ("explain", "eve", "note"), ("merges", "eve")):
        status, out, _ = run(capsys, *command, "--db", url)
        assert status == 0, command
        assert "\x1b" not in out and "\nfake line" not in out, (command, out)
    status, out, _ = run(capsys, "profile", "eve", "--db", url)
    assert "hi \\x1b[2J\\x1b[31mOWNED\\nfake line" in out


def test_a_line_break_in_a_key_or_a_device_id_never_starts_a_line(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Keys, device ids and message ids come from SDK traffic too: a line break in one started
    a real line in profile and explain (ESC was escaped, the line break was not)."""
    with idstitch.open(url) as ws:
        ws.identify("dev\nFAKE-device", "eve", {"k\nFAKE-key": "v"}, message_id="m\nFAKE-mid")
    for command in (("profile", "eve"), ("explain", "eve", "k\nFAKE-key"),
                    ("explain", "eve", "nothing"), ("merges", "eve\nFAKE-typed"),
                    ("history", "eve")):
        _, out, err = run(capsys, *command, "--db", url)
        for line in (out + err).splitlines():
            assert not line.lstrip(" │|").startswith("FAKE"), (command, out, err)
    _, out, _ = run(capsys, "explain", "eve", "k\nFAKE-key", "--db", url)
    assert "k\\nFAKE-key" in out and "dev\\nFAKE-device" in out and "m\\nFAKE-mid" in out


def test_merges_on_a_narrow_terminal_keep_every_word_and_the_merge_id() -> None:
    """Squeezed into 60 or 80 columns the table cut the reason's words and dropped the
    merge id column; a narrow terminal gets one block a merge instead."""
    import io

    from idstitch.cli.common import show_merges

    with idstitch.open("memory:") as ws:
        ws.identify("phone", "kim")
        ws.identify("laptop", "kim-work")
        merge_id = ws.merge_persons("kim", "kim-work", reason="ticket 312: one customer after all")
        profile = ws.profile("kim")
        assert profile is not None
        for width in (60, 80, 250):
            out = io.StringIO()
            console = Console(file=out, force_terminal=True, width=width, color_system=None)
            show_merges(console, ws, profile, "kim")
            text = out.getvalue()
            assert merge_id in text and "ticket 312: one customer after all" in text, text


def test_the_history_heading_counts_the_same_on_every_page(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with idstitch.open(url) as ws:
        for device, other in (("d1", "b"), ("d2", "c")):
            ws.identify(device, "a")
            ws.identify(device, other)  # switches the device away: a merge of a's, b's event
    headings = set()
    for offset in range(2):
        status, out, _ = run(capsys, "history", "a", "--limit", "1", "--offset", str(offset),
                             "--db", url)
        assert status == 0
        headings.add(out.splitlines()[0])
    [heading] = headings
    assert heading.endswith("; and 2 merges made by other persons' events"), heading
