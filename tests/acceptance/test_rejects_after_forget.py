"""The files of refused messages after a forget: ``idstitch serve``'s rejects log (a real server
on loopback, its writer a process of its own) and ``idstitch ingest --rejects`` never take the
forgotten person's values in again, whatever each message was refused for; a message refused
before the forget stays as it was sent, as the erasure how-to says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

import idstitch
from idstitch.cli import main

KEY = "test-key"
KIM = ("kim-55", "kim@example.com", "+33 6 12 34 56 78", "Lyon")
"""What the forgotten person's messages carry: none of it may reach a file after the forget."""


def kim(message_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": "kim-55", "anonymousId": "a-kim", "messageId": message_id,
            "traits": {"email": "kim@example.com", "phone": "+33 6 12 34 56 78", "city": "Lyon"},
            "context": {"device": {"id": "phone"}}, **fields}


def traffic_after_the_forget() -> list[Any]:
    """The person's messages, each refused for another reason, and one of somebody else."""
    return [
        kim("m-suppressed"),                               # its user id: forgotten
        {"type": "identify", "anonymousId": "a-new", "messageId": "m-email",
         "traits": {"email": " KIM@example.com ", "city": "Lyon"}},  # its email, spelled otherwise
        kim("m-timestamp", timestamp="not a time"),        # a bad field, checked first
        {"type": "track", "event": "Device Created or Updated", "userId": "kim-55",
         "messageId": "m-no-token", "context": {"device": {"id": "phone"}}},  # no push token
        kim("m-too-large", properties={"pad": "x" * 33 * 1024}),  # refused before ingest
        "kim@example.com",                                 # not an object
        {"type": "identify", "userId": "null", "anonymousId": "x", "messageId": "m-other",
         "traits": {"city": "Oslo"}},                      # nobody forgotten: kept whole
    ]


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/identity.db"
    with idstitch.open(url) as ws:
        ws.identify("phone", "kim-55", {"email": "kim@example.com", "city": "Lyon"})
    return url


def post(server: Any, batch: list[Any]) -> list[dict[str, Any]]:
    answer = requests.post(server.url + "/v1/batch", json={"batch": batch}, auth=(KEY, ""), timeout=30)
    assert answer.status_code == 200, answer.text
    rejected: list[dict[str, Any]] = answer.json()["rejected"]
    return rejected


def test_serve_logs_a_message_naming_a_forgotten_person_without_its_content(
        serve: Any, db: str, tmp_path: Path) -> None:
    server = serve(db, write_keys=[KEY])
    log = tmp_path / "identity.db.rejects.ndjson"
    # Refused before the forget (a trait over 1000 bytes): kept as it was sent.
    assert len(post(server, [kim("m-before", traits={"bio": "K" * 2000, "city": "Lyon"})])) == 1
    before = log.read_text()
    with idstitch.open(db) as ws:  # another process's forget, as `idstitch forget` runs it
        ws.forget("kim-55", reason="ticket 313")

    batch = traffic_after_the_forget()
    rejected = post(server, batch)
    assert [r["index"] for r in rejected] == list(range(len(batch)))
    server.stop()

    text = log.read_text()
    assert text.startswith(before) and "kim-55" in before  # what the how-to tells to remove
    after = text[len(before):]
    assert not [value for value in (*KIM, "KIM@") if value in after]
    lines = [json.loads(line) for line in after.splitlines()]
    assert [(e["index"], e["reason"]) for e in lines] == [(r["index"], r["reason"]) for r in rejected]
    withheld, [other] = lines[:-1], lines[-1:]
    assert [e["message"] for e in withheld] == [
        {"messageId": "m-suppressed", "type": "identify"}, {"messageId": "m-email", "type": "identify"},
        {"messageId": "m-timestamp", "type": "identify"}, {"messageId": "m-no-token", "type": "track"},
        {"messageId": "m-too-large", "type": "identify"}, {}]
    assert all(e["erased"] is True for e in withheld)
    assert "erased" not in other and other["message"]["traits"] == {"city": "Oslo"}


def test_ingest_writes_a_rejected_line_naming_a_forgotten_person_without_its_text(
        db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with idstitch.open(db) as ws:
        ws.forget("kim@example.com", reason="ticket 313")
    source = tmp_path / "traffic.ndjson"
    messages = traffic_after_the_forget()
    source.write_text("\n".join(json.dumps(m) for m in messages) + "\n"
                      + json.dumps({"batch": [kim("m-in-batch"), messages[-1]]}) + "\n")
    rejects = tmp_path / "rejects.ndjson"
    assert main(["--db", db, "ingest", str(source), "--rejects", str(rejects)]) == 3
    capsys.readouterr()

    text = rejects.read_text()
    assert not [value for value in (*KIM, "KIM@") if value in text]
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["line"], r.get("batch_index"), r.get("erased")) for r in records] == [
        (1, None, True), (2, None, True), (3, None, True), (4, None, True), (5, None, True),
        (6, None, True), (7, None, None), (8, 0, True), (8, 1, None)]
    assert {r["raw"] is None for r in records if r.get("erased")} == {True}
    assert json.loads(records[6]["raw"])["traits"] == {"city": "Oslo"}
