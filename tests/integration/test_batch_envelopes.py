"""Issue 13 §2: batch envelopes as the clients POST them, blank lines, and Device Deleted's
clock, through ``ws.ingest`` on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from idstitch.domain.events import DeviceTokenRemoved, Identified

import idstitch
from idstitch.testing import recorded_events
from idstitch.workspace import Workspace

NOW = datetime(2026, 1, 1, 9, tzinfo=UTC)  # the clock of the conftest fixture
AHEAD = NOW + timedelta(hours=1)  # a device whose clock runs an hour ahead
encode = msgspec.json.Encoder().encode


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def msg(n: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"messageId": f"m{n}", "anonymousId": "anon-A",
                            "timestamp": iso(AHEAD - timedelta(seconds=10)),
                            "context": {"device": {"id": "phone"}}}
    return base | fields


def envelope(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"batch": list(messages), "sentAt": iso(AHEAD), "writeKey": "k"} | fields


BATCH = envelope(
    msg(1, type="identify", userId="u1", traits={"plan": "pro"}),
    msg(2, type="identify", traits={"email": 7} | {"bad": "x" * 5000}),  # too long: rejected
    msg(3, type="track", event="Order Completed"),  # ignored
    msg(4, type="track", event="Device Created or Updated",
        context={"device": {"id": "phone", "token": "tok-1", "type": "ios"}}),
)


def test_an_envelope_is_its_messages_counted_and_numbered_one_by_one(ws: Workspace) -> None:
    report = ws.ingest([BATCH, encode(envelope(msg(5, type="identify", traits={"x": 1})))])
    assert (report.accepted, report.ignored, report.duplicates) == (3, 1, 0)
    assert [i for i, _ in report.rejected] == [1]
    assert "traits.bad" in report.rejected[0][1]
    profile = ws.profile("u1")
    assert profile is not None and profile.attributes == {"plan": "pro", "x": 1}
    assert [d.token for d in profile.devices] == ["tok-1"]


def test_the_batch_sent_at_corrects_every_message_clock(ws: Workspace) -> None:
    """The device's clock is an hour ahead: its events are stored at the server's time."""
    line = encode(envelope(
        msg(1, type="identify", userId="u1"),
        msg(2, type="track", event="Device Deleted",
            context={"device": {"id": "phone", "token": "tok-1"}}),
        # A message with its own sentAt keeps it.
        msg(3, type="identify", userId="u1", sentAt=iso(AHEAD - timedelta(seconds=10)))))
    report = ws.ingest([line])
    assert report.accepted == 3
    times = {e.message_id: e.timestamp for _, e in recorded_events(ws)}
    assert times["m1"] == NOW - timedelta(seconds=10)
    assert times["m2"] == NOW - timedelta(seconds=10)  # Device Deleted too
    assert times["m3"] == NOW
    kinds = {e.message_id: type(e) for _, e in recorded_events(ws)}
    assert kinds["m2"] is DeviceTokenRemoved and kinds["m1"] is Identified


def test_an_envelope_as_str_bytes_and_dict_records_the_same(make_ws: Any) -> None:
    dumps = []
    for item in (BATCH, encode(BATCH), encode(BATCH).decode()):
        ws = make_ws()
        report = ws.ingest([item])
        assert (report.accepted, len(report.rejected)) == (2, 1)
        dumps.append(ws.dump())
    assert dumps[0] == dumps[1] == dumps[2]


def test_the_envelope_context_is_merged_under_each_message(ws: Workspace) -> None:
    body = {"batch": [{"type": "identify", "userId": "u1", "messageId": "m1"},
                      msg(2, type="identify", userId="u2")],
            "context": {"device": {"id": "tablet"}}}
    assert ws.ingest([body]).accepted == 2
    u1, u2 = ws.profile("u1"), ws.profile("u2")
    assert u1 is not None and [d.device_id for d in u1.devices] == ["tablet"]
    assert u2 is not None and [d.device_id for d in u2.devices] == ["phone"]


def test_an_envelope_that_cannot_be_read_whole_is_one_rejected_message(ws: Workspace) -> None:
    report = ws.ingest([
        {"batch": "nope"},
        encode({"batch": [msg(1, type="identify", userId="u1")], "sentAt": "yesterday"}),
        msg(2, type="identify", userId="u2"),
    ])
    assert [i for i, _ in report.rejected] == [0, 1]
    assert "batch" in report.rejected[0][1]
    assert "sentAt" in report.rejected[1][1]
    assert report.accepted == 1 and ws.profile("u1") is None


def test_a_message_mentioning_batch_is_still_a_message(ws: Workspace) -> None:
    line = encode(msg(1, type="identify", userId="u1", traits={"note": '"batch"', "batch": 2}))
    assert ws.ingest([line]).accepted == 1
    profile = ws.profile("u1")
    assert profile is not None and profile.attributes == {"note": '"batch"', "batch": 2}


def test_blank_lines_are_skipped_not_counted(ws: Workspace) -> None:
    report = ws.ingest(["", "  \n", b"", b"\t\r\n", encode(msg(1, type="identify", userId="u1")),
                        "\n", b"{broken"])
    assert (report.accepted, report.blank) == (1, 5)
    assert [i for i, _ in report.rejected] == [1]  # the second message, blank lines not numbered


def test_reingesting_an_envelope_is_a_no_op(ws: Workspace) -> None:
    ws.ingest([BATCH])
    head, rows = ws.log.head(), ws.dump()
    again = ws.ingest([BATCH])
    assert (again.accepted, again.duplicates) == (0, 2)
    assert ws.log.head() == head and ws.dump() == rows


@pytest.mark.parametrize("item", [
    {"batch": ['{"type": "identify", "userId": "u", "anonymousId": "d"}', ""]},
    {"type": "identify", "userId": "u", "anonymousId": "d", "batch": []},
    {"type": "identify", "userId": "u", "anonymousId": "d", "batch": None},
    {"type": "screen", "batch": [{"type": "identify", "userId": "u", "anonymousId": "d"}]},
])
def test_an_item_reads_the_same_as_a_dict_and_as_a_line(item: dict[str, Any]) -> None:
    """A dict once took every item with a "batch" key for an envelope (a line: a message
    first), and decoded the strings inside a dict envelope (a line's: refused)."""
    outcomes = []
    for form in (item, msgspec.json.encode(item), msgspec.json.encode(item).decode()):
        with idstitch.open("memory:") as ws:
            report = ws.ingest([form])
            outcomes.append((report.accepted, report.ignored, report.rejected,
                             ws.profile("u") is not None))
    assert outcomes[0] == outcomes[1] == outcomes[2], outcomes
