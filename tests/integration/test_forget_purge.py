"""A forget purges the person's rows in place (issue 15's target): the rows equal a rebuild's,
on every store; what the purge cannot prove exact is rebuilt; custom projections get their
hook or are folded again; a purge stopped midway is finished on open; a forgotten person id
answers nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from idstitch.domain.commands import ForgetPerson
from idstitch.projections import purge

import idstitch
from idstitch import Change, Projection, ProjectionDB
from idstitch.errors import ProjectionFailed
from idstitch.service import erasure
from idstitch.service.erasure import ShredReport
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
SECRETS = (b"dana-77", b"dana@example.com", b"Zanzibar", b"apns-dana", b"Dana's iPhone")


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def traffic(ws: Workspace) -> None:
    """Dana on three devices (anonymous first: a conversion and a merge), with a token,
    device attributes and a clear, then Cyd on one of Dana's devices; Sam apart."""
    ws.set_profile_attributes("phone", {"theme": "dark"}, timestamp=at(1))
    ws.set_profile_attributes("tablet", {"seen": 1}, timestamp=at(2))
    ws.identify("phone", "dana-77", {"email": "dana@example.com", "city": "Zanzibar"},
                timestamp=at(3))
    ws.register_device_token("phone", "apns-dana", platform="ios", timestamp=at(4))
    ws.identify("tablet", "dana@example.com", {"plan": "pro"}, timestamp=at(5))
    ws.set_device_attributes("tablet", {"name": "Dana's iPhone"}, timestamp=at(6))
    ws.identify("watch", "dana-77", {}, timestamp=at(7))
    ws.identify("laptop", "sam", {"email": "sam@example.com", "city": "Oslo"}, timestamp=at(8))
    ws.register_device_token("laptop", "fcm-sam", timestamp=at(9))
    ws.clear_identify("watch", timestamp=at(10))
    ws.identify("watch", "cyd", {"email": "cyd@example.com"}, timestamp=at(11))
    ws.set_profile_attributes("phone", {"theme": "light"}, timestamp=at(12))
    ws.identify("tablet", "sam", {}, timestamp=at(13))  # a switch away from Dana


def forget(ws: Workspace, identifier: str) -> ShredReport:
    services = ws._services
    return erasure.forget(services.stores, services.bus, services.projector, identifier,
                          "ticket 1")


def rebuilt(ws: Workspace) -> dict[str, list[tuple[str, bytes]]]:
    ws.rebuild(parallel=False)
    return ws.dump()


def no_secret(dump: dict[str, list[tuple[str, bytes]]]) -> list[bytes]:
    data = b"".join(k.encode() + v for rows in dump.values() for k, v in rows)
    return [s for s in SECRETS if s in data]


def test_the_purge_in_place_equals_a_rebuild(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws)
    sam, cyd = ws.profile("sam"), ws.profile("cyd")
    assert no_secret(ws.dump())  # the values are there before
    report = forget(ws, "dana@example.com")
    assert report.purged_in_place
    purged = ws.dump()
    assert no_secret(purged) == []
    # Sam and Cyd keep what they had (the tablet Sam took over loses Dana's device name).
    assert ws.profile("cyd") == cyd
    after = ws.profile("sam")
    assert after is not None and sam is not None
    assert (after.identifiers, after.attributes) == (sam.identifiers, sam.attributes)
    assert rebuilt(ws) == purged


def test_what_the_purge_cannot_prove_exact_is_rebuilt(make_ws: WorkspaceFactory) -> None:
    """An explicit merge naming the person, or another person refused the person's email:
    the rows are a rebuild's all the same."""
    ws = make_ws()
    traffic(ws)
    ws.identify("desk", "lee", {"email": "dana@example.com"}, timestamp=at(14))  # refused
    assert forget(ws, "dana-77").purged_in_place is False
    purged = ws.dump()
    assert rebuilt(ws) == purged
    # Lee stays refused the email Dana held (the decision keeps its keyed hash), as before.
    assert ws.profile("lee").identifiers == {"id": "lee"}

    ws = make_ws()
    traffic(ws)
    ws.merge_persons("sam", "cyd", reason="same family")
    ws.identify("desk", "ann", {}, timestamp=at(14))
    ws.merge_persons("dana-77", "ann", reason="same person")
    assert forget(ws, "dana-77").purged_in_place is False
    purged = ws.dump()
    assert rebuilt(ws) == purged


def test_a_merge_elsewhere_does_not_stop_the_purge(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws)
    ws.identify("desk", "ann", {}, timestamp=at(14))
    ws.identify("den", "bo", {}, timestamp=at(15))
    ws.merge_persons("ann", "bo", reason="same person")
    assert forget(ws, "dana-77").purged_in_place
    purged = ws.dump()
    assert rebuilt(ws) == purged


class Emails(Projection):
    """Each person's email, with a purge hook."""

    name = "emails"

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE emails (person_id TEXT PRIMARY KEY, email TEXT)")
        db.execute("CREATE TABLE calls (persons TEXT, devices TEXT)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        email = change.data.get("traits", {}).get("email")
        if change.event == "Identified" and email:
            db.execute("DELETE FROM emails WHERE person_id = ?", (change.person_id,))
            db.execute("INSERT INTO emails VALUES (?, ?)", (change.person_id, email))

    def forget(self, db: ProjectionDB, person_ids: frozenset[str],
               device_ids: frozenset[str]) -> None:
        for person_id in person_ids:
            db.execute("DELETE FROM emails WHERE person_id = ?", (person_id,))
        db.execute("INSERT INTO calls VALUES (?, ?)",
                   (" ".join(sorted(person_ids)), " ".join(sorted(device_ids))))


class Events(Projection):
    """Every Change's person and data, without a hook: folded again after a forget."""

    name = "events"

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE seen (position INTEGER, person_id TEXT, data TEXT)")

    def handle_batch(self, db: ProjectionDB, changes: Sequence[Change]) -> None:
        for change in changes:
            db.execute("INSERT INTO seen VALUES (?, ?, ?)",
                       (change.position, change.person_id, repr(change.data)))


def tables(ws: Workspace, name: str, sql: str) -> list[tuple[Any, ...]]:
    return ws.projection_db(name).query(sql)


def test_custom_projections_get_their_hook_or_are_folded_again(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws(projections=[Emails(), Events()])
    traffic(ws)
    dana = ws.profile("dana-77")
    assert dana is not None
    members = {dana.person_id, *(m.source for m in ws.merges("dana-77") if m.kind == "merged")}
    devices = {"phone", "tablet", "watch"}
    assert ("dana@example.com",) in tables(ws, "emails", "SELECT email FROM emails")
    assert forget(ws, "dana-77").purged_in_place
    assert tables(ws, "emails", "SELECT email FROM emails ORDER BY email") == [
        ("cyd@example.com",), ("sam@example.com",)]
    [(persons, devs)] = tables(ws, "emails", "SELECT persons, devices FROM calls")
    assert set(persons.split()) == members and set(devs.split()) == devices
    # Without a hook: folded again from position 0, as a rebuild folds it.
    seen = tables(ws, "events", "SELECT * FROM seen ORDER BY position")
    assert not any(s.decode() in repr(seen) for s in SECRETS)
    ws.rebuild(["events"])
    assert tables(ws, "events", "SELECT * FROM seen ORDER BY position") == seen


def test_a_purge_stopped_midway_is_finished_on_open(tmp_path: Path) -> None:
    """Keys destroyed, decision recorded, device attributes purged, then the process stops
    before the identity rows: the next open finds the person identified and rebuilds."""
    path = tmp_path / "ws.db"
    ws = idstitch.open(f"sqlite:///{path}")
    traffic(ws)
    services = ws._services
    prepared = erasure._prepare(services.stores, services.queries, "dana-77")
    component = purge.plan(services.registry, services.stores.rows, services.stores.log,
                           prepared.members)
    report = erasure._destroy(services.stores, prepared)
    services.bus.handle(ForgetPerson(person_id=report.person_id, reason="ticket 1"))
    purge.purge_attributes(services.registry, services.stores.rows, services.stores.log,
                           component)
    ws.close()  # as a process stopped here
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ws.db*"))
    assert b"Zanzibar" in raw and b"Dana's iPhone" not in raw
    ws = idstitch.open(f"sqlite:///{path}")
    assert ws.profile("dana-77") is None and ws.profile("sam") is not None
    purged = ws.dump()
    assert no_secret(purged) == [] and rebuilt(ws) == purged
    ws.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ws.db*"))
    assert [s for s in SECRETS if s in raw] == []
    # Finished: the next open has nothing to finish, nor after a forget purged in place.
    ws = idstitch.open(f"sqlite:///{path}")
    assert not erasure.finish_forgets(ws._services.stores, ws._services.projector)
    assert forget(ws, "sam").purged_in_place
    assert not erasure.finish_forgets(ws._services.stores, ws._services.projector)
    ws.close()


def test_a_forgotten_person_id_answers_nothing(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws)
    dana = ws.profile("dana-77")
    assert dana is not None
    ws.forget("dana-77", reason="ticket 1")
    for identifier in (dana.person_id, f"cio_{dana.person_id}", "dana-77", "dana@example.com"):
        assert ws.profile(identifier) is None
        assert ws.history(identifier) == [] and ws.merges(identifier) == []
        assert ws.profile_as_of(identifier, 5) is None
        assert ws.explain(identifier, "city") is None
    # The device's nameless remainder (identified, no identifier, no value) is still found
    # by its device, and by nothing else.
    phone = ws.profile_of_device("phone")
    assert phone is not None and phone.identified and phone.identifiers == {}
    assert phone.attributes == {} and ws.profile(phone.anonymous_ids[0]) is None


class Broken(Emails):
    """A hook that raises."""

    name = "broken"

    def forget(self, db: ProjectionDB, person_ids: frozenset[str],
               device_ids: frozenset[str]) -> None:
        db.execute("DELETE FROM emails")
        raise RuntimeError("the hook failed")


def test_a_hook_that_raises_is_folded_again_and_reported(make_ws: WorkspaceFactory) -> None:
    ws = make_ws(projections=[Broken()])
    traffic(ws)
    with pytest.raises(ProjectionFailed) as failed:
        ws.forget("dana-77", reason="ticket 1")
    assert failed.value.projection == "broken" and isinstance(failed.value.cause, RuntimeError)
    # The person is erased everywhere all the same, the failed projection folded again.
    assert ws.profile("dana-77") is None
    assert tables(ws, "broken", "SELECT email FROM emails ORDER BY email") == [
        ("cyd@example.com",), ("sam@example.com",)]
    assert tables(ws, "broken", "SELECT * FROM calls") == []


def test_the_purge_leaves_no_byte_of_the_person_in_the_sqlite_files(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    ws = idstitch.open(f"sqlite:///{path}")
    traffic(ws)
    ws.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ws.db*"))
    assert all(s in raw for s in SECRETS)  # the rows held them: the scan can find them
    ws = idstitch.open(f"sqlite:///{path}")
    assert forget(ws, "dana-77").purged_in_place
    ws.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ws.db*"))
    assert [s for s in SECRETS if s in raw] == []
    assert b"Oslo" in raw


def test_a_device_goes_on_after_its_person_is_forgotten(make_ws: WorkspaceFactory) -> None:
    """A device whose anonymous session became the forgotten person records again (under a
    key of a new subject: the session's key was destroyed with the person's), by command and
    by ingest, onto the nameless person it stays on, and again after the next person on it is
    forgotten too."""
    ws = make_ws()
    ws.ingest([{"type": "identify", "anonymousId": "dev-a", "traits": {"t": 1},
                "messageId": "1"},
               {"type": "identify", "anonymousId": "dev-a", "userId": "kim", "messageId": "2"}])
    kim = ws.profile("kim")
    assert kim is not None
    ws.forget("kim", reason="ticket 1")
    ws.set_profile_attributes("dev-a", {"theme": "dark"})
    report = ws.ingest([{"type": "identify", "anonymousId": "dev-a", "userId": "lee",
                         "traits": {"plan": "pro"}, "messageId": "3"}])
    assert (report.accepted, report.rejected) == (1, [])
    lee = ws.profile("lee")
    assert lee is not None and lee.attributes == {"plan": "pro"}
    # The device was on Kim's nameless remainder, which kept "dark": Lee's identify switched it
    # to a person of Lee's own, as on any identified device. Kim's id names nobody.
    assert lee.person_id != kim.person_id and ws.profile(kim.person_id) is None
    ws.forget("lee", reason="ticket 2")
    assert ws.profile(lee.person_id) is None and ws.profile("lee") is None
    report = ws.ingest([{"type": "identify", "anonymousId": "dev-a", "traits": {"b": 2},
                         "messageId": "4"}])
    assert (report.accepted, report.rejected) == (1, [])
    phone = ws.profile_of_device("dev-a")
    assert phone is not None and phone.attributes == {"b": 2} and phone.identifiers == {}


def test_a_forget_never_moves_a_projection_past_events_it_has_not_folded(
        make_durable_ws: WorkspaceFactory) -> None:
    from idstitch.domain.events import DECISIONS_STREAM, PersonForgotten
    from idstitch.projections.custom_forgets import REWRITING

    ws = make_durable_ws(projections=[Emails()])
    traffic(ws)
    forget(ws, "dana-77")
    [(position, decision)] = ws.log.read_spans([(DECISIONS_STREAM, 1, None)], REWRITING)
    assert isinstance(decision, PersonForgotten)
    runner = ws._services.projector.custom
    # Another process rebuilds the projection after this one folded up to the forget: its
    # tracking stands at 0 again, the events before the forget not folded.
    emails = runner.projections["emails"]
    runner.tables.create("emails", emails.version, True, emails.setup, ws.log.head(),
                         replace=True)
    assert runner._honour(position, decision, ["emails"]) == []
    assert runner.position("emails") == 0  # not moved past what it has not folded
    assert "emails" in runner._stopped
    ws.catch_up()  # folds them, then honours the forget in order
    assert runner.position("emails") == ws.log.head()
    query = "SELECT person_id, email FROM emails ORDER BY person_id"
    folded = ws.projection_db("emails").query(query)
    assert folded and not any("dana" in email for _, email in folded)
    ws.rebuild(["emails"])
    assert ws.projection_db("emails").query(query) == folded
