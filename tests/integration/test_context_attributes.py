"""Issue 13 §2: the ``context`` the SDKs send becomes collected device attributes, recorded only
when they change for the device and only while auto-tracking is on. Memory, SQLite,
PostgreSQL."""

from __future__ import annotations

from typing import Any

from idstitch.domain.events import DeviceAttributesCollected

from idstitch.testing import recorded_events
from idstitch.workspace import Workspace


def with_context(n: int, **context: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": f"m{n}",
            "timestamp": f"2026-01-01T08:00:{n:02d}Z",
            "context": {"device": {"id": "phone", "model": "iPhone15,2"}} | context}


def collected_events(ws: Workspace) -> list[dict[str, Any]]:
    return [e.attributes for _, e in recorded_events(ws) if isinstance(e, DeviceAttributesCollected)]


def test_context_is_collected_once_then_only_what_changed(ws: Workspace) -> None:
    ws.ingest([with_context(1, app={"version": "1.0"}, locale="en-US", network={"wifi": True}),
               with_context(2, app={"version": "1.0"}, locale="en-US", network={"wifi": True}),
               with_context(3, app={"version": "1.1"}, locale="en-US", network={"wifi": True})])
    assert collected_events(ws) == [
        {"app_version": "1.0", "device_locale": "en-US", "network_wifi": True,
         "device_model": "iPhone15,2"},
        {"app_version": "1.1"},  # the repeat recorded nothing; the update only its change
    ]
    device = ws.device("phone")
    assert device is not None and device.collected == {
        "app_version": "1.1", "device_locale": "en-US", "network_wifi": True,
        "device_model": "iPhone15,2"}
    assert device.attributes == {}  # collected, not custom


def test_context_is_not_collected_while_auto_tracking_is_off(ws: Workspace) -> None:
    ws.activate("phone", auto_track_device_attributes=False)
    ws.ingest([with_context(1, app={"version": "1.0"})])
    assert collected_events(ws) == []
    device = ws.device("phone")
    assert device is not None and device.collected == {}
    ws.activate("phone", auto_track_device_attributes=True, message_id="on")
    ws.ingest([with_context(2, app={"version": "1.0"})])
    device = ws.device("phone")
    assert device is not None and device.collected == {
        "app_version": "1.0", "device_model": "iPhone15,2"}


def test_reopened_device_compares_with_what_it_last_collected(make_durable_ws: Any) -> None:
    first = make_durable_ws()
    first.ingest([with_context(1, timezone="Europe/Berlin")])
    url = first.url
    first.close()
    again = make_durable_ws(url)
    again.ingest([with_context(2, timezone="Europe/Berlin"), with_context(3, timezone="UTC")])
    assert collected_events(again) == [
        {"timezone": "Europe/Berlin", "device_model": "iPhone15,2"}, {"timezone": "UTC"}]


def test_a_bad_context_value_rejects_its_message_naming_it(ws: Workspace) -> None:
    report = ws.ingest([with_context(1, locale="x" * 2000)])
    assert [i for i, _ in report.rejected] == [0]
    assert "device_locale" in report.rejected[0][1]
    assert ws.profile("u1") is None  # nothing of the message was recorded


def test_a_late_message_does_not_make_the_newest_value_look_like_a_repeat(
        make_durable_ws: Any) -> None:
    """An offline queue delivers 08:00:10 (1.1), then a late 08:00:05 (1.0: recorded, older),
    then 08:00:20 (1.0 again): the newest wins, as collecting every context afresh gives; the
    late value once made the newest look like a repeat, and the device kept 1.1. A device
    loaded from the log compares as the cached one does."""
    ws = make_durable_ws()
    ws.ingest([with_context(10, app={"version": "1.1"}), with_context(5, app={"version": "1.0"})])
    url = ws.url
    ws.close()
    reopened = make_durable_ws(url)  # the device comes back from its events
    reopened.ingest([with_context(20, app={"version": "1.0"})])
    assert [e.get("app_version") for e in collected_events(reopened)] == ["1.1", "1.0", "1.0"]
    device = reopened.device("phone")
    assert device is not None and device.collected["app_version"] == "1.0"
    cached = make_durable_ws()
    cached.ingest([with_context(n, app={"version": v})
                   for n, v in ((10, "1.1"), (5, "1.0"), (20, "1.0"), (30, "1.0"))])
    assert [e.get("app_version") for e in collected_events(cached)] == ["1.1", "1.0", "1.0"]
    again = cached.device("phone")
    assert again is not None and again.collected["app_version"] == "1.0"
