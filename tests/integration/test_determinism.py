"""Replays give the same answers (issue 9, item 6): archived traffic ingested twice, or into
different stores, ends with the same persons, ids and attributes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg

import idstitch
from idstitch.testing import FrozenClock, TemporaryPostgres
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def archived(n: int) -> list[bytes]:
    """Segment messages as an archive keeps them: sentAt (skewed device clocks) and receivedAt."""
    lines = []
    for i in range(n):
        device = f"dev-{i % 3}"
        skew = timedelta(minutes=7 * (i % 3))  # each device's clock runs off by its own amount
        sent = T0 + timedelta(seconds=10 * i) + skew
        message: dict[str, Any] = {
            "type": "identify", "messageId": f"m{i}", "anonymousId": device,
            "timestamp": (sent - timedelta(seconds=1)).isoformat(), "sentAt": sent.isoformat(),
            "receivedAt": (T0 + timedelta(seconds=10 * i, milliseconds=300)).isoformat(),
            "traits": {"plan": f"p{i}", "color": ["red", "green", "blue"][i % 3]},
            "context": {"device": {"id": device}},
        }
        if i % 4 == 1:
            message["userId"] = ["ana", "ben"][i % 2]
        lines.append(msgspec.json.encode(message))
    return lines


def test_received_at_makes_a_backfill_deterministic(make_ws: WorkspaceFactory) -> None:
    lines = archived(24)
    first = make_ws(clock=FrozenClock(datetime(2027, 1, 1, tzinfo=UTC)))
    second = make_ws(clock=FrozenClock(datetime(2029, 6, 1, tzinfo=UTC)))
    for ws in (first, second):
        report = ws.ingest(lines)
        assert (report.accepted, report.rejected) == (24, [])
    assert first.dump() == second.dump()
    # The skew correction used the archived receivedAt, not the workspace's clock.
    assert first.profile_of_device("dev-0").updated_at < T0 + timedelta(hours=1)  # type: ignore[union-attr]


def test_without_received_at_the_clock_is_the_received_time(make_ws: WorkspaceFactory) -> None:
    line = {"type": "identify", "anonymousId": "d", "traits": {"a": 1},
            "timestamp": "2026-03-01T12:00:00Z", "sentAt": "2026-03-01T12:00:05Z"}
    clock = FrozenClock(datetime(2026, 3, 1, 13, tzinfo=UTC))
    ws = make_ws(clock=clock)
    ws.ingest([line])
    # 5 s before the workspace's clock, as Segment's rule says when receivedAt is absent.
    assert ws.profile_of_device("d").updated_at == clock.now - timedelta(seconds=5)  # type: ignore[union-attr]


def test_received_at_as_an_argument(ws: Workspace) -> None:
    received = T0 + timedelta(minutes=1)
    ws.identify("d", "u", {"a": 1}, timestamp=T0, sent_at=T0 + timedelta(seconds=30),
                received_at=received)
    assert ws.history("u")[0].timestamp == received - timedelta(seconds=30)
    # Without a timestamp, received_at is the client time.
    ws.set_profile_attributes("d", {"b": 2}, received_at=received)
    assert ws.history("u")[-1].timestamp == received


def story(ws: Workspace) -> None:
    """A switch mints a person for an unknown user on an identified device; merges get ids."""
    ws.identify("phone", "ana", {"plan": "pro"}, timestamp=T0)
    ws.set_profile_attributes("tablet", {"theme": "dark"}, timestamp=T0)
    ws.identify("tablet", "ana", timestamp=T0 + timedelta(seconds=1))
    ws.identify("phone", "ben", {"plan": "free"}, timestamp=T0 + timedelta(seconds=2))
    ws.identify("phone", "cleo", timestamp=T0 + timedelta(seconds=3))


def test_minted_ids_do_not_depend_on_log_positions(
    postgres: TemporaryPostgres, tmp_path: Any
) -> None:
    """PostgreSQL's positions can have gaps (ids a refused append reserved); the same traffic
    still mints the same person and merge ids as on the other stores."""
    url = postgres.url("idstitch_tests") + "?schema=gaps"
    answers = []
    for target in ("memory:", f"sqlite:///{tmp_path}/ids.db", url):
        ws = idstitch.open(target, clock=FrozenClock(T0))
        if target == url:
            ws.identify("elsewhere", "x")
            with psycopg.connect(postgres.url("idstitch_tests"), autocommit=True) as conn:
                conn.execute("SELECT setval('gaps.idstitch_events_notification_id_seq', 1000)")
        story(ws)
        ids = {u: ws.profile(u).person_id for u in ("ana", "ben", "cleo")}  # type: ignore[union-attr]
        merges = [(m.merge_id, m.kind) for m in ws.merges("ana") + ws.merges("cleo")]
        answers.append((ids, merges, ws.log.head() > 1000))
        ws.close()
    (memory, _, _), (sqlite, _, _), (pg, _, gapped) = answers
    assert gapped  # the positions really differ
    assert memory == sqlite == pg
    assert answers[0][1] == answers[1][1] == answers[2][1]
