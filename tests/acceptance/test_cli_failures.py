"""Every way a command can fail, run as the real ``idstitch`` process: a message and an exit
status, never a traceback, nothing half-done; ingest's rejected lines; explain paged."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

import idstitch

from .conftest import IDSTITCH, environment

encode = msgspec.json.Encoder().encode
GOOD = encode({"type": "identify", "userId": "u1", "anonymousId": "phone", "messageId": "m1"})
BAD = b'{"type": "identify", "userId": "undefined", "anonymousId": "tablet"}'


@pytest.fixture
def traffic(tmp_path: Path) -> Path:
    """Three lines, the second rejected (a placeholder user id)."""
    path = tmp_path / "traffic.ndjson"
    path.write_bytes(b"\n".join([GOOD, BAD, encode(
        {"type": "track", "event": "Opened", "anonymousId": "phone", "messageId": "m3"})]) + b"\n")
    return path


# ingest: rejected lines


def test_ingest_exits_3_when_lines_were_rejected_and_says_where_they_went(
    traffic: Path, tmp_path: Path, cli: Any
) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    rejects = tmp_path / "rejects.ndjson"

    ran = cli.run("ingest", str(traffic), "--db", url, "--rejects", str(rejects))

    cli.clean_failure(ran, 3, "line 2: ", f"rejected lines with their reasons (1): {rejects}")
    [row] = [msgspec.json.decode(line) for line in rejects.read_bytes().splitlines()]
    assert row["line"] == 2 and row["raw"] == BAD.decode() and "user_id" in row["reason"]

    without = cli.run("ingest", str(traffic), "--db", url)
    cli.clean_failure(without, 3, "1 rejected: their reasons are above",
                      "--rejects FILE writes every rejected line")

    allowed = cli.run("ingest", str(traffic), "--db", url, "--allow-rejects")
    assert allowed.status == 0, allowed


def test_ingest_without_rejects_exits_0_and_empties_an_old_rejects_file(
    tmp_path: Path, cli: Any
) -> None:
    clean = tmp_path / "clean.ndjson"
    clean.write_bytes(GOOD + b"\n")
    rejects = tmp_path / "rejects.ndjson"
    rejects.write_text("left over from another run\n")
    ran = cli.run("ingest", str(clean), "--db", f"sqlite:///{tmp_path}/x.db",
                  "--rejects", str(rejects))
    assert ran.status == 0, ran
    assert rejects.read_bytes() == b""


def _spellings(traffic: Path) -> dict[str, str]:
    folder = traffic.parent
    os.symlink(traffic, folder / "link.ndjson")
    os.link(traffic, folder / "hard.ndjson")
    (folder / "sub").mkdir()
    return {"the same path": str(traffic),
            "another spelling": f"{folder}/sub/../{traffic.name}",
            "a symlink": str(folder / "link.ndjson"),
            "a hard link": str(folder / "hard.ndjson")}


@pytest.mark.parametrize("how", ["the same path", "another spelling", "a symlink", "a hard link"])
def test_rejects_to_the_input_file_is_refused_before_anything(
    how: str, traffic: Path, tmp_path: Path, cli: Any
) -> None:
    before = traffic.read_bytes()
    target = _spellings(traffic)[how]

    ran = cli.run("ingest", str(traffic), "--db", f"sqlite:///{tmp_path}/x.db",
                  "--rejects", target)

    cli.clean_failure(ran, 2, "that is the input file")
    assert traffic.read_bytes() == before
    assert not (tmp_path / "x.db").exists()  # nothing ingested, no store started


def test_rejects_in_a_missing_folder_fails_before_anything_is_ingested(
    traffic: Path, tmp_path: Path, cli: Any
) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        ws.activate("watch")
        head = ws.log.head()

    ran = cli.run("ingest", str(traffic), "--db", url, "--rejects", "/nodir/x")

    cli.clean_failure(ran, 2, "--rejects /nodir/x", "does not exist")
    assert ran.out == ""
    with idstitch.open(url) as ws:
        assert ws.log.head() == head


def test_a_batch_size_below_1_is_a_usage_error_and_starts_no_store(
        traffic: Path, tmp_path: Path, cli: Any) -> None:
    ran = cli.run("ingest", str(traffic), "--db", f"sqlite:///{tmp_path}/new.db", "--batch", "0")
    cli.clean_failure(ran, 2, "--batch: 0 is not at least 1")
    assert ran.err.startswith("usage: idstitch ingest")
    assert not (tmp_path / "new.db").exists()


def test_rejects_to_the_store_file_is_refused(traffic: Path, tmp_path: Path, cli: Any) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        ws.activate("watch")
    ran = cli.run("ingest", str(traffic), "--db", url, "--rejects", str(tmp_path / "x.db"))
    cli.clean_failure(ran, 2, "the store's database file")
    with idstitch.open(url) as ws:
        assert ws.log.head() == 1


@pytest.mark.parametrize("name", ["new.db", "new.db-wal", "new.db-write.lock",
                                  "new.db-identity.lease", "new.db-mine.keep"])
def test_rejects_to_a_store_the_ingest_would_start_is_refused(
        traffic: Path, tmp_path: Path, cli: Any, name: str) -> None:
    """The store does not exist yet: the check by file identity found nothing, the ingest
    started the store and the rejects file then replaced it."""
    url = f"sqlite:///{tmp_path}/new.db"
    ran = cli.run("ingest", str(traffic), "--db", url, "--rejects", str(tmp_path / name))
    cli.clean_failure(ran, 2, "the store's database file")
    assert not (tmp_path / "new.db").exists() and not (tmp_path / name).exists()


# explain, paged


ROW = re.compile(r"^\s+(\d+)\s+2026-", re.M)


def test_explain_pages_the_writes_that_lost(tmp_path: Path, cli: Any) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    lines = [encode({"type": "identify", "userId": "u1", "anonymousId": "phone", "messageId": "w",
                     "traits": {"plan": "winner"}, "timestamp": "2026-06-01T00:00:00Z"})]
    lines += [encode({"type": "identify", "userId": "u1", "anonymousId": "phone",
                      "messageId": f"m{i}", "traits": {"plan": f"p{i}"},
                      "timestamp": "2026-01-01T00:00:00Z"}) for i in range(120)]
    with idstitch.open(url) as ws:
        assert ws.ingest(lines).accepted == 121

    first = cli.run("--db", url, "explain", "u1", "plan")
    assert first.status == 0, first
    assert len(ROW.findall(first.out)) == 50
    assert "writes that lost to it (120)" in first.out
    assert "showing 1-50 of 120 losing writes" in first.out
    assert f"idstitch --db {url} explain u1 plan --offset 50" in first.out

    last = cli.run("--db", url, "explain", "u1", "plan", "--offset", "100")
    assert len(ROW.findall(last.out)) == 20 and "showing 101-120 of 120" in last.out
    everything = cli.run("--db", url, "explain", "u1", "plan", "--limit", "0")
    assert len(ROW.findall(everything.out)) == 120
    assert "showing all 120 losing writes" in everything.out


# output that cannot be written, arguments that cannot be read


@pytest.fixture(scope="module")
def long_history(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A person whose export is far longer than a pipe's buffer."""
    url = f"sqlite:///{tmp_path_factory.mktemp('long')}/x.db"
    with idstitch.open(url) as ws:
        ws.ingest([{"type": "identify", "userId": "u1", "anonymousId": "phone",
                    "messageId": f"m{i}", "traits": {"n": i, "pad": "x" * 200}}
                   for i in range(1500)])
    return url


def test_as_of_with_thousands_of_digits_is_a_message(long_history: str, cli: Any) -> None:
    ran = cli.run("--db", long_history, "profile", "u1", "--as-of", "9" * 5000)
    cli.clean_failure(ran, 2, "--as-of", "at most")
    leading_zeros = cli.run("--db", long_history, "profile", "u1", "--as-of", "0" * 5000 + "7")
    assert leading_zeros.status == 0, leading_zeros


@pytest.mark.parametrize("command", [["export", "u1"], ["history", "u1", "--limit", "0"],
                                     ["device", "phone", "--json"]], ids=lambda c: c[0])
def test_a_full_disk_is_a_message_and_exit_2(
    command: list[str], long_history: str, cli: Any
) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([cli.path, "--db", long_history, *command], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: cannot write the output: No space left on device"


@pytest.mark.parametrize("command", [["export", "u1"], ["history", "u1", "--limit", "0"]],
                         ids=lambda c: c[0])
def test_a_closed_stdout_ends_the_command_quietly(
    command: list[str], long_history: str, cli: Any
) -> None:
    process = subprocess.Popen([cli.path, "--db", long_history, *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    status = process.wait(timeout=120)
    err = process.stderr.read().decode()
    assert (status, err) == (141, "")


def test_ctrl_c_is_a_message_and_exit_130(tmp_path: Path, cli: Any) -> None:
    big = tmp_path / "big.ndjson"
    big.write_bytes(b"".join(encode({"type": "identify", "userId": f"u{i}",
                                     "anonymousId": f"d{i}", "messageId": f"m{i}"}) + b"\n"
                             for i in range(400_000)))
    process = subprocess.Popen([cli.path, "ingest", str(big), "--db",
                                f"sqlite:///{tmp_path}/x.db", "--batch", "500"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert b"Traceback" not in err and b"interrupted" in err


def test_a_password_in_the_store_url_is_never_printed(postgres: Any, cli: Any) -> None:
    url = postgres.url("idstitch_tests").replace("://postgres@", "://postgres:S3cretPW@", 1)
    assert "S3cretPW@" in url  # the server trusts loopback: the password is not checked
    with idstitch.open(url) as ws:
        for n in range(3):
            ws.identify("phone", "kim", {"n": n})
    for ran in (cli.run("--db", url, "digest"), cli.run("--db", url, "history", "kim",
                                                         "--limit", "1")):
        assert ran.status == 0, ran
        assert "S3cretPW" not in ran.out + ran.err and "postgres:***@" in ran.out + ran.err


def test_a_failure_is_one_line_and_the_next_page_of_a_dash_id_runs(
        tmp_path: Path, cli: Any) -> None:
    refused = cli.run("--db", "postgresql://u:pw@127.0.0.1:1/nowhere", "history", "x")
    cli.clean_failure(refused, 2, "error: cannot connect")
    assert len(refused.err.strip().splitlines()) == 1 and "pw@" not in refused.err
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        for n in range(2):
            ws.identify("phone", "--db", {"n": n})
        for n in range(2):
            ws.identify("-ph", "-kim", {"n": n})
    first = cli.run("--db", url, "history", "--limit", "1", "--", "--db")
    hint = first.out.strip().splitlines()[-1].strip()
    assert hint.endswith("-- --db"), hint
    second = cli.run(*shlex.split(hint)[1:])
    assert second.status == 0 and "showing 2 of 2" in second.out, second
    first = cli.run("--db", url, "history", "--device=-ph", "--limit", "1", "--", "-kim")
    hint = first.out.strip().splitlines()[-1].strip()
    second = cli.run(*shlex.split(hint)[1:])
    assert second.status == 0 and "showing 2 of 2" in second.out, (hint, second)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")
def test_a_read_by_a_user_who_cannot_write_the_store_leaves_nothing() -> None:
    """Another user's read once left -wal/-shm files of its own beside the store, and the
    owner could no longer write it."""
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # (pytest's is root's alone)
        check_a_read_by_another_user(Path(folder))


def check_a_read_by_another_user(shared: Path) -> None:
    shared.chmod(0o1777)  # a shared folder, as /tmp
    url = f"sqlite:///{shared}/s.db"
    with idstitch.open(url) as ws:
        ws.identify("phone", "kim")
    (shared / "s.db").chmod(0o644)
    before = sorted(p.name for p in shared.iterdir())
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", IDSTITCH,
               "--db", url, "profile", "kim"]
    ran = subprocess.run(command, capture_output=True, text=True, env=environment(),
                         check=False, timeout=120)
    assert ran.returncode == 2 and "without writing to it" in ran.stderr, ran
    assert sorted(p.name for p in shared.iterdir()) == before
    with idstitch.open(url) as ws:  # the owner still writes it
        assert ws.identify("phone", "kim", {"n": 1}) is not None


def test_a_read_command_never_starts_a_postgresql_store(postgres: Any, cli: Any,
                                                        traffic: Path) -> None:
    """A mistyped schema once got the tables of a new, empty store from a read command."""
    url = postgres.url("idstitch_tests") + "?schema=typo_schema"
    for argv in (("profile", "someone"), ("projections",), ("verify",), ("project",)):
        ran = cli.run("--db", url, *argv, timeout=60)
        cli.clean_failure(ran, 2, "no idstitch store in database idstitch_tests, schema "
                                  "typo_schema")
    with psycopg.connect(postgres.url("idstitch_tests"), autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('typo_schema')").fetchone() == (None,)
    ran = cli.run("--db", url, "ingest", str(traffic), "--allow-rejects")  # it may start one
    assert ran.status == 0, ran
    assert cli.run("--db", url, "profile", "u1").status == 0


def test_rebuild_of_an_unknown_projection_draws_no_bar(tmp_path: Path, cli: Any) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        ws.identify("phone", "kim")
    ran = cli.run("--db", url, "rebuild", "nosuch")
    cli.clean_failure(ran, 2, "unknown projections ['nosuch']")
    assert "replaying" not in ran.out + ran.err


def test_rejects_named_after_the_store_are_the_callers(traffic: Path, tmp_path: Path,
                                                       cli: Any) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    ran = cli.run("ingest", str(traffic), "--db", url, "--rejects",
                  str(tmp_path / "app.db-rejects.ndjson"), "--allow-rejects")
    assert ran.status == 0, ran
    assert (tmp_path / "app.db-rejects.ndjson").read_text().count("\n") == 1


def test_stdout_closed_from_the_start_is_exit_2_and_stderr_closed_still_runs(
        long_history: str, cli: Any, tmp_path: Path) -> None:
    # `>&-`: a cron job's verify must not read as a broken log (exit 1), nor crash.
    closed = subprocess.run([cli.path, "--db", long_history, "verify"], stdout=None,
                            stderr=subprocess.PIPE, text=True, timeout=120, check=False,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2, closed.stderr
    assert closed.stderr.strip() == "error: cannot write the output: stdout is closed"
    # `2>&-`: the command runs; its exit status says how it went.
    url = f"sqlite:///{tmp_path}/new.db"
    lines = tmp_path / "in.ndjson"
    lines.write_text('{"type": "identify", "userId": "u1", "anonymousId": "a1"}\n')
    ingested = subprocess.run([cli.path, "--db", url, "ingest", str(lines)],
                              stdout=subprocess.PIPE, text=True, timeout=120, check=False,
                              preexec_fn=lambda: os.close(2))
    assert ingested.returncode == 0, ingested.stdout
    assert cli.run("--db", url, "profile", "u1").status == 0
