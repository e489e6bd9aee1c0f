"""A forget in one process is honoured by every other writer of the store at once, not after
the one second a process trusts its copy of the suppressed identifiers: each append reads the
forgets' mark under the log's write lock with the projections' tracking rows, and a writer
that finds it raised reads the suppressed identifiers again and rejects what names one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from idstitch.errors import Suppressed
from idstitch.service import erasure
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]

MODES = [None, "external"]


def identify(device: str, user: str, traits: dict[str, object], message_id: str) -> dict[str, object]:
    return {"type": "identify", "userId": user, "traits": traits, "messageId": message_id,
            "context": {"device": {"id": device}}}


def anonymous_traits(device: str, traits: dict[str, object], message_id: str) -> dict[str, object]:
    return {"type": "identify", "anonymousId": f"anon-{device}", "traits": traits,
            "messageId": message_id, "context": {"device": {"id": device}}}


@pytest.mark.parametrize("mode", MODES)
def test_another_writer_refuses_a_forgotten_user_id_right_after_the_forget(
        make_durable_ws: WorkspaceFactory, mode: str | None) -> None:
    keeper = make_durable_ws(None)
    other = make_durable_ws(keeper.url, projections=mode)
    keeper.identify("phone", "kim", {"city": "Lyon"})
    # The other writer has just read the suppressed identifiers (none): its copy is fresh.
    other.identify("laptop", "sam", {"plan": "pro"})
    keeper.forget("kim", reason="ticket 1")
    with pytest.raises(Suppressed, match="forgotten"):
        other.identify("tablet", "kim", {"city": "Paris"})
    other.identify("laptop", "sam", {"plan": "team"})  # the rest of its traffic goes on
    keeper.catch_up()
    assert keeper.profile("kim") is None
    sam = keeper.profile("sam")
    assert sam is not None and sam.attributes == {"plan": "team"}
    before = keeper.profile("sam")
    keeper.rebuild()
    assert keeper.profile("kim") is None and keeper.profile("sam") == before


@pytest.mark.parametrize("mode", MODES)
def test_another_writers_ingest_rejects_only_the_messages_naming_the_forgotten(
        make_durable_ws: WorkspaceFactory, mode: str | None) -> None:
    """The batch was read and checked before the forget: its append finds the mark raised,
    and only the message naming kim is rejected, with the reason ingest gives; the messages
    around it, on the same device, are recorded as if it had never been sent."""
    keeper = make_durable_ws(None)
    other = make_durable_ws(keeper.url, projections=mode)
    keeper.identify("phone", "kim", {"email": "kim@example.com"})
    other.identify("laptop", "sam", {})
    keeper.forget("kim@example.com", reason="ticket 2")
    report = other.ingest([
        anonymous_traits("tablet", {"theme": "dark"}, "m1"),
        identify("tablet", "kim", {"city": "Paris"}, "m2"),
        identify("tablet", "ann", {"email": "kim@example.com"}, "m3"),
        anonymous_traits("tablet", {"font": "large"}, "m4"),
        identify("tablet2", "ann", {"city": "Oslo"}, "m5"),
    ])
    assert [index for index, _ in report.rejected] == [1, 2]
    assert all("forgotten" in str(reason) for _, reason in report.rejected)
    assert report.accepted == 3
    keeper.catch_up()
    assert keeper.profile("kim") is None and keeper.profile("kim@example.com") is None
    tablet = keeper.profile_of_device("tablet")
    assert tablet is not None and not tablet.identified
    assert tablet.attributes == {"theme": "dark", "font": "large"}
    ann = keeper.profile("ann")
    assert ann is not None and ann.attributes == {"city": "Oslo"}
    live = (keeper.profile_of_device("tablet"), keeper.profile("ann"))
    keeper.rebuild()
    assert (keeper.profile_of_device("tablet"), keeper.profile("ann")) == live


@pytest.mark.parametrize("mode", MODES)
def test_a_writer_holding_the_forgotten_persons_device_records_the_rest_of_its_batch(
        make_durable_ws: WorkspaceFactory, mode: str | None) -> None:
    """The other writer holds kim's phone in memory, under the key of kim's stint, which the
    forget destroys: its next batch loads the phone again (a stint under a new key), rejects
    the message naming kim, and records the rest (before: the whole batch failed)."""
    keeper = make_durable_ws(None)
    keeper.identify("old-phone", "old-user")
    keeper.forget("old-user", reason="an earlier erasure")  # the workspace had forgotten before
    other = make_durable_ws(keeper.url, projections=mode)
    other.identify("kim-phone", "kim", {"email": "kim@example.com"})
    keeper.forget("kim", reason="ticket 3")
    report = other.ingest([
        identify("kim-phone", "kim", {"city": "Paris"}, "k1"),
        identify("ann-phone", "ann", {"city": "Oslo"}, "k2"),
        anonymous_traits("kim-phone", {"theme": "dark"}, "k3"),
    ])
    assert [index for index, _ in report.rejected] == [0] and report.accepted == 2
    other.set_profile_attributes("kim-phone", {"font": "large"})
    keeper.catch_up()
    ann = keeper.profile("ann")
    assert ann is not None and ann.attributes == {"city": "Oslo"}
    assert keeper.profile("kim") is None and keeper.profile("kim@example.com") is None
    phone = keeper.profile_of_device("kim-phone")
    assert phone is not None and phone.attributes == {"theme": "dark", "font": "large"}
    live = (keeper.profile("ann"), keeper.profile_of_device("kim-phone"))
    keeper.rebuild()
    assert (keeper.profile("ann"), keeper.profile_of_device("kim-phone")) == live


@pytest.mark.parametrize("durable_kind", ["sqlite"], indirect=True)
def test_the_first_forget_waits_for_a_writer_that_committed_while_it_read(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first forget of a store creates the workspace's secret for the keyed hashes (a
    write). Created inside the forget's read snapshot, after another process committed, SQLite
    refused the upgrade at once ('database is locked') instead of waiting for the lock."""
    ws = make_durable_ws(None)
    ws.identify("phone", "kim", {"email": "kim@example.com"})
    path = ws.url[len("sqlite:///"):]
    subjects = erasure.identified_subjects

    def meanwhile(*args: Any) -> Any:
        # Inside the forget's read snapshot (its rows read already), another writer commits.
        with sqlite3.connect(path) as other:
            other.execute("INSERT INTO idstitch_tracking (name, position) VALUES ('x', 0) "
                          "ON CONFLICT (name) DO UPDATE SET position = position + 1")
        return subjects(*args)

    monkeypatch.setattr(erasure, "identified_subjects", meanwhile)
    ws.forget("kim", reason="ticket 4")
    monkeypatch.undo()
    assert ws.profile("kim") is None and ws.profile("kim@example.com") is None


@pytest.mark.parametrize("mode", MODES)
def test_what_another_writer_recorded_while_the_forget_prepared_is_forgotten_too(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch,
        mode: str | None) -> None:
    """Another writer identifies kim on a new tablet after the forget read kim's events and
    before it suppressed kim (it could not refuse it): the forget looks again at what was
    appended up to its mark, and erases that too. Before, the rows left kim's tablet on the
    nameless remainder while a rebuild made a new person 'kim' of it."""
    keeper = make_durable_ws(None)
    other = make_durable_ws(keeper.url, projections=mode)
    keeper.identify("phone", "kim", {"email": "kim@example.com"})
    other.identify("laptop", "sam", {})
    plan = erasure._plan

    def meanwhile(*args: Any) -> Any:
        other.identify("tablet", "kim", {"secret": "on the tablet"})
        return plan(*args)

    monkeypatch.setattr(erasure, "_plan", meanwhile)
    keeper.forget("kim", reason="ticket 5")
    monkeypatch.undo()
    assert keeper.profile("kim") is None
    tablet = keeper.profile_of_device("tablet")
    assert tablet is not None and tablet.identifiers == {} and tablet.attributes == {}
    keeper.rebuild()
    assert keeper.profile("kim") is None and keeper.profile_of_device("tablet") == tablet
    path = keeper.url[len("sqlite:///"):] if keeper.url.startswith("sqlite:") else None
    if path is not None:
        with open(path, "rb") as db:
            assert b"on the tablet" not in db.read()
