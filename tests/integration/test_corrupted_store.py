"""A damaged store fails with typed errors naming what and where (issue 16, item 7).

Each test damages a real SQLite file or real PostgreSQL rows with raw SQL, as a disk fault, a
bad restore or another program writing the tables would: an unreadable event is a CorruptEvent
naming its position and device while the rest of the store stays readable; a damaged
projection row or tracking position is rebuilt from the log; a file that is not a database is
a StoreError naming the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

import idstitch
from idstitch.errors import CorruptEvent, StoreError
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


def raw(url: str, statement: str) -> None:
    """Run one statement on the store's own tables, behind idstitch's back."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(statement)
        return
    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    with psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(statement.encode())


EVENTS = {"sqlite": "idstitch_events", "postgres": "idstitch_events"}
POSITION = {"sqlite": "position", "postgres": "notification_id"}


def two_people(make_durable_ws: WorkspaceFactory) -> tuple[Workspace, str]:
    ws = make_durable_ws()
    ws.identify("phone", "ann", {"plan": "free"})   # 1
    ws.identify("laptop", "bob", {"plan": "pro"})   # 2
    ws.identify("phone", "ann", {"plan": "team"})   # 3
    url = ws.url
    ws.close()
    return ws, url


def test_an_unreadable_event_names_its_position_and_device(
    make_durable_ws: WorkspaceFactory, durable_kind: str,
) -> None:
    _, url = two_people(make_durable_ws)
    raw(url, f"UPDATE {EVENTS[durable_kind]} SET state = '\\xc1'::bytea "
             f"WHERE {POSITION[durable_kind]} = 3" if durable_kind == "postgres" else
        "UPDATE idstitch_events SET state = x'c1' WHERE position = 3")
    ws = make_durable_ws(url)
    # What reads the event: its person's audit, its device's commands, a rebuild.
    with pytest.raises(CorruptEvent) as audit:
        ws.history("ann")
    assert (audit.value.position, audit.value.device_id) == (3, "phone")
    assert "position 3" in str(audit.value) and "'phone'" in str(audit.value)
    with pytest.raises(CorruptEvent) as command:
        ws.identify("phone", "ann", {"plan": "x"})
    assert command.value.position == 3
    with pytest.raises(CorruptEvent):
        ws.rebuild()
    with pytest.raises(CorruptEvent):
        ws.catch_up()
    # The rest stays readable and writable: the projections stopped just before the event.
    bob = ws.profile("bob")
    assert bob is not None and bob.attributes == {"plan": "pro"}
    ann = ws.profile("ann")
    assert ann is not None and ann.attributes == {"plan": "free"}
    assert [c.position for c in ws.history("bob")] == [2]
    assert isinstance(ws.identify("laptop", "bob", {"plan": "max"}), int)
    assert isinstance(ws.identify("tablet", "cy"), int)
    assert ws.profile("cy") is None  # folded only once the damaged event is repaired
    # The same through ingest: other devices accepted, the damaged device's batch refused.
    report = ws.ingest([{"type": "identify", "anonymousId": "laptop", "userId": "bob",
                         "messageId": "y"}], parallel=False)
    assert report.accepted == 1
    with pytest.raises(CorruptEvent, match="position 3"):
        ws.ingest([{"type": "identify", "anonymousId": "phone", "userId": "ann",
                    "messageId": "z"}], parallel=False)


def test_damaged_projection_rows_are_rebuilt(
    make_durable_ws: WorkspaceFactory, durable_kind: str,
) -> None:
    _, url = two_people(make_durable_ws)
    garbage = "'\\xc1'::bytea" if durable_kind == "postgres" else "x'c1'"
    raw(url, f"UPDATE idstitch_rows SET doc = {garbage} WHERE kind IN ('p', 'd')")
    ws = make_durable_ws(url)
    with pytest.warns(RuntimeWarning, match="rebuilding identity"):
        ann = ws.profile("ann")
    assert ann is not None and ann.attributes == {"plan": "team"}
    assert [c.position for c in ws.history("ann")] == [1, 3]
    assert isinstance(ws.identify("phone", "ann", {"plan": "x"}), int)
    bob = ws.profile("bob")
    assert bob is not None and bob.attributes == {"plan": "pro"}


def test_damaged_rows_met_by_a_command_are_rebuilt(make_durable_ws: WorkspaceFactory,
                                                   durable_kind: str) -> None:
    _, url = two_people(make_durable_ws)
    garbage = "'\\xc1'::bytea" if durable_kind == "postgres" else "x'c1'"
    raw(url, f"UPDATE idstitch_rows SET doc = {garbage} WHERE kind = 'p'")
    ws = make_durable_ws(url)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        assert isinstance(ws.identify("laptop", "bob", {"plan": "max"}), int)
    bob = ws.profile("bob")
    assert bob is not None and bob.attributes == {"plan": "max"}


def test_a_tracking_position_that_is_not_a_number_is_rebuilt(tmp_path: Path) -> None:
    # SQLite only: PostgreSQL's BIGINT column cannot hold one.
    url = f"sqlite:///{tmp_path}/s.db"
    with idstitch.open(url) as ws:
        ws.identify("phone", "ann", {"plan": "free"})
        ws.identify("laptop", "bob", {"plan": "pro"})
    raw(url, "UPDATE idstitch_tracking SET position = 'abc'")
    with idstitch.open(url) as ws:
        ann = ws.profile("ann")
        assert ann is not None and ann.attributes == {"plan": "free"}
        assert ws.catch_up() == 2


@pytest.mark.parametrize("offset", [0, 4096 * 8])
def test_a_file_that_is_not_a_database_is_a_store_error_naming_it(
    tmp_path: Path, offset: int,
) -> None:
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    with idstitch.open(url) as ws:
        for i in range(200):
            ws.identify(f"d{i}", f"u{i}", {"note": "x" * 300})
    data = bytearray(path.read_bytes())
    data[offset:offset + 4096 * 20] = b"\xff" * 4096 * 20  # the header, or pages of the log
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=str(path)), idstitch.open(url) as ws:
        ws.history("u150")
        ws.rebuild()
