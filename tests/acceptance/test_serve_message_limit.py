"""The 32 KB a message of ``idstitch serve``, over real HTTP: measured on the message as the
client sent it, never after the server added its ``receivedAt``, the batch's ``sentAt`` or the
batch's ``context``; a refused message is reported with the size the client sent."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import requests

import idstitch
from idstitch.serve import MESSAGE_LIMIT

KEY = "test-key"
HEADERS = {"Content-Type": "application/json",
           "Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sized(user: str, size: int, **extra: Any) -> bytes:
    """An identify of exactly ``size`` bytes of compact JSON, padded with traits of 900 bytes
    at most (ingest refuses a longer value)."""
    message: dict[str, Any] = {"type": "identify", "userId": user, "messageId": f"m-{user}",
                               "context": {"device": {"id": f"d-{user}"}}, **extra, "traits": {}}
    traits: dict[str, str] = message["traits"]
    while len(compact(message)) < size:
        key = f"k{len(traits)}"
        traits[key] = ""
        traits[key] = "x" * min(900, max(0, size - len(compact(message))))
    text = compact(message)
    assert len(text) == size
    return text


def post(server: Any, path: str, body: bytes) -> requests.Response:
    return requests.post(server.url + path, data=body, headers=HEADERS, timeout=30)


def reasons(answer: requests.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [r["reason"] for r in answer.json()["rejected"]]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/identity.db"


@pytest.mark.parametrize("envelope", [
    pytest.param(b'{"batch":[%s]}', id="raw path"),
    # The batch's own sentAt is spliced into every message that has none.
    pytest.param(b'{"batch":[%s],"sentAt":"2026-03-01T09:00:00.000Z"}', id="raw path, sentAt"),
    # A context in the envelope is merged into each message (the dict path).
    pytest.param(b'{"batch":[%s],"context":{"app":{"build":"' + b"y" * 2000 + b'"}}}',
                 id="dict path, batch context"),
])
def test_a_message_of_exactly_32_kb_is_taken_one_byte_more_is_refused_with_its_size(
        serve: Any, db: str, envelope: bytes) -> None:
    server = serve(db)
    assert reasons(post(server, "/v1/batch", envelope % sized("at-limit", MESSAGE_LIMIT))) == []
    over = reasons(post(server, "/v1/batch", envelope % sized("over", MESSAGE_LIMIT + 1)))
    assert over == [f"message: is {MESSAGE_LIMIT + 1} bytes, more than the 32 KB a message may hold"]
    server.stop()
    with idstitch.open(db) as ws:
        assert ws.profile("at-limit") is not None and ws.profile("over") is None


def test_a_message_carrying_a_write_key_is_measured_as_sent(serve: Any, db: str) -> None:
    """The key is taken out before the message is recorded (the dict path): its bytes still
    count, as the client sent them."""
    server = serve(db)
    at_limit = sized("at-limit", MESSAGE_LIMIT, writeKey=KEY)
    over = sized("over", MESSAGE_LIMIT + 1, writeKey=KEY)
    assert reasons(post(server, "/v1/batch", b'{"batch":[%s]}' % at_limit)) == []
    assert reasons(post(server, "/v1/batch", b'{"batch":[%s]}' % over)) == [
        f"message: is {MESSAGE_LIMIT + 1} bytes, more than the 32 KB a message may hold"]


def test_a_single_message_call_of_exactly_32_kb_is_taken_one_byte_more_is_413(
        serve: Any, db: str) -> None:
    server = serve(db)
    assert reasons(post(server, "/v1/identify", sized("at-limit", MESSAGE_LIMIT))) == []
    answer = post(server, "/v1/identify", sized("over", MESSAGE_LIMIT + 1))
    assert answer.status_code == 413 and answer.json()["code"] == "payload_too_large"
    server.stop()
    with idstitch.open(db) as ws:
        assert ws.profile("at-limit") is not None and ws.profile("over") is None
