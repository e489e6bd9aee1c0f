"""Issue 13 §2: a backend's identify (only a userId, as Segment's and Customer.io's server
libraries send it) updates the person, creating it when new, on the user's server-side stream:
in history, as-of and explain, never among the person's devices. Memory, SQLite, PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import idstitch
from idstitch import server_stream_id
from idstitch.errors import InvalidCommand
from idstitch.workspace import Workspace


def backend(n: int, user_id: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user_id, "traits": traits, "messageId": f"s{n}",
            "timestamp": f"2026-01-01T08:00:{n:02d}Z"}


def test_a_server_identify_updates_a_known_person(ws: Workspace) -> None:
    ws.identify("phone", "u-100", {"name": "Ann"})
    report = ws.ingest([backend(1, "u-100", plan="pro")])
    assert report.accepted == 1 and not report.rejected
    ann = ws.profile("u-100")
    assert ann is not None and ann.attributes == {"name": "Ann", "plan": "pro"}
    assert [d.device_id for d in ann.devices] == ["phone"]  # the stream is no device of hers
    assert [m.kind for m in ws.merges("u-100")] == ["converted"]  # the phone's, nothing more
    last = ws.history("u-100")[-1]
    assert (last.device_id, last.message_id, last.changes) == (
        server_stream_id("u-100"), "s1", [("plan", None, "pro")])
    explained = ws.explain("u-100", "plan")
    assert explained is not None and explained.device_id == server_stream_id("u-100")
    stream = ws.device(server_stream_id("u-100"))
    assert stream is not None and stream.person_id == ann.person_id


def test_a_server_identify_creates_an_unknown_person(ws: Workspace) -> None:
    ws.ingest([backend(1, "u-new", plan="trial"), backend(2, "new@example.com", x=1)])
    new = ws.profile("u-new")
    assert new is not None and new.identified and new.identifiers == {"id": "u-new"}
    assert new.attributes == {"plan": "trial"} and new.devices == [] and new.anonymous_ids == []
    assert ws.merges("u-new") == []
    by_email = ws.profile("NEW@example.com")
    assert by_email is not None and by_email.identifiers == {"email": "new@example.com"}
    # A device identifying the user later joins that person.
    ws.identify("phone", "u-new")
    joined = ws.profile("u-new")
    assert joined is not None and joined.person_id == new.person_id
    assert [d.device_id for d in joined.devices] == ["phone"]
    assert joined.attributes == {"plan": "trial"}


def test_as_of_shows_the_stream_changes_but_not_the_stream(ws: Workspace) -> None:
    ws.identify("phone", "u-100")
    ws.ingest([backend(1, "u-100", plan="pro")])
    at = ws.log.head()
    ws.ingest([backend(2, "u-100", plan="max")])
    then = ws.profile_as_of("u-100", at)
    assert then is not None and then.attributes == {"plan": "pro"}
    assert [d.device_id for d in then.devices] == ["phone"]


def test_server_traffic_reingested_and_rebuilt_is_the_same(ws: Workspace) -> None:
    traffic = [backend(1, "u-1", a=1), backend(2, "u-2", b=2), backend(3, "u-1", a=3),
               {"type": "track", "userId": "u-1", "event": "Order Completed"}]
    report = ws.ingest(traffic)
    assert (report.accepted, report.ignored) == (3, 1)  # a server-side track is ignored
    rows = ws.dump()
    again = ws.ingest(traffic)
    assert (again.accepted, again.duplicates) == (0, 3)
    ws.rebuild()
    assert ws.dump() == rows
    one = ws.profile("u-1")
    assert one is not None and one.attributes == {"a": 3}


def test_a_server_identify_with_a_bad_user_id_is_rejected_naming_it(ws: Workspace) -> None:
    report = ws.ingest([backend(1, "null", a=1)])
    assert [i for i, _ in report.rejected] == [0]
    assert "user_id" in report.rejected[0][1]


def test_a_server_identify_by_cio_id_lands_on_that_person(ws: Workspace) -> None:
    ws.identify("phone", "u-100")
    ann = ws.profile("u-100")
    assert ann is not None
    ws.ingest([backend(1, f"cio_{ann.person_id}", plan="pro")])
    after = ws.profile("u-100")
    assert after is not None and after.attributes == {"plan": "pro"}
    assert [m.kind for m in ws.merges("u-100")] == ["converted"]  # no anonymous person merged


def test_no_installation_can_take_a_users_server_side_stream(ws: Workspace) -> None:
    """The stream's id is a hash anyone can compute: a device named so would have its
    anonymous person, and what it set, converted into the user's profile."""
    stream = server_stream_id("victim")
    with pytest.raises(InvalidCommand) as refused:
        ws.set_profile_attributes(stream, {"planted": "yes"})
    assert refused.value.field == "device_id" and "server-side" in str(refused.value)
    report = ws.ingest([
        {"type": "identify", "anonymousId": stream, "traits": {"planted": "yes"},
         "messageId": "m1"},
        {"type": "track", "event": "Device Created or Updated", "messageId": "m2",
         "context": {"device": {"id": stream, "token": "tok-1"}}},
        backend(3, "victim", plan="pro")])
    assert report.accepted == 1
    assert [(i, r.split(":")[0]) for i, r in report.rejected] == [(0, "device_id"),
                                                                 (1, "device_id")]
    victim = ws.profile("victim")
    assert victim is not None and victim.attributes == {"plan": "pro"}
    assert [m.kind for m in ws.merges("victim")] == []
    device = ws.device(stream)
    assert device is not None and device.server


def test_the_stream_says_it_is_one(ws: Workspace) -> None:
    ws.ingest([backend(1, "u-1", a=1)])
    stream = ws.device(server_stream_id("u-1"))
    assert stream is not None and stream.server and stream.sdk_anonymous_id is None
    assert stream.token is None and stream.collected == {}


def test_forget_leaves_no_trace_of_a_server_side_user_id(tmp_path: Path) -> None:
    # Every event repeats its device id in plaintext: a stream named after the user id would
    # keep a forgotten user's id readable in the log.
    path = tmp_path / "ws.db"
    with idstitch.open(f"sqlite:///{path}") as ws:
        ws.ingest([backend(1, "zed-server-user-9", plan="gold"),
                   backend(2, "other-user", plan="free")])
        assert ws.profile("zed-server-user-9") is not None
        ws.forget("zed-server-user-9", reason="erasure request")
        assert ws.profile("zed-server-user-9") is None
    data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert b"zed-server-user-9" not in data
    assert b"other-user" in data  # the other person is still there
