"""The chain on shared, long-lived stores: several writer processes keep it one line, and a
store made before the chain is chained once when it is opened."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from idstitch.adapters.chain import GENESIS, link

import idstitch
from idstitch.testing import TemporaryPostgres
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]

WORKER = """
import json, sys
import idstitch

url, path = sys.argv[1], sys.argv[2]
messages = json.loads(open(path).read())
with idstitch.open(url) as ws:
    print("ready", flush=True)
    sys.stdin.readline()
    report = ws.ingest(messages, batch_size=7, parallel=False)
    print(json.dumps(report.accepted), flush=True)
"""


def messages(writer: int, n: int) -> list[dict[str, Any]]:
    """Traffic on devices both writers share: appends interleave and conflict."""
    return [{"type": "identify", "anonymousId": f"dev{i % 9}", "userId": f"u{(i + writer) % 5}",
             "traits": {"k": i, "w": writer}, "messageId": f"w{writer}-{i}"} for i in range(n)]


def run_two_writers(url: str, tmp: Path) -> int:
    """Two processes ingest into one store at once; how many messages they accepted."""
    script = tmp / "worker.py"
    script.write_text(WORKER)
    procs = []
    for w in range(2):
        path = tmp / f"share{w}.json"
        path.write_text(json.dumps(messages(w, 300)))
        procs.append(subprocess.Popen([sys.executable, str(script), url, str(path)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    accepted = 0
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            accepted += int(proc.stdout.readline())
    finally:
        for proc in procs:
            assert proc.wait(timeout=120) == 0
    return accepted


def chain_rows(url: str) -> list[tuple[int, bytes]]:
    """The chain entries of a SQLite or PostgreSQL store, read around idstitch."""
    return [(int(p) + i, bytes(h)[i * 32 : (i + 1) * 32]) for p, h in execute(
        url, "SELECT position, hashes FROM idstitch_chain ORDER BY position")
        for i in range(len(h) // 32)]


def execute(url: str, sql: str) -> list[Any]:
    """One statement on the store behind ``url`` (DDL and DML commit)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):], isolation_level=None) as conn:
            return conn.execute(sql).fetchall()
    query = parse_qs(urlsplit(url).query)
    options = f"-c search_path={query['schema'][0]}" if "schema" in query else ""
    with psycopg.connect(url.split("?")[0], autocommit=True, options=options) as pg:
        cur = pg.execute(sql)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def check_one_line(url: str) -> None:
    """Every event has an entry and the entries are one chain (no fork, no gap)."""
    with idstitch.open(url) as ws:
        result = ws.verify()
        head = ws.log.head()
        with ws.log.fast.chain_view() as view:
            events = view.stored_rows(0, 10**6)
    assert result.ok, result
    assert result.checked == len(events) > 400
    entries = chain_rows(url)
    assert [p for p, _ in entries] == [e[0] for e in events]
    assert entries[-1][0] == head
    assert [h for _, h in entries] == link(GENESIS, [e[0] for e in events],
                                           [e[1:] for e in events])
    # One run an append: many appends interleaved (ingest batches of 7 messages).
    assert len(execute(url, "SELECT position FROM idstitch_chain")) > 50


def test_two_writer_processes_on_sqlite_keep_one_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    with idstitch.open(url):
        pass
    assert run_two_writers(url, tmp_path) > 400
    check_one_line(url)


def test_two_writer_processes_on_postgres_keep_one_chain(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    url = postgres.create_database("chain_writers")
    with idstitch.open(url):
        pass
    assert run_two_writers(url, tmp_path) > 400
    check_one_line(url)


def store_from_before_the_chain(make_durable_ws: WorkspaceFactory) -> tuple[str, int]:
    """A store as one written by the version before the chain holds it (the events, no chain
    tables): its URL and its head."""
    ws = make_durable_ws()
    for d in range(5):
        ws.identify(f"dev{d}", f"user{d}@example.com", {"n": d})
    head = ws.log.head()
    ws.close()
    execute(ws.url, "DROP TABLE idstitch_chain")
    execute(ws.url, "DROP TABLE idstitch_chain_start")
    return ws.url, head


def test_a_store_from_before_the_chain_is_chained_on_open(
    make_durable_ws: WorkspaceFactory
) -> None:
    url, head = store_from_before_the_chain(make_durable_ws)
    with idstitch.open(url) as upgraded:
        result = upgraded.verify()
        assert (result.ok, result.checked) == (True, head)
        assert f"before position {head + 1} were chained when the store was upgraded" in (
            result.reason)
        upgraded.identify("dev0", "later@example.com")
        assert upgraded.verify().checked == head + 1
        assert len(chain_rows(url)) == head + 1
        assert execute(url, "SELECT position FROM idstitch_chain_start") == [(head + 1,)]
        # The events from before the upgrade are chained now: a later change to one is caught.
        table, column = (("idstitch_events", "position") if url.startswith("sqlite")
                         else ("idstitch_events", "notification_id"))
        execute(url, f"UPDATE {table} SET originator_version = originator_version + 100 "
                     f"WHERE {column} = 2")
        assert upgraded.verify().first_break == 2
    with idstitch.open(url) as again:  # the upgrade runs once: the start stays where it was
        assert execute(url, "SELECT position FROM idstitch_chain_start") == [(head + 1,)]
        assert again.verify().first_break == 2


def test_an_interrupted_upgrade_to_the_chain_is_done_again_at_the_next_open(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain's tables are made in the transaction that chains the events: an upgrade
    stopped half way (Ctrl-C, a lock timeout) leaves no tables, not tables without a start
    that no open would chain again."""
    from idstitch.adapters import sqlchain

    url, head = store_from_before_the_chain(make_durable_ws)
    real = sqlchain.link

    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt("Ctrl-C during the chain upgrade")

    monkeypatch.setattr(sqlchain, "link", interrupted)
    with pytest.raises(KeyboardInterrupt):
        idstitch.open(url)
    monkeypatch.setattr(sqlchain, "link", real)
    with idstitch.open(url) as upgraded:
        result = upgraded.verify()
        assert (result.ok, result.checked) == (True, head), result
    assert execute(url, "SELECT position FROM idstitch_chain_start") == [(head + 1,)]


def test_chain_tables_emptied_around_idstitch_are_never_chained_again(
    make_durable_ws: WorkspaceFactory
) -> None:
    """A store found with its chain tables but without their start was not made before the
    chain: chaining its rows again would vouch for what they hold now (an event changed, its
    chain deleted, would verify). Opening it writes nothing; verify names the break."""
    ws = make_durable_ws()
    url = ws.url
    for d in range(4):
        ws.identify(f"dev{d}", f"user{d}@example.com", {"n": d})
    head = ws.log.head()
    ws.close()
    execute(url, "DELETE FROM idstitch_chain_start")
    with idstitch.open(url) as opened:  # the chain is whole: only its start is gone
        result = opened.verify()
        assert (result.ok, result.checked) == (True, head)
        assert "upgraded" not in result.reason
    assert execute(url, "SELECT position FROM idstitch_chain_start") == []
    column = "position" if url.startswith("sqlite") else "notification_id"
    execute(url, f"UPDATE idstitch_events SET originator_version = originator_version + 100 "
                 f"WHERE {column} = 3")
    execute(url, "DELETE FROM idstitch_chain")
    with idstitch.open(url) as opened:
        result = opened.verify()
        assert (result.ok, result.first_break) == (False, 1)
        assert "no chain entry" in result.reason
    assert chain_rows(url) == [] and execute(
        url, "SELECT position FROM idstitch_chain_start") == []


def test_appends_go_on_after_the_last_events_were_deleted(
    make_durable_ws: WorkspaceFactory
) -> None:
    """SQLite hands the positions of deleted last rows out again (PostgreSQL does not): either
    way the next appends succeed and verify names the first deleted position."""
    ws = make_durable_ws()
    for d in range(4):
        ws.identify(f"dev{d}", f"user{d}@example.com")
    head = ws.log.head()
    table, column = (("idstitch_events", "position") if ws.url.startswith("sqlite")
                     else ("idstitch_events", "notification_id"))
    execute(ws.url, f"DELETE FROM {table} WHERE {column} >= {head - 1}")

    assert ws.identify("dev9", "late@example.com") is not None
    ws.identify("dev8", "later@example.com")

    result = ws.verify()
    assert (result.ok, result.first_break) == (False, head - 1)
