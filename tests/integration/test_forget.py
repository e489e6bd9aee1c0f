"""``ws.forget`` (issue 15): the decision recorded, the person erased from the rows and the
files, its identifiers refused by every command, errors that change nothing, and a device that
behaves the same after a forget whether the writer had it cached or loads it from the log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from idstitch.domain.commands import ForgetPerson
from idstitch.domain.events import DECISIONS_STREAM, PersonForgotten

import idstitch
from idstitch.errors import InvalidCommand, Suppressed, UnknownPerson
from idstitch.service.erasure import finish_forgets, shred
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
SECRETS = (b"dana-user-77", b"dana.secret@example.com", b"Zanzibar-trait", b"apns-token-dana")


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def traffic(ws: Workspace) -> None:
    ws.set_profile_attributes("tablet", {"theme": "dark"}, timestamp=at(1), message_id="m1")
    ws.identify("phone", "dana-user-77", {"email": "dana.secret@example.com",
                                          "city": "Zanzibar-trait"}, timestamp=at(2))
    ws.register_device_token("phone", "apns-token-dana", platform="ios", timestamp=at(3))
    ws.identify("tablet", "dana.secret@example.com", {"plan": "pro"}, timestamp=at(4))
    ws.identify("laptop", "sam", {"email": "sam@example.com", "city": "Oslo"}, timestamp=at(5))
    ws.set_device_attributes("laptop", {"screen": "wide"}, timestamp=at(6))


class Tokens(idstitch.Projection):
    """A custom projection holding personal values (push tokens) in tables of its own."""

    name = "tokens"
    version = 1
    events = frozenset({"DeviceTokenRegistered"})

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE tokens (device_id TEXT PRIMARY KEY, token TEXT)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        db.execute("INSERT INTO tokens VALUES (?, ?) ON CONFLICT (device_id) "
                   "DO UPDATE SET token = excluded.token",
                   (change.device_id, change.data["token"]))


def raw(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_forget_records_the_decision_and_erases_the_person(make_ws: WorkspaceFactory) -> None:
    ws = make_ws(projections=[Tokens()])
    traffic(ws)
    assert ws.projection_db("tokens").query("SELECT token FROM tokens") == [("apns-token-dana",)]
    dana = ws.profile("dana-user-77")
    assert dana is not None and ws.history("dana-user-77")
    sam, sam_history = ws.profile("sam"), ws.history("sam")
    ws.forget("dana.secret@example.com", reason="erasure request #1234")
    for identifier in ("dana-user-77", "dana.secret@example.com"):
        assert ws.profile(identifier) is None
        assert ws.history(identifier) == []
        assert ws.profile_as_of(identifier, at(5)) is None
    assert ws.profile("sam") == sam and ws.history("sam") == sam_history
    # Custom projections are rebuilt too: they saw the token's event erased.
    assert ws.projection_db("tokens").query("SELECT token FROM tokens") == [("",)]
    decisions = [(p, ev) for p, ev in ws.log.read(0, 1000) if ev.device_id == DECISIONS_STREAM]
    assert [type(ev) for _, ev in decisions] == [PersonForgotten]
    forgotten = decisions[0][1]
    assert isinstance(forgotten, PersonForgotten)
    assert (forgotten.person_id, forgotten.reason) == (dana.person_id, "erasure request #1234")
    # The log stays append-only and its chain still verifies after the keys are gone.
    assert ws.verify().ok
    # No value of Dana's in any event as it reads now.
    assert not any(s in repr(list(ws.log.read(0, 1000))).encode() for s in SECRETS)


@pytest.mark.parametrize("command", [
    lambda ws, pid: ws.identify("new-phone", "dana-user-77"),
    lambda ws, pid: ws.identify("new-phone", "someone", {"email": "DANA.secret@example.com"}),
    lambda ws, pid: ws.activate("new-phone", customer_user_id="dana-user-77"),
    lambda ws, pid: ws.set_profile_attributes("laptop", {"email": "dana.secret@example.com"}),
    lambda ws, pid: ws.merge_persons("sam", "dana-user-77", reason="same customer"),
    lambda ws, pid: ws.merge_persons(pid, "sam", reason="same customer"),
    lambda ws, pid: ws.identify("new-phone", "cio_" + pid),
])
def test_every_command_naming_a_forgotten_identifier_is_refused(
        make_ws: WorkspaceFactory, command: Callable[[Workspace, str], object]) -> None:
    ws = make_ws()
    traffic(ws)
    dana = ws.profile("dana-user-77")
    assert dana is not None
    ws.forget("dana-user-77", reason="erasure request")
    head = ws.log.head()
    with pytest.raises(Suppressed):
        command(ws, dana.person_id)
    assert ws.log.head() == head


def test_errors_change_nothing(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws)
    head, dana = ws.log.head(), ws.profile("dana-user-77")
    with pytest.raises(UnknownPerson):
        ws.forget("nobody", reason="erasure request")
    with pytest.raises(InvalidCommand) as e:
        ws.forget("dana-user-77", reason="  ")
    assert e.value.field == "reason"
    with pytest.raises(InvalidCommand) as e:
        ws.forget("", reason="erasure request")
    assert e.value.field == "identifier"
    assert ws.log.head() == head and ws.profile("dana-user-77") == dana
    ws.identify("phone", "dana-user-77", {"plan": "max"}, timestamp=at(7))  # not refused
    ws.forget("dana-user-77", reason="erasure request")
    head = ws.log.head()
    with pytest.raises(Suppressed):
        ws.forget("dana.secret@example.com", reason="again")
    assert ws.log.head() == head


def test_a_device_behaves_the_same_cached_or_reloaded(tmp_path: Path) -> None:
    """After a forget the forgotten person's device goes on as an anonymous device, whether
    this workspace's writer had it cached or a fresh workspace loads it from the log."""
    results = []
    for reopen in (False, True):
        url = f"sqlite:///{tmp_path / f'ws-{reopen}.db'}"
        ws = idstitch.open(url)
        traffic(ws)
        ws.forget("dana-user-77", reason="erasure request")
        if reopen:
            ws.close()
            ws = idstitch.open(url)
        ws.set_profile_attributes("phone", {"plan": "trial"}, timestamp=at(9))
        profile = ws.profile_of_device("phone")
        assert profile is not None and not profile.identified
        results.append((profile.attributes, profile.identifiers))
        ws.close()
    assert results[0] == results[1]
    assert results[0][0] == {"plan": "trial"}


def test_forget_leaves_no_byte_of_the_person_in_the_sqlite_files(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    ws = idstitch.open(f"sqlite:///{path}", projections=[Tokens()])
    traffic(ws)
    ws.close()
    assert all(s in raw(path) for s in SECRETS)  # the rows held them: the scan can find them
    ws = idstitch.open(f"sqlite:///{path}", projections=[Tokens()])
    ws.forget("dana-user-77", reason="erasure request")
    assert ws.verify().ok
    ws.close()
    data = raw(path)
    assert [s for s in SECRETS if s in data] == []
    assert b"Oslo" in data and b"erasure request" in data


def test_a_forget_stopped_before_its_rebuild_is_finished_on_open(tmp_path: Path) -> None:
    """The keys destroyed and the decision recorded, then the process stops before the
    rebuild: the rows still hold the person's values until the next open finishes it."""
    path = tmp_path / "ws.db"
    ws = idstitch.open(f"sqlite:///{path}")
    traffic(ws)
    services = ws._services
    report = shred(services.stores, services.queries, "dana-user-77")
    services.bus.handle(ForgetPerson(person_id=report.person_id, reason="erasure request"))
    ws.close()  # no rebuild: as a process stopped here
    assert b"Zanzibar-trait" in raw(path)
    ws = idstitch.open(f"sqlite:///{path}")
    assert ws.profile("dana-user-77") is None and ws.profile("sam") is not None
    ws.close()
    assert [s for s in SECRETS if s in raw(path)] == []
    # A clean store is not rebuilt on open.
    ws = idstitch.open(f"sqlite:///{path}")
    assert not finish_forgets(ws._services.stores, ws._services.projector)
    ws.close()
