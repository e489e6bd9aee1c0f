"""Crypto-shredding (issue 15, forget): sealed personal values, destroyed keys, erased reads,
suppression, and no byte of a forgotten person left in a SQLite file."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from idstitch.adapters import suppressed_digests
from idstitch.domain.commands import ForgetPerson
from idstitch.domain.events import DECISIONS_STREAM, PersonForgotten
from idstitch.domain.rules import MAX_VALUE_BYTES
from idstitch.projections.runner import Stretch

import idstitch
from idstitch.errors import InvalidCommand, Suppressed, UnknownPerson
from idstitch.service.erasure import finish_forgets, scrub, shred
from idstitch.testing import following
from idstitch.testing_projections import ChangeLog
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


def forget(ws: Workspace, identifier: str) -> None:
    services = ws._services
    shred(services.stores, services.queries, identifier)
    ws.rebuild(parallel=False)
    scrub(services.stores)


def raw(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_the_log_holds_no_personal_value_in_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    ws = idstitch.open(f"sqlite:///{path}")
    traffic(ws)
    ws.rebuild(parallel=False)
    ws.close()
    # The projection rows hold them (so the scan can find them) ...
    assert all(s in raw(path) for s in SECRETS)
    events = b"".join(
        row[0] for row in __import__("sqlite3").connect(path).execute(
            "SELECT state FROM idstitch_events"))
    # ... the stored events do not.
    assert not any(s in events for s in SECRETS)


def test_forget_leaves_no_byte_of_the_person_in_the_files(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    ws = idstitch.open(f"sqlite:///{path}")
    traffic(ws)
    sam_before = ws.profile("sam")
    assert ws.profile("dana-user-77") is not None
    forget(ws, "dana-user-77")
    assert ws.profile("dana-user-77") is None
    assert ws.profile("dana.secret@example.com") is None
    assert ws.profile("sam") == sam_before
    ws.close()
    data = raw(path)
    found = [s for s in SECRETS if s in data]
    assert found == []
    assert b"Oslo" in data  # the other person is still there


def test_forgotten_identifiers_are_suppressed_and_erased_events_read(tmp_path: Path) -> None:
    ws = idstitch.open("memory:")
    traffic(ws)
    forget(ws, "dana.secret@example.com")
    stores = ws._services.stores
    assert stores.cipher is not None
    assert stores.cipher.is_suppressed("dana-user-77")
    assert stores.cipher.is_suppressed("DANA.secret@example.com")
    assert not stores.cipher.is_suppressed("sam")
    erased = [ev for _, ev in stores.log.read(0, 100) if ev.erased]
    assert erased and all(ev.sealed is None for ev in erased)
    assert ws.profile("sam") is not None and ws.profile("sam").attributes["city"] == "Oslo"


def test_forget_on_every_store(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws)
    sam = ws.profile("sam")
    forget(ws, "dana-user-77")
    assert ws.profile("dana-user-77") is None and ws.profile("dana.secret@example.com") is None
    assert ws.profile("sam") == sam
    assert ws.history("sam") and all(not c.data.get("erased") for c in ws.history("sam"))
    stores = ws._services.stores
    states = [ev for _, ev in stores.log.read(0, 100)]
    assert any(ev.erased for ev in states)
    # The erased events read without any value of Dana's.
    text = repr(states).encode()
    assert not any(s in text for s in SECRETS)
    assert stores.cipher is not None and stores.cipher.is_suppressed("dana-user-77")


def test_an_erased_subject_never_gets_a_key_again(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws)
    keys = {ev.key_id for _, ev in ws._services.stores.log.read(0, 100)
            if ev.device_id == "phone"}
    forget(ws, "dana-user-77")
    cipher = ws._services.stores.cipher
    assert cipher is not None
    for key_id in keys:
        assert key_id is not None
        assert cipher.keys.is_destroyed(key_id)
        assert cipher.keys.create(key_id) is None
        assert cipher.keys.get(key_id) is None


def test_ingest_rejects_a_forgotten_identifier_saying_so(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws)
    forget(ws, "dana-user-77")
    report = ws.ingest([
        {"type": "identify", "userId": "dana-user-77", "anonymousId": "a1",
         "messageId": "x1", "timestamp": "2026-01-02T00:00:00Z"},
        {"type": "identify", "userId": "new-user", "anonymousId": "a2", "messageId": "x2",
         "traits": {"email": "DANA.secret@example.com"}, "timestamp": "2026-01-02T00:00:00Z"},
        {"type": "identify", "userId": "sam", "anonymousId": "a3", "messageId": "x3",
         "timestamp": "2026-01-02T00:00:00Z"},
    ])
    assert report.accepted == 1
    assert [i for i, _ in report.rejected] == [0, 1]
    assert all("forgotten" in reason for _, reason in report.rejected)
    assert ws.profile("dana-user-77") is None and ws.profile("new-user") is None


def test_ingest_rejects_any_message_whose_user_id_is_forgotten(make_ws: WorkspaceFactory) -> None:
    # The SDK of a device still logged in sends `Device Created or Updated` with the user id at
    # every app start: it must not put a token and attributes on the forgotten person's device.
    ws = make_ws()
    ws.identify("phone", "kim-55", {"email": "kim@example.com"})
    ws.register_device_token("phone", "apns-kim", platform="ios")
    ws.forget("kim-55", reason="ticket 313")
    device = {"device": {"id": "phone", "token": "apns-kim-2"}}
    report = ws.ingest([
        {"type": "track", "event": "Device Created or Updated", "userId": "kim-55",
         "context": device, "properties": {"home": "Lyon"}, "messageId": "t1"},
        {"type": "screen", "userId": "kim-55", "anonymousId": "a1", "messageId": "s1"},
        {"type": "page", "userId": "KIM-55", "anonymousId": "a1", "messageId": "p1"},  # not kim's
        {"type": "track", "event": "Device Created or Updated", "anonymousId": "a9",
         "context": {"device": {"id": "tablet", "token": "apns-sam"}}, "messageId": "t2"},
    ])
    assert [i for i, _ in report.rejected] == [0, 1]
    assert all("userId" in reason and "forgotten" in reason for _, reason in report.rejected)
    assert (report.accepted, report.ignored) == (1, 1)
    phone = ws.device("phone")
    assert phone is not None and phone.token is None and phone.attributes == {}
    tablet = ws.device("tablet")
    assert tablet is not None and tablet.token == "apns-sam"


def test_an_email_the_person_let_go_finds_nobody_and_says_how_to_find_it(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.identify("phone", "kim-55", {"email": "kim@old.example", "city": "Lyon"})
    held = ws.log.head()
    ws.identify("phone", "kim-55", {"email": "kim@new.example"})
    with pytest.raises(UnknownPerson, match=r"finds no person now .*profile_as_of") as raised:
        ws.forget("kim@old.example", reason="ticket 313")
    assert raised.value.field == "identifier"
    with pytest.raises(UnknownPerson, match=r"'nobody' finds no person$"):
        ws.forget("nobody", reason="ticket 313")
    # As the message says: the person as of a time it held the email, by its person id.
    then = ws.profile_as_of("kim@old.example", held)
    assert then is not None
    ws.forget(then.person_id, reason="ticket 313")
    with pytest.raises(Suppressed):
        ws.identify("tablet", "x", {"email": "KIM@old.example"})


def test_after_a_forget_the_stored_projections_hold_the_decision_too(
        make_durable_ws: WorkspaceFactory) -> None:
    # Else every erasure left the built-in projections' stored position one short of the
    # head until the next write, and `idstitch projections` reported a lag.
    ws = make_durable_ws()
    ws.identify("phone", "kim-55", {"email": "kim@example.com"})
    ws.identify("laptop", "sam")
    ws.forget("kim-55", reason="ticket 313")
    other = make_durable_ws(ws.url)  # what another process reads from the store
    assert {s.name: s.lag for s in other.projection_status()} == {
        "identity": 0, "device_attributes": 0}


def test_a_person_with_unencrypted_events_is_refused_with_nothing_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setenv("IDSTITCH_ENCRYPTION", "off")  # as a store written before encryption
    ws = idstitch.open(url)
    traffic(ws)
    ws.close()
    monkeypatch.delenv("IDSTITCH_ENCRYPTION")
    ws = idstitch.open(url)
    try:
        # Old events read as they were, and new ones are sealed.
        ws.identify("laptop", "sam", {"city": "Bergen"}, timestamp=at(9))
        events = [ev for _, ev in ws._services.stores.log.read(0, 100)]
        assert [ev.key_id is not None for ev in events].count(True) == 1
        before = ws.profile("dana-user-77")
        services = ws._services
        with pytest.raises(InvalidCommand) as e:
            shred(services.stores, services.queries, "dana-user-77")
        assert e.value.field == "identifier" and "unencrypted" in e.value.reason
        assert ws.profile("dana-user-77") == before
        assert services.stores.cipher is not None
        assert not services.stores.cipher.is_suppressed("dana-user-77")
    finally:
        ws.close()


# ws.forget: the decision, the refusals, the files, a forget interrupted before its rebuild.

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


@pytest.mark.parametrize("reason", [
    "", "  ", None, 123, b"erasure", ["erasure"], "ticket\x00 1", "ticket \ud800",
    "x" * (MAX_VALUE_BYTES + 1),
])
def test_a_bad_reason_is_refused_before_anything_changes(
        make_ws: WorkspaceFactory, reason: object) -> None:
    """The reason is judged once, before the keys are destroyed: refused, it names ``reason``
    and the person is exactly as before (its keys whole, its identifiers not suppressed, no
    decision recorded), and can still be forgotten."""
    ws = make_ws()
    traffic(ws)
    head, rows = ws.log.head(), ws.dump()
    with pytest.raises(InvalidCommand) as e:
        ws.forget("dana-user-77", reason=reason)  # type: ignore[arg-type]
    assert e.value.field == "reason"
    assert ws.log.head() == head
    ws.rebuild(parallel=False)  # a destroyed key would read erased here
    assert ws.dump() == rows
    ws.identify("watch", "dana.secret@example.com", timestamp=at(7))  # not Suppressed
    assert ws.profile("dana-user-77") == ws.profile_of_device("watch")
    ws.forget("dana-user-77", reason="erasure request")
    assert ws.profile("dana-user-77") is None


def test_a_device_behaves_the_same_cached_or_reloaded(tmp_path: Path) -> None:
    """After a forget the forgotten person's device goes on on the nameless person it was on
    (identified, no identifier, none of the forgotten values), whether this workspace's writer
    had it cached or a fresh workspace loads it from the log."""
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
        assert profile is not None and profile.identified and profile.identifiers == {}
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


def test_another_process_that_held_the_keys_reads_the_person_erased(
        make_durable_ws: WorkspaceFactory) -> None:
    """Keys are cached per process. A workspace that read the person before (its cache holds
    the person's keys) and whose rows another process then purged must unseal nothing of the
    person again: not when it catches up, not when it rebuilds."""
    other = make_durable_ws(None)
    traffic(other)
    assert other.profile("dana-user-77") is not None  # folded: its keys are cached here
    forgetting = make_durable_ws(other.url)
    forgetting.forget("dana.secret@example.com", reason="erasure request")
    other.identify("laptop", "sam", {"plan": "team"}, timestamp=at(7))  # a catch-up here
    assert other.profile("dana-user-77") is None
    after_catch_up = other.dump()
    other.rebuild(parallel=False)
    rows = other.dump()
    assert rows == after_catch_up
    assert not any(s in repr(rows).encode() for s in SECRETS)
    assert other.profile("sam").attributes["plan"] == "team"  # type: ignore[union-attr]


def test_a_catch_up_that_loses_its_commit_to_a_forget_drops_the_keys_it_held(
        make_durable_ws: WorkspaceFactory) -> None:
    """A fold under way in one process while another forgets a person: its commit finds the
    rows in a new life (the purge's epoch) and is refused. The keys this process cached go
    with its rows, or the person's events would unseal here again (its later refolds, its
    reads of the log)."""
    other = make_durable_ws(None)
    traffic(other)
    assert other.profile("dana-user-77") is not None  # folded: its keys are cached here
    services = other._services
    identity = next(p for p in services.projector.registry if p.name == "identity")
    stretch = Stretch(identity, services.projector.states.of(identity), services.stores.log,
                      services.stores.rows)
    forgetting = make_durable_ws(other.url)
    forgetting.forget("dana.secret@example.com", reason="erasure request")
    assert stretch.commit() is False  # the tracking moved, under another epoch
    events = services.stores.log.read(0, 100)
    assert not any(s in repr(events).encode() for s in SECRETS)
    assert any(getattr(e.event, "erased", False) for e in events)


def test_forget_with_external_projections_sees_the_whole_log(
        make_durable_ws: WorkspaceFactory) -> None:
    """An appending-only writer (``projections="external"``) forgets a person while the
    process keeping the projections is still folding that person's newest events: the forget
    waits for it to reach the head, so those events' keys are destroyed too, and the rows
    end as a rebuild gives them."""
    projector = make_durable_ws(None)
    writer = make_durable_ws(projector.url, projections="external")
    with following(projector):
        for i in range(30):
            writer.identify(f"phone-{i}", f"user-{i}", {"email": f"person{i}@example.com"})
            writer.register_device_token(f"phone-{i}", f"token-{i}")
        writer.wait_for(writer.log.head(), timeout=30)
    # A backlog recorded while nobody projects: user-7 gets new devices in it (keys of their
    # own, which the rows do not name yet) ...
    writer.ingest([{"type": "identify", "userId": f"user-{i % 40}", "anonymousId": f"tab-{i}",
                    "traits": {"n": i}, "messageId": f"m{i}",
                    "context": {"device": {"id": f"tab-{i}"}}} for i in range(2000)])
    assert projector.lag() > 0
    with following(projector):
        # ... and the follower has just started folding it when the forget begins.
        writer.forget("user-7", reason="erasure request")
        reached = writer.identify("phone-1", "user-1", {"plan": "max"})
        writer.wait_for(reached, timeout=30)
        assert writer.profile("user-7") is None
        assert writer.profile("user-1").attributes["plan"] == "max"  # type: ignore[union-attr]
        kept = projector.dump()
    assert not any(s in repr(kept).encode() for s in (b"person7@", b"token-7", b"user-7'"))
    projector.rebuild(parallel=False)
    assert projector.dump() == kept


def test_a_writer_that_held_the_persons_device_records_under_a_new_key_after_a_forget_elsewhere(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device cached by another writer still carries its stint's key, destroyed by the
    forget: that writer learns of the forget (new suppressed digests, read again at most every
    SUPPRESSION_REFRESH seconds) and loads the device again, which then records under a new
    key what it records next, as the forgetting process would."""
    monkeypatch.setattr(suppressed_digests, "SUPPRESSION_REFRESH", 0.0)
    writer = make_durable_ws(None)
    traffic(writer)  # dana's phone is cached here, with its stint's key
    make_durable_ws(writer.url).forget("dana-user-77", reason="erasure request")
    writer.set_profile_attributes("phone", {"theme": "light"}, timestamp=at(10))
    fresh = make_durable_ws(writer.url)
    fresh.rebuild(parallel=False)
    on_phone = fresh.profile_of_device("phone")
    assert on_phone is not None and on_phone.attributes == {"theme": "light"}
    assert on_phone.identified and on_phone.identifiers == {}  # the nameless person it was on


class EmailsSeen(idstitch.Projection):
    """The emails each device's identifies carried; its purge hook deletes the forgotten
    devices' rows. ``built`` is drawn once, when its tables are created: a projection folded
    again from position 0 gets a new one."""

    name = "emails_seen"

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE emails_seen (device_id TEXT, email TEXT)")
        db.execute("CREATE TABLE emails_built (token TEXT)")
        db.execute("INSERT INTO emails_built VALUES (?)", (os.urandom(8).hex(),))

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        email = (change.data.get("traits") or {}).get("email")
        if change.event == "Identified" and email:
            db.execute("INSERT INTO emails_seen VALUES (?, ?)", (change.device_id, email))

    def forget(self, db: idstitch.ProjectionDB, person_ids: frozenset[str],
               device_ids: frozenset[str]) -> None:
        for device_id in sorted(device_ids):
            db.execute("DELETE FROM emails_seen WHERE device_id = ?", (device_id,))


@pytest.mark.parametrize("hook", [True, False], ids=["purge hook", "folded again"])
def test_a_custom_projection_kept_by_another_process_honours_the_forget(
        make_durable_ws: WorkspaceFactory, hook: bool) -> None:
    """The process that keeps a custom projection (here a follower, as `idstitch project`)
    honours a forget recorded by an appending-only writer where its decision stands in the
    log: the projection's purge hook with the forgotten devices, or folded again from 0."""
    keeper = make_durable_ws(None, projections=[EmailsSeen() if hook else ChangeLog()])
    writer = make_durable_ws(keeper.url, projections="external")
    table = "emails_seen" if hook else "change_log"
    built = None
    with following(keeper):
        traffic(writer)
        writer.wait_for(writer.log.head(), timeout=30)
        if hook:
            built = keeper.projection_db(table).query("SELECT token FROM emails_built")
        assert b"dana.secret@example.com" in repr(
            keeper.projection_db(table).query(f"SELECT * FROM {table}")).encode()
        writer.forget("dana-user-77", reason="erasure request")
        writer.identify("laptop", "sam", {"plan": "team"}, timestamp=at(8))
        writer.wait_for(writer.log.head(), timeout=30)
    rows = repr(keeper.projection_db(table).query(f"SELECT * FROM {table}")).encode()
    assert not any(s in rows for s in SECRETS)
    if hook:
        # The hook did it (a projection folded again would have drawn a new token) ...
        assert keeper.projection_db(table).query("SELECT token FROM emails_built") == built
        # ... and left the others' rows.
        assert b"sam@example.com" in rows


def test_forget_refuses_an_anonymous_person_with_nothing_changed(make_ws: WorkspaceFactory) -> None:
    # Its device is still in the session: an identify would convert the forgotten person
    # and bring its person id back under a new name; its next event would have no key.
    ws = make_ws()
    ws.set_profile_attributes("kiosk", {"plan": "trial"}, timestamp=at(1))
    anonymous = ws.profile_of_device("kiosk")
    assert anonymous is not None and not anonymous.identified
    before, head = ws.dump(), ws.log.head()
    for identifier in (anonymous.person_id, anonymous.anonymous_ids[0]):
        with pytest.raises(InvalidCommand, match="still in its session") as refused:
            ws.forget(identifier, reason="erasure request")
        assert refused.value.field == "identifier"
    assert ws.dump() == before and ws.log.head() == head
    ws.identify("kiosk", "kim", timestamp=at(2))
    kim = ws.profile("kim")
    assert kim is not None and kim.person_id == anonymous.person_id
    assert kim.attributes == {"plan": "trial"}


def test_as_of_reads_an_erased_token_as_the_rows_do(make_ws: WorkspaceFactory) -> None:
    # The token registered while the device was the forgotten person's is erased from the
    # device, which another person now holds: no token, now and as of the head.
    ws = make_ws()
    ws.identify("shared", "dana-user-77", timestamp=at(1))
    ws.register_device_token("shared", "apns-token-dana", platform="ios", timestamp=at(2))
    ws.identify("shared", "sam", timestamp=at(3))
    ws.forget("dana-user-77", reason="erasure request")
    sam = ws.profile("sam")
    assert sam is not None and [(d.token, d.platform) for d in sam.devices] == [(None, "ios")]
    assert ws.profile_as_of("sam", ws.log.head()) == sam


def test_an_anonymous_person_no_device_is_in_is_forgotten_by_its_ids(
        make_ws: WorkspaceFactory) -> None:
    """Left behind by a switch (or the undo of its merge), it has no device and no person
    holds its values: forgetting anyone else would not erase them, so it is forgotten itself,
    and its anonymous ids answer nothing afterwards, as its person id does."""
    ws = make_ws(anonymous_merge="switch")
    ws.identify("phone", "kim", timestamp=at(1))
    ws.set_profile_attributes("tablet", {"city": "Zanzibar-trait"}, timestamp=at(2))
    orphan = ws.profile_of_device("tablet")
    assert orphan is not None
    ws.identify("tablet", "kim", timestamp=at(3))  # switched: the anonymous person stays behind
    left = ws.profile(orphan.person_id)
    assert left is not None and left.devices == [] and left.attributes == {"city": "Zanzibar-trait"}
    kim = ws.profile("kim")
    ws.forget(orphan.anonymous_ids[0], reason="erasure request")
    for identifier in (orphan.person_id, orphan.anonymous_ids[0]):
        assert ws.profile(identifier) is None and ws.history(identifier) == []
        assert ws.profile_as_of(identifier, ws.log.head()) is None
    assert ws.profile("kim") == kim
    assert b"Zanzibar-trait" not in repr(ws.dump()).encode()
