"""identity-model.md §2: every device-scoped command, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from idstitch.errors import InvalidCommand, NotIdentified
from idstitch.testing import recorded_events
from idstitch.workspace import Workspace

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_activate_anonymous_records_configuration(ws: Workspace) -> None:
    pos = ws.activate("d1", platform="android", sdk={"name": "adapty", "version": "3.2"})
    assert pos == 1
    profile = ws.profile_of_device("d1")
    assert profile is not None and not profile.identified
    assert profile.anonymous_ids == [ws.device("d1").anonymous_id]  # type: ignore[union-attr]
    assert ws.device("d1").platform == "android"  # type: ignore[union-attr]
    assert [type(e).__name__ for _, e in recorded_events(ws)] == ["DeviceActivated"]


def test_activate_with_customer_user_id_identifies(ws: Workspace) -> None:
    ws.activate("d1", customer_user_id="cu-1")
    profile = ws.profile("cu-1")
    assert profile is not None and profile.identified
    assert profile.identifiers == {"id": "cu-1"}
    assert [type(e).__name__ for _, e in recorded_events(ws)] == ["DeviceActivated", "Identified"]


def test_collected_attributes_are_dropped_when_auto_tracking_is_off(ws: Workspace) -> None:
    ws.activate("off", auto_track_device_attributes=False)
    ws.activate("on")
    assert ws.collect_device_attributes("off", {"device_os": "17.1"}) is None
    assert ws.collect_device_attributes("on", {"device_os": "17.1"}) is not None
    assert ws.device("off").collected == {}  # type: ignore[union-attr]
    assert ws.device("on").collected == {"device_os": "17.1"}  # type: ignore[union-attr]
    assert ws.log.head() == 3


def test_identify_sets_last_used_to_the_event_time(ws: Workspace) -> None:
    ws.identify("d1", "u1", timestamp=at(5))
    assert ws.device("d1").last_used == at(5)  # type: ignore[union-attr]
    ws.identify("d1", "u1", timestamp=at(9))
    assert ws.device("d1").last_used == at(9)  # type: ignore[union-attr]


def test_profile_attributes_change_only_the_keys_given(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"first_name": "Dana"}, timestamp=at(1))
    ws.set_profile_attributes("d1", {"favorite_food": "pizza"}, timestamp=at(2))
    assert ws.profile("u1").attributes == {  # type: ignore[union-attr]
        "first_name": "Dana", "favorite_food": "pizza"}


def test_profile_attributes_apply_to_the_anonymous_person(ws: Workspace) -> None:
    ws.set_profile_attributes("d1", {"plan": "trial"})
    profile = ws.profile_of_device("d1")
    assert profile is not None and not profile.identified
    assert profile.attributes == {"plan": "trial"}


def test_none_removes_empty_string_is_a_value_nested_replaces(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"a": 1, "b": "x", "c": {"x": 1, "y": 2}}, timestamp=at(1))
    ws.set_profile_attributes("d1", {"a": None, "b": "", "c": {"z": 3}}, timestamp=at(2))
    assert ws.profile("u1").attributes == {"b": "", "c": {"z": 3}}  # type: ignore[union-attr]


def test_set_once_and_unset(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"first_seen": "mon", "plan": "pro"}, timestamp=at(1))
    ws.set_profile_attributes("d1", set_once={"first_seen": "tue", "source": "ad"},
                              unset=["plan"], timestamp=at(2))
    ws.set_profile_attributes("d1", set_once={"source": "organic"}, timestamp=at(3))
    assert ws.profile("u1").attributes == {  # type: ignore[union-attr]
        "first_seen": "mon", "source": "ad"}


def test_device_attributes_belong_to_the_device_and_are_flattened(ws: Workspace) -> None:
    ws.identify("d1", "u1")
    ws.set_device_attributes("d1", {"theme": "dark", "network": {"cellular": True, "wifi": False}})
    ws.collect_device_attributes("d1", {"device_os": "17.1", "theme": "light"})
    device = ws.device("d1")
    assert device is not None
    assert device.attributes == {"theme": "dark", "network": {"cellular": True, "wifi": False}}
    assert device.flat == {"device_os": "17.1", "theme": "dark", "network_cellular": True,
                           "network_wifi": False}
    assert ws.profile("u1").attributes == {}  # type: ignore[union-attr]


def test_token_refresh_replaces_and_a_token_has_one_owner(ws: Workspace) -> None:
    ws.identify("d1", "u1")
    ws.register_device_token("d1", "tok-1", platform="ios")
    ws.register_device_token("d1", "tok-2")
    assert ws.device("d1").token == "tok-2"  # type: ignore[union-attr]
    assert ws.device("d1").platform == "ios"  # type: ignore[union-attr]
    ws.register_device_token("d2", "tok-2")
    assert ws.device("d1").token is None  # type: ignore[union-attr]
    assert ws.device("d2").token == "tok-2"  # type: ignore[union-attr]


def test_remove_device_token(ws: Workspace) -> None:
    ws.register_device_token("d1", "tok-1")
    ws.remove_device_token("d1", "tok-other", reason="invalid")
    assert ws.device("d1").token == "tok-1"  # type: ignore[union-attr]
    ws.remove_device_token("d1", "tok-1", reason="invalid")
    assert ws.device("d1").token is None  # type: ignore[union-attr]


def test_push_status_and_identify_resets_it(ws: Workspace) -> None:
    ws.identify("d1", "u1")
    ws.register_device_token("d1", "tok-1")
    ws.record_push_status("d1", "bounced")
    assert ws.device("d1").last_status == "bounced"  # type: ignore[union-attr]
    ws.identify("d1", "u1")
    assert ws.device("d1").last_status is None  # type: ignore[union-attr]
    with pytest.raises(InvalidCommand, match="status"):
        ws.record_push_status("d1", "delivered")


def test_clear_identify_starts_a_new_anonymous_session_and_keeps_the_token(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"first_name": "Dana"})
    ws.register_device_token("d1", "tok-1")
    before = ws.device("d1")
    ws.clear_identify("d1")
    after = ws.device("d1")
    assert before is not None and after is not None
    assert after.anonymous_id != before.anonymous_id
    assert after.token == "tok-1"
    assert after.person_id != before.person_id
    u1 = ws.profile("u1")
    assert u1 is not None and u1.devices == [] and u1.attributes == {"first_name": "Dana"}
    anonymous = ws.profile_of_device("d1")
    assert anonymous is not None and not anonymous.identified and anonymous.attributes == {}


def test_clear_identify_on_an_anonymous_device_still_starts_a_new_session(ws: Workspace) -> None:
    ws.activate("d1")
    first = ws.device("d1").anonymous_id  # type: ignore[union-attr]
    assert ws.clear_identify("d1") is not None
    assert ws.device("d1").anonymous_id != first  # type: ignore[union-attr]


def test_logout_of_an_anonymous_device_is_an_error_and_records_nothing(ws: Workspace) -> None:
    ws.activate("d1")
    head = ws.log.head()
    with pytest.raises(NotIdentified):
        ws.logout("d1")
    assert ws.log.head() == head
    ws.identify("d1", "u1")
    assert ws.logout("d1") is not None
    assert not ws.profile_of_device("d1").identified  # type: ignore[union-attr]


def test_anonymous_ids_are_deterministic() -> None:
    from idstitch.testing import memory_workspace

    a, b = memory_workspace(), memory_workspace()
    for w in (a, b):
        w.activate("same-device")
        w.clear_identify("same-device")
    assert a.device("same-device").anonymous_id == b.device("same-device").anonymous_id  # type: ignore[union-attr]
