"""The verifiable log (issue 15): every append chains each position's hash in the same
transaction, ``ws.verify()`` names the first position where the stored log stops matching its
chain, and ``against=`` an earlier digest catches a log rewritten with recomputed hashes.

Tampering is done as someone with the database would: raw SQL on the real SQLite file and
PostgreSQL schema (the memory store: its recorder's list), around idstitch."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from idstitch.adapters.chain import GENESIS, link, runs_of
from idstitch.adapters.memory_log import MemoryLog

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
Row = tuple[int, str, int, str, bytes]
"""(position, originator id hex, version, topic, state)."""


class RawLog:
    """A workspace's stored events and chain entries, read and written around idstitch."""

    def __init__(self, ws: Workspace) -> None:
        self._memory: MemoryLog | None = None
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        if ws.url == "memory:":
            assert isinstance(ws.log.fast, MemoryLog)
            self._memory = ws.log.fast
        elif ws.url.startswith("sqlite:///"):
            self._sqlite = sqlite3.connect(ws.url[len("sqlite:///"):], isolation_level=None)
        else:
            schema = parse_qs(urlsplit(ws.url).query)["schema"][0]
            self._pg = psycopg.connect(ws.url.split("?")[0], autocommit=True,
                                       options=f"-c search_path={schema}")
        self._saved: tuple[list[Row], list[tuple[int, bytes]]] | None = None

    def close(self) -> None:
        """Close the connection."""
        for conn in (self._sqlite, self._pg):
            if conn is not None:
                conn.close()

    def _sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """One statement in either SQL store's words (EVENTS, POS: its table and position)."""
        if self._sqlite is not None:
            # Rows read through the idstitch_log view (each with its stream's id and its
            # topic's name), written to the events table with their numbers.
            sql = sql.replace("%s", "?").replace("POS", "position")
            if sql.startswith("INSERT INTO EVENTS"):
                _, oid, _, topic, _ = params
                self._sqlite.execute("INSERT OR IGNORE INTO idstitch_streams (id) VALUES (?)",
                                     (oid,))
                self._sqlite.execute("INSERT OR IGNORE INTO idstitch_topics (topic) VALUES (?)",
                                     (topic,))
                sql = ("INSERT INTO idstitch_events (position, stream, originator_version, "
                       "topic_code, state) VALUES (?, (SELECT number FROM idstitch_streams "
                       "WHERE id = ?), ?, (SELECT code FROM idstitch_topics WHERE topic = ?), ?)")
            else:
                sql = sql.replace("EVENTS", "idstitch_log" if sql.startswith("SELECT")
                                  else "idstitch_events")
            return self._sqlite.execute(sql, params).fetchall()
        assert self._pg is not None
        sql = sql.replace("EVENTS", "idstitch_events").replace("POS", "notification_id")
        cur = self._pg.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []

    def rows(self) -> list[Row]:
        """Every stored event row, by position."""
        if self._memory is not None:
            return [(i, UUID(str(e.originator_id)).hex, e.originator_version, e.topic, e.state)
                    for i, e in enumerate(self._memory._stored, 1)]
        oid = ("originator_id" if self._sqlite is not None
               else "replace(originator_id::text, '-', '')")
        return [(int(p), o, int(v), t, bytes(s)) for p, o, v, t, s in self._sql(
            f"SELECT POS, {oid}, originator_version, topic, state FROM EVENTS ORDER BY POS")]

    def chain(self) -> list[tuple[int, bytes]]:
        """Every chain entry, by position (the SQL stores keep them in runs, one an append)."""
        if self._memory is not None:
            return list(self._memory._chain)
        return [(int(p) + i, bytes(h)[i * 32 : (i + 1) * 32]) for p, h in self._sql(
            "SELECT position, hashes FROM idstitch_chain ORDER BY position")
            for i in range(len(h) // 32)]

    def _write_chain(self, entries: list[tuple[int, bytes]]) -> None:
        """Replace the whole chain by these entries, as runs of consecutive positions."""
        self._sql("DELETE FROM idstitch_chain")
        for first, hashes in runs_of([p for p, _ in entries], [h for _, h in entries]):
            self._sql("INSERT INTO idstitch_chain (position, hashes) VALUES (%s, %s)",
                      (first, hashes))

    def put_rows(self, rows: list[Row]) -> None:
        """Write these event rows at their positions, over what is there."""
        if self._memory is not None:
            stored = self._memory._stored
            for position, *rest in rows:
                if position <= len(stored):
                    stored[position - 1] = _stored(*rest)
                else:
                    assert position == len(stored) + 1
                    stored.append(_stored(*rest))
            return
        for position, oid, version, topic, state in rows:
            self._sql("DELETE FROM EVENTS WHERE POS = %s", (position,))
            self._sql("INSERT INTO EVENTS (POS, originator_id, originator_version, topic, state) "
                      "VALUES (%s, %s, %s, %s, %s)",
                      (position, oid if self._sqlite else UUID(oid), version, topic, state))

    def delete_rows(self, positions: list[int]) -> None:
        """Delete these events (in the memory store, the later ones move down a position)."""
        if self._memory is not None:
            for position in sorted(positions, reverse=True):
                del self._memory._stored[position - 1]
            return
        for position in positions:
            self._sql("DELETE FROM EVENTS WHERE POS = %s", (position,))

    def put_chain(self, entries: list[tuple[int, bytes]]) -> None:
        """Write these chain entries, over those at their positions."""
        if self._memory is not None:
            kept = dict(self._memory._chain)
            kept.update(entries)
            self._memory._chain[:] = sorted(kept.items())
            return
        kept = dict(self.chain())
        kept.update(entries)
        self._write_chain(sorted(kept.items()))

    def delete_chain(self, positions: list[int]) -> None:
        """Delete these chain entries."""
        if self._memory is not None:
            self._memory._chain[:] = [e for e in self._memory._chain if e[0] not in positions]
            return
        self._write_chain([e for e in self.chain() if e[0] not in positions])

    def rechain(self) -> None:
        """Recompute every chain entry from the rows as they stand: what someone who rewrote
        the log and knows the algorithm would do."""
        rows = self.rows()
        positions = [r[0] for r in rows]
        self.delete_chain([p for p, _ in self.chain()])
        self.put_chain(list(zip(positions, link(GENESIS, positions, [r[1:] for r in rows]),
                                strict=True)))

    def save(self) -> None:
        """Remember every row and entry."""
        self._saved = (self.rows(), self.chain())

    def restore(self) -> None:
        """Put back exactly what save() remembered."""
        assert self._saved is not None
        rows, chain = self._saved
        if self._memory is not None:
            self._memory._stored[:] = [_stored(*r[1:]) for r in rows]
            self._memory._chain[:] = chain
            return
        self._sql("DELETE FROM EVENTS")
        self.put_rows(rows)
        self._write_chain(chain)


def _stored(oid: str, version: int, topic: str, state: bytes) -> StoredEvent:
    return StoredEvent(originator_id=UUID(hex=oid), originator_version=version, topic=topic,
                       state=state)


def flip(state: bytes, at: int = 0) -> bytes:
    """The state with one bit of one byte changed."""
    i = at % len(state)
    return state[:i] + bytes([state[i] ^ 0x01]) + state[i + 1:]


def fill(ws: Workspace, devices: int = 4) -> int:
    """Commands and an ingest on a few devices; the log's head."""
    for d in range(devices):
        ws.set_profile_attributes(f"dev{d}", {"plan": "trial", "n": d})
        ws.identify(f"dev{d}", f"user{d % 3}@example.com", {"first_name": f"U{d}"})
        ws.register_device_token(f"dev{d}", f"tok{d}", platform="ios")
    ws.ingest([{"type": "identify", "anonymousId": f"dev{i % devices}", "userId": f"u{i}",
                "traits": {"k": i}, "messageId": f"m{i}"} for i in range(6)])
    return ws.log.head()


@pytest.fixture
def raw(ws: Workspace) -> Any:
    """The test workspace filled, and its raw log."""
    fill(ws)
    log = RawLog(ws)
    yield log
    log.close()


def test_verify_holds_after_commands_and_ingest(ws: Workspace) -> None:
    empty = ws.verify()
    assert (empty.ok, empty.checked, empty.first_break) == (True, 0, None)
    assert ws.digest() == idstitch.Digest(position=0, head=GENESIS.hex())
    head = fill(ws)
    result = ws.verify()
    assert result == idstitch.Verification(ok=True, checked=head, first_break=None,
                                           reason=result.reason)
    assert f"all {head} events" in result.reason
    digest = ws.digest()
    assert digest.position == head
    assert len(RawLog(ws).chain()) == head
    ws.identify("dev9", "late@example.com")
    assert ws.verify(against=digest).ok
    assert ws.verify(against=ws.digest()).ok


def test_a_changed_byte_breaks_the_chain_at_its_position(ws: Workspace, raw: RawLog) -> None:
    rows = raw.rows()
    position, *rest = rows[4]
    raw.put_rows([(position, *rest[:-1], flip(rest[-1], 7))])
    result = ws.verify()
    assert (result.ok, result.first_break, result.checked) == (False, position, 5)
    assert f"position {position}" in result.reason
    assert "changed" in result.reason


def test_a_deleted_event_is_named(ws: Workspace, raw: RawLog) -> None:
    raw.delete_rows([6])
    result = ws.verify()
    assert (result.ok, result.first_break) == (False, 6)


def test_two_events_swapped_break_at_the_first(ws: Workspace, raw: RawLog) -> None:
    rows = raw.rows()
    a, b = rows[2], rows[8]
    raw.put_rows([(a[0], *a[1:4], b[4]), (b[0], *b[1:4], a[4])])
    result = ws.verify()
    assert (result.ok, result.first_break) == (False, a[0])


def test_an_inserted_event_without_a_chain_entry_is_named(ws: Workspace, raw: RawLog) -> None:
    head = ws.log.head()
    oid, version, topic, state = raw.rows()[0][1:]
    raw.put_rows([(head + 1, oid, version + 1000, topic, state)])
    result = ws.verify()
    assert (result.ok, result.first_break, result.checked) == (False, head + 1, head + 1)
    assert "no chain entry" in result.reason


def test_a_missing_chain_entry_is_named(ws: Workspace, raw: RawLog) -> None:
    raw.delete_chain([3])
    assert ws.verify().first_break == 3


def test_a_rewrite_with_recomputed_hashes_needs_the_digest(ws: Workspace, raw: RawLog) -> None:
    digest = ws.digest()
    ws.identify("dev1", "more@example.com")
    rows = raw.rows()
    raw.put_rows([(rows[2][0], *rows[2][1:4], flip(rows[2][4]))])
    raw.rechain()
    assert ws.verify().ok  # the chain alone cannot tell: it was recomputed
    result = ws.verify(against=digest)
    assert (result.ok, result.first_break) == (False, digest.position)
    assert "rewritten" in result.reason


def test_a_log_cut_below_the_digest_is_caught(ws: Workspace, raw: RawLog) -> None:
    digest = ws.digest()
    cut = [p for p, *_ in raw.rows()][-3:]
    raw.delete_rows(cut)
    raw.delete_chain(cut)
    assert ws.verify().ok
    result = ws.verify(against=digest)
    assert (result.ok, result.first_break) == (False, cut[0])
    assert "removed from its end" in result.reason


def test_a_digest_that_is_not_one_is_refused(ws: Workspace) -> None:
    with pytest.raises(InvalidCommand) as bad:
        ws.verify(against=idstitch.Digest(position=-1, head=GENESIS.hex()))
    assert bad.value.field == "against"
    with pytest.raises(InvalidCommand, match="against"):
        ws.verify(against=idstitch.Digest(position=1, head="not hex"))
    with pytest.raises(InvalidCommand, match="against"):
        ws.verify(against={"position": 1, "head": GENESIS.hex()})  # type: ignore[arg-type]


KINDS = ("state", "version", "topic", "delete", "unchain", "swap", "insert")


def test_any_single_tamper_is_found_where_it_was_made(ws: Workspace, raw: RawLog) -> None:
    """Whatever one change to the stored log, at whatever position: verify reports exactly
    that position (for a swap, the earlier of the two; for an insert, the new row)."""
    raw.save()
    rows = raw.rows()
    n = len(rows)

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(kind=st.sampled_from(KINDS), i=st.integers(0, n - 1), j=st.integers(0, n - 1),
           at=st.integers(0, 1000))
    def tamper(kind: str, i: int, j: int, at: int) -> None:
        position, oid, version, topic, state = rows[i]
        expected = position
        if kind == "state":
            raw.put_rows([(position, oid, version, topic, flip(state, at))])
        elif kind == "version":
            raw.put_rows([(position, oid, version + 10_000 + at, topic, state)])
        elif kind == "topic":
            raw.put_rows([(position, oid, version, topic + "x", state)])
        elif kind == "delete":
            raw.delete_rows([position])
        elif kind == "unchain":
            raw.delete_chain([position])
        elif kind == "swap":
            other = rows[j]
            if other[4] == state:
                return
            raw.put_rows([(position, oid, version, topic, other[4]),
                          (other[0], *other[1:4], state)])
            expected = min(position, other[0])
        else:
            expected = n + 1
            raw.put_rows([(n + 1, oid, version + 5000 + at, topic, state)])
        try:
            result = ws.verify()
            assert (result.ok, result.first_break) == (False, expected), (kind, result)
        finally:
            raw.restore()
        assert ws.verify().ok

    tamper()


def test_an_event_rewritten_as_text_is_a_break_not_an_error(tmp_path: Path) -> None:
    """An edit with the sqlite3 shell that leaves TEXT in the state column (``|| x'00'``
    concatenates as text) once stopped verify with a UTF-8 error instead of naming it."""
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        for n in range(6):
            ws.identify("phone", "kim", {"n": n})
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("UPDATE idstitch_events SET state = substr(state, 1, length(state) - 1) "
                 "|| x'00' WHERE position = 4")
    assert conn.execute("SELECT typeof(state) FROM idstitch_events WHERE position = 4"
                        ).fetchone() == ("text",)
    conn.close()
    with idstitch.open(url) as ws:
        result = ws.verify()
    assert (result.ok, result.first_break) == (False, 4), result
