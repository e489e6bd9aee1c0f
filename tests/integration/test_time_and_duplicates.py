"""identity-model.md §5: time, order, duplicates, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from idstitch.workspace import Workspace

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_late_event_does_not_overwrite_a_newer_value(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"plan": "pro"}, timestamp=at(10))
    ws.set_profile_attributes("d1", {"plan": "free", "color": "red"}, timestamp=at(5))
    assert ws.profile("u1").attributes == {"plan": "pro", "color": "red"}  # type: ignore[union-attr]


def test_a_late_removal_does_not_remove_a_newer_value(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"plan": "pro"}, timestamp=at(10))
    ws.set_profile_attributes("d1", {"plan": None}, timestamp=at(5))
    assert ws.profile("u1").attributes == {"plan": "pro"}  # type: ignore[union-attr]


def test_an_older_value_does_not_resurrect_a_newer_removal(ws: Workspace) -> None:
    ws.identify("d1", "u1", timestamp=at(1))
    ws.set_profile_attributes("d1", unset=["plan"], timestamp=at(10))
    ws.set_profile_attributes("d1", {"plan": "pro"}, timestamp=at(5))
    assert ws.profile("u1").attributes == {}  # type: ignore[union-attr]


def test_set_once_keeps_the_earliest(ws: Workspace) -> None:
    ws.identify("d1", "u1", timestamp=at(1))
    ws.set_profile_attributes("d1", set_once={"first_seen": "late"}, timestamp=at(9))
    ws.set_profile_attributes("d1", set_once={"first_seen": "early"}, timestamp=at(3))
    assert ws.profile("u1").attributes == {"first_seen": "early"}  # type: ignore[union-attr]


def test_equal_timestamps_are_broken_by_log_position(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"k": "first"}, timestamp=at(1))
    ws.set_profile_attributes("d1", {"k": "second"}, timestamp=at(1))
    assert ws.profile("u1").attributes == {"k": "second"}  # type: ignore[union-attr]


def test_every_event_keeps_client_and_recorded_time(ws: Workspace) -> None:
    from idstitch.testing import recorded_events

    ws.identify("d1", "u1", timestamp=at(-3600))
    [(_, event)] = recorded_events(ws)
    assert event.timestamp == at(-3600)
    assert event.recorded_at == ws.clock()


def test_repeated_message_id_is_a_no_op(ws: Workspace) -> None:
    assert ws.identify("d1", "u1", {"a": 1}, message_id="m-1") == 1
    assert ws.identify("d1", "u1", {"a": 2}, message_id="m-1") is None
    assert ws.set_profile_attributes("d1", {"a": 3}, message_id="m-1") is None
    assert ws.log.head() == 1
    assert ws.profile("u1").attributes == {"a": 1}  # type: ignore[union-attr]
    # The same message id on another device is another message.
    assert ws.identify("d2", "u1", message_id="m-1") == 2


def test_sent_at_corrects_client_clock_skew(ws: Workspace) -> None:
    received = ws.clock()
    # The device's clock runs an hour fast: it stamped the event 10 s before sending.
    device_now = received + timedelta(hours=1)
    ws.identify("d1", "u1", timestamp=device_now - timedelta(seconds=10), sent_at=device_now)
    assert ws.device("d1").last_used == received - timedelta(seconds=10)  # type: ignore[union-attr]
