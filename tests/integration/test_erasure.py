"""Crypto-shredding (issue 15, forget): sealed personal values, destroyed keys, erased reads,
suppression, and no byte of a forgotten person left in a SQLite file."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.service.erasure import scrub, shred
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
            "SELECT state FROM stored_events"))
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
