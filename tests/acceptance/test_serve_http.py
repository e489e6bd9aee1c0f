"""``idstitch serve`` at its edges, over real HTTP to a running server: keys, limits, gzip, errors,
refused messages, backpressure, shutdown, the receive time and the batch's ``sentAt``."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from starlette.applications import Starlette
from starlette.routing import Mount

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.serve import app

KEY = "test-key"


def identify(user: str, device: str, **extra: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": {"plan": "pro"},
            "context": {"device": {"id": device}}, **extra}


def post(server: Any, path: str, body: Any, *, auth: str | None = "basic",
         encoding: str | None = None) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    elif auth == "bearer":
        headers["Authorization"] = "Bearer " + KEY
    elif auth is not None:
        headers["Authorization"] = auth
    if encoding == "gzip":
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    elif encoding is not None:
        headers["Content-Encoding"] = encoding
    return requests.post(server.url + path, data=data, headers=headers, timeout=30)


def assert_error(response: requests.Response, status: int, code: str) -> None:
    """A non-2xx answer with the JSON body the Customer.io client needs to read it."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/identity.db"


def recorded(url: str, *users: str) -> list[str]:
    """Which of the users have a profile in the store."""
    with idstitch.open(url) as ws:
        return [u for u in users if ws.profile(u) is not None]


@pytest.mark.parametrize("auth", ["basic", "bearer", "body"])
def test_each_way_of_giving_the_key(serve: Any, db: str, auth: str) -> None:
    server = serve(db, write_keys=["other-key", KEY])
    body: dict[str, Any] = {"batch": [identify("u-1", "d-1")]}
    if auth == "body":
        body["writeKey"] = KEY
    answer = post(server, "/v1/batch", body, auth=None if auth == "body" else auth)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "received": 1, "rejected": []}
    server.stop()
    assert recorded(db, "u-1") == ["u-1"]


@pytest.mark.parametrize("auth", [None, "Basic " + base64.b64encode(b"wrong:").decode(), "Bearer wrong",
                                  "Token test-key", "Basic !!!"])
def test_a_missing_or_unknown_key_is_401_and_records_nothing(serve: Any, db: str, tmp_path: Path,
                                                              auth: str | None) -> None:
    server = serve(db)
    for body in ({"batch": [identify("u-1", "d-1")]},
                 {"batch": [identify("u-1", "d-1")], "writeKey": "wrong"}):
        assert_error(post(server, "/v1/batch", body, auth=auth), 401, "unauthorized")
    assert_error(post(server, "/v1/identify", identify("u-1", "d-1"), auth=auth), 401, "unauthorized")
    server.stop()
    assert recorded(db, "u-1") == []
    assert not (tmp_path / "identity.db.rejects.ndjson").exists()


def test_a_header_key_is_not_overridden_by_the_body(serve: Any, db: str) -> None:
    server = serve(db)
    answer = post(server, "/v1/batch", {"batch": [identify("u-1", "d-1")], "writeKey": KEY},
                  auth="Bearer wrong")
    assert_error(answer, 401, "unauthorized")


def test_a_batch_over_500_kb_is_413_whole(serve: Any, db: str) -> None:
    server = serve(db)
    # 20 messages of 26 KB each: every one within its own limit, together over 500 KB.
    batch = [identify(f"u-{i}", f"d-{i}", properties={"pad": "x" * 26_000}) for i in range(20)]
    assert_error(post(server, "/v1/batch", {"batch": batch}), 413, "payload_too_large")
    # Gzipped to a few KB it is still over the limit once decompressed.
    assert_error(post(server, "/v1/batch", {"batch": batch}, encoding="gzip"), 413, "payload_too_large")
    server.stop()
    assert recorded(db, "u-0", "u-19") == []


def test_a_message_over_32_kb_is_refused_alone_and_reported(serve: Any, db: str, tmp_path: Path) -> None:
    server = serve(db)
    big = identify("u-big", "d-big", properties={"pad": "x" * 33 * 1024})
    answer = post(server, "/v1/batch", {"batch": [identify("u-1", "d-1"), big, identify("u-2", "d-2")]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["received"] == 3
    [refused] = body["rejected"]
    assert refused["index"] == 1 and "32 KB" in refused["reason"]
    # A single-message call of that size is refused whole.
    assert_error(post(server, "/v1/identify", big), 413, "payload_too_large")
    server.stop()
    assert recorded(db, "u-1", "u-2", "u-big") == ["u-1", "u-2"]
    lines = (tmp_path / "identity.db.rejects.ndjson").read_text().splitlines()
    [logged] = [json.loads(line) for line in lines]
    assert (logged["endpoint"], logged["index"], logged["reason"]) == ("/v1/batch", 1, refused["reason"])
    assert logged["message"]["userId"] == "u-big"


def test_a_rejected_message_is_reported_logged_and_the_rest_recorded(serve: Any, db: str,
                                                                      tmp_path: Path) -> None:
    server = serve(db)
    batch = [identify("u-1", "d-1"), {"type": "identify", "traits": {"a": 1}, "writeKey": KEY},
             "not an object", {"type": "explode"}, identify("u-2", "d-2"),
             # JSON text inside the batch is a string, not a message: it is not decoded.
             json.dumps(identify("u-sneaky", "d-3"))]
    answer = post(server, "/v1/batch", {"batch": batch, "sentAt": datetime.now(UTC).isoformat()})
    assert answer.status_code == 200, answer.text
    rejected = answer.json()["rejected"]
    assert [r["index"] for r in rejected] == [1, 2, 3, 5]
    assert rejected[0]["reason"].startswith("userId:")
    assert rejected[1]["reason"] == rejected[3]["reason"] == "message: must be a JSON object, got str"
    assert rejected[2]["reason"].startswith("type:")
    server.stop()
    assert recorded(db, "u-1", "u-2", "u-sneaky") == ["u-1", "u-2"]
    log = [json.loads(line) for line in (tmp_path / "identity.db.rejects.ndjson").read_text().splitlines()]
    assert [(e["index"], e["reason"]) for e in log] == [(r["index"], r["reason"]) for r in rejected]
    assert log[1]["message"] == "not an object"
    # The write key is a credential: it is not kept with the message.
    assert "writeKey" not in log[0]["message"] and log[0]["message"]["traits"] == {"a": 1}
    assert all(e["received_at"] == log[0]["received_at"] for e in log)


def test_gzip_bodies_and_bad_encodings(serve: Any, db: str) -> None:
    server = serve(db)
    assert post(server, "/v1/batch", {"batch": [identify("u-1", "d-1")]}, encoding="gzip").status_code == 200
    # Gzip bytes without the header are not JSON.
    assert_error(post(server, "/v1/batch", gzip.compress(b"{}")), 400, "invalid_request")
    bad = requests.post(server.url + "/v1/batch", data=b"\x1f\x8b\x08garbage",
                        headers={"Content-Encoding": "gzip", "Authorization": "Bearer " + KEY}, timeout=30)
    assert_error(bad, 400, "invalid_request")
    truncated = gzip.compress(json.dumps({"batch": [identify("u-2", "d-2")]}).encode())[:-10]
    cut = requests.post(server.url + "/v1/batch", data=truncated,
                        headers={"Content-Encoding": "gzip", "Authorization": "Bearer " + KEY}, timeout=30)
    assert_error(cut, 400, "invalid_request")
    assert_error(post(server, "/v1/batch", {"batch": []}, encoding="br"), 415, "unsupported_encoding")
    server.stop()
    assert recorded(db, "u-1", "u-2") == ["u-1"]


def test_every_error_has_the_json_body(serve: Any, db: str) -> None:
    server = serve(db)
    assert_error(post(server, "/v1/batch", b"{not json"), 400, "invalid_request")
    assert_error(post(server, "/v1/batch", [1, 2]), 400, "invalid_request")
    assert_error(post(server, "/v1/batch", {"batch": "no"}), 400, "invalid_request")
    assert_error(post(server, "/v1/nothing", {}), 404, "not_found")
    assert_error(post(server, "/v1/nothing/", {}), 404, "not_found")
    # A trailing slash is the same endpoint (not a redirect with an empty body).
    assert post(server, "/v1/batch/", {"batch": [identify("u-1", "d-1")]}).status_code == 200
    assert post(server, "/v1/identify/", identify("u-2", "d-2")).status_code == 200
    assert_error(requests.get(server.url + "/v1/batch", timeout=30), 405, "method_not_allowed")


def test_single_message_endpoints_take_their_type_from_the_path(serve: Any, db: str) -> None:
    server = serve(db)
    message = identify("u-1", "d-1")
    del message["type"]
    assert post(server, "/v1/identify", message).json() == {"success": True, "received": 1, "rejected": []}
    track = {"userId": "u-1", "event": "Device Created or Updated",
             "context": {"device": {"id": "d-1", "token": "tok-1", "type": "android"}}}
    assert post(server, "/v1/track", track, auth="bearer").status_code == 200
    for kind in ("screen", "page", "alias", "group"):
        answer = post(server, f"/v1/{kind}", {"userId": "u-1", "writeKey": KEY}, auth=None)
        assert answer.json() == {"success": True, "received": 1, "rejected": []}
    server.stop()
    with idstitch.open(db) as ws:
        profile = ws.profile("u-1")
        assert profile is not None and profile.attributes == {"plan": "pro"}
        assert [(d.device_id, d.token, d.platform) for d in profile.devices] == [("d-1", "tok-1", "android")]


def test_the_batch_sent_at_and_the_receive_time_correct_a_wrong_device_clock(serve: Any, db: str) -> None:
    server = serve(db)
    # The device's clock is an hour ahead: its timestamp and the batch's sentAt both say so.
    ahead = datetime.now(UTC) + timedelta(hours=1)
    message = identify("u-1", "d-1", timestamp=ahead.isoformat())
    answer = post(server, "/v1/batch", {"batch": [message], "sentAt": ahead.isoformat()})
    assert answer.status_code == 200
    # A message with its own receivedAt keeps it (a relay that already stamped it).
    relayed = identify("u-2", "d-2", timestamp="2026-01-01T10:00:00+00:00",
                       sentAt="2026-01-01T10:00:05+00:00", receivedAt="2026-01-01T09:00:05+00:00")
    assert post(server, "/v1/batch", {"batch": [relayed], "sentAt": ahead.isoformat()}).status_code == 200
    server.stop()
    with idstitch.open(db) as ws:
        [change] = ws.history("u-1")
        assert change.timestamp is not None
        assert abs(change.timestamp - datetime.now(UTC)) < timedelta(minutes=1)
        [change] = ws.history("u-2")
        assert change.timestamp == datetime(2026, 1, 1, 9, tzinfo=UTC)


def hold_write_lock(path: str) -> sqlite3.Connection:
    """Another connection takes the SQLite file's write lock: the server's writer must wait."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def until(condition: Any, what: str) -> None:
    """Wait (up to 20 s, the machine may be busy) for a condition the test needs first."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def admitted(server: Any) -> int:
    return int(server.asgi.state.gate.admitted)


def in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def test_a_full_queue_makes_requests_wait_then_503(serve: Any, db: str, tmp_path: Path) -> None:
    server = serve(db, capacity=1, queue_timeout=0.5)
    assert post(server, "/v1/batch", {"batch": [identify("u-0", "d-0")]}).status_code == 200
    lock = hold_write_lock(f"{tmp_path}/identity.db")
    first, first_answer = in_thread(lambda: post(server, "/v1/batch", {"batch": [identify("u-1", "d-1")]}))
    until(lambda: admitted(server) == 1, "the first request to hold the only slot")
    time.sleep(0.1)  # its messages reach the writer, which waits for the lock
    assert_error(post(server, "/v1/batch", {"batch": [identify("u-2", "d-2")]}), 503, "overloaded")
    lock.rollback()
    lock.close()
    first.join(30)
    assert first_answer[0].status_code == 200
    # The slot is free again.
    assert post(server, "/v1/batch", {"batch": [identify("u-3", "d-3")]}).status_code == 200
    server.stop()
    assert recorded(db, "u-0", "u-1", "u-2", "u-3") == ["u-0", "u-1", "u-3"]


def test_shutdown_answers_and_records_what_it_accepted(serve: Any, db: str, tmp_path: Path) -> None:
    server = serve(db)
    assert post(server, "/v1/batch", {"batch": [identify("u-0", "d-0")]}).status_code == 200
    lock = hold_write_lock(f"{tmp_path}/identity.db")
    waiting = [in_thread(lambda i=i: post(server, "/v1/batch", {"batch": [identify(f"u-{i}", f"d-{i}")]}))
               for i in range(1, 4)]
    until(lambda: admitted(server) == 3, "three requests to be admitted")
    stopping, _ = in_thread(server.stop)  # SIGTERM's path: stop accepting, drain, close
    time.sleep(0.3)
    assert stopping.is_alive()  # it waits for the accepted requests
    lock.rollback()
    lock.close()
    stopping.join(30)
    for thread, answer in waiting:
        thread.join(30)
        assert answer[0].status_code == 200
    assert recorded(db, "u-0", "u-1", "u-2", "u-3") == ["u-0", "u-1", "u-2", "u-3"]


def test_concurrent_requests_share_commits_and_each_gets_its_own_report(serve: Any, db: str,
                                                                         tmp_path: Path) -> None:
    server = serve(db)
    lock = hold_write_lock(f"{tmp_path}/identity.db")
    # While the writer waits, eight requests queue up: they are committed together after it.
    requests_ = [in_thread(lambda i=i: post(server, "/v1/batch", {"batch": [
        identify(f"u-{i}", f"d-{i}"), {"type": "identify", "traits": {}}]}))
        for i in range(8)]
    until(lambda: admitted(server) == 8, "eight requests to be admitted")
    time.sleep(0.2)  # and read: their messages are queued behind the first
    lock.rollback()
    lock.close()
    for thread, answer in requests_:
        thread.join(30)
        assert answer[0].status_code == 200
        [refused] = answer[0].json()["rejected"]
        assert refused["index"] == 1  # its own index, not the group's
    # The first request's commit waited for the lock; the seven behind it shared one commit.
    assert server.asgi.state.gate.writer.groups <= 3
    server.stop()
    assert recorded(db, *(f"u-{i}" for i in range(8))) == [f"u-{i}" for i in range(8)]


def test_a_workspace_can_be_served_and_stays_open(serve: Any, tmp_path: Path) -> None:
    with idstitch.open("memory:") as ws:
        server = serve(ws, rejects=tmp_path / "rejects.ndjson")
        assert post(server, "/v1/batch", {"batch": [identify("u-1", "d-1"), {}]}).status_code == 200
        server.stop()
        assert ws.profile("u-1") is not None  # the owner still holds it open
        assert (tmp_path / "rejects.ndjson").read_text().count("\n") == 1


@pytest.mark.parametrize(("keys", "field"), [([], "write_keys"), ("key", "write_keys"), ([""], "write_keys")])
def test_the_app_needs_keys(keys: Any, field: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        app("memory:", keys)
    assert caught.value.field == field


def test_a_rejects_file_in_a_missing_folder_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(InvalidCommand) as caught:
        app("memory:", ["k"], rejects=tmp_path / "missing" / "rejects.ndjson")
    assert caught.value.field == "rejects" and "does not exist" in str(caught.value)


def test_mounted_in_another_app_with_its_lifespan(serve_asgi: Any, db: str) -> None:
    tracking = app(db, write_keys=[KEY])

    @contextlib.asynccontextmanager
    async def lifespan(outer: Starlette) -> Any:
        async with tracking.router.lifespan_context(tracking):
            yield

    server = serve_asgi(Starlette(routes=[Mount("/tracking", app=tracking)], lifespan=lifespan))
    answer = post(server, "/tracking/v1/batch", {"batch": [identify("u-1", "d-1")]})
    assert answer.json() == {"success": True, "received": 1, "rejected": []}
    server.stop()
    assert recorded(db, "u-1") == ["u-1"]


def test_a_batch_context_is_merged_under_each_message(serve: Any, db: str) -> None:
    server = serve(db)
    shared = {"device": {"id": "d-shared", "token": "tok-1", "type": "ios"}}
    batch = [{"type": "identify", "userId": "u-1"},
             {"type": "identify", "userId": "u-2", "context": {"device": {"id": "d-own"}}}]
    assert post(server, "/v1/batch", {"batch": batch, "context": shared}).status_code == 200
    server.stop()
    with idstitch.open(db) as ws:
        one, two = ws.profile("u-1"), ws.profile("u-2")
        assert one is not None and [d.device_id for d in one.devices] == ["d-shared"]
        assert two is not None and [d.device_id for d in two.devices] == ["d-own"]


def test_the_projections_are_brought_up_to_date_when_requests_pause(serve: Any, db: str) -> None:
    server = serve(db)
    assert post(server, "/v1/batch", {"batch": [identify("u-1", "d-1")]}).status_code == 200
    # A reader that does not fold the log itself sees what the server's writer folded.
    with idstitch.open(db, auto_catch_up=False) as reader:
        until(lambda: reader.profile("u-1") is not None, "the writer to catch the projections up")
        profile = reader.profile("u-1")
        assert profile is not None and profile.attributes == {"plan": "pro"}


def test_external_serve_only_appends_and_another_process_projects(serve: Any, db: str) -> None:
    """With ``external=True`` the writer never folds: the read models stay behind until a
    projector (here a workspace of the default kind, which catches up) brings them up."""
    server = serve(db, write_keys=[KEY], external=True)
    body = {"batch": [identify(f"u-{i}", f"d-{i}", messageId=f"m-{i}") for i in range(700)]}
    assert post(server, "/v1/batch", body).status_code == 200
    server.stop()  # drained: past 500 messages and the pause, a default writer would have folded
    with idstitch.open(db, projections="external") as ws:
        head = ws.log.head()
        assert head > 0 and ws.lag() == head  # nothing folded by the server
    assert recorded(db, "u-0", "u-699") == ["u-0", "u-699"]  # the embedded reader catches up


@pytest.mark.parametrize("context", [None, {"app": {"name": "shop"}}])
def test_a_batch_inside_a_batch_is_refused_alone(serve: Any, db: str,
                                                 context: dict[str, Any] | None) -> None:
    """ws.ingest reads an envelope where a line holds one: handed over as a line, a nested
    envelope once became two messages, shifted every index after it, and failed the writer's
    whole group with a 500 (other clients' requests in the same commit too). It is refused
    alone, as ws.ingest refuses it inside an envelope, on both of the endpoint's paths."""
    server = serve(db)
    body: dict[str, Any] = {"batch": [{"batch": [identify("u-in-1", "d-1")]},
                                      {"type": "identify", "userId": "null", "anonymousId": "x"},
                                      identify("u-2", "d-2")]}
    if context is not None:
        body["context"] = context
    answer = post(server, "/v1/batch", body)
    assert answer.status_code == 200, answer.text
    assert [r["index"] for r in answer.json()["rejected"]] == [0, 1]
    assert "batch envelope inside a batch" in answer.json()["rejected"][0]["reason"]
    server.stop()
    assert recorded(db, "u-in-1", "u-2") == ["u-2"]


def only_the_second_refused_as_not_json(answer: requests.Response) -> None:
    """A 200 whose report refuses the batch's second message alone, as no JSON."""
    assert answer.status_code == 200, answer.text
    rejected = answer.json()["rejected"]
    assert [r["index"] for r in rejected] == [1]
    assert rejected[0]["reason"].startswith("message: is not JSON")


@pytest.mark.parametrize("with_context", [False, True])
def test_a_message_with_a_byte_that_is_not_utf8_is_refused_alone(
        serve: Any, db: str, tmp_path: Path, with_context: bool) -> None:
    """Not a 500 (the clients retry it for ever, the good messages with it) nor a 400 for
    the whole batch: that message alone, and the rejects log stays UTF-8."""
    server = serve(db)
    good = json.dumps(identify("u-1", "d-1")).encode()
    bad = b'{"type":"identify","userId":"u-\xff","context":{"device":{"id":"d-2"}}}'
    body = b'{"batch":[' + good + b"," + bad + b"]" + (
        b',"context":{"locale":"en"}' if with_context else b"") + b"}"
    only_the_second_refused_as_not_json(post(server, "/v1/batch", body))
    server.stop()
    assert recorded(db, "u-1") == ["u-1"]
    log = (tmp_path / "identity.db.rejects.ndjson").read_bytes().decode("utf-8")  # UTF-8
    assert json.loads(log)["message"]["userId"] == "u-\ufffd"


def test_the_write_key_is_never_logged_whatever_refused_the_message(
        serve: Any, db: str, tmp_path: Path) -> None:
    server = serve(db)
    secret = {"writeKey": KEY}
    oversized = {**identify("u-1", "d-1"), "traits": {"x": "y" * 40_000}, **secret}
    nested = {"batch": [{**identify("u-2", "d-2"), **secret}], **secret}
    for body in ({"batch": [oversized, nested]},
                 {"batch": [oversized, nested], "context": {"locale": "en"}}):
        answer = post(server, "/v1/batch", body)
        assert [r["index"] for r in answer.json()["rejected"]] == [0, 1]
    assert post(server, "/v1/identify", {"batch": [], **secret}, auth=None).status_code == 200
    server.stop()
    log = (tmp_path / "identity.db.rejects.ndjson").read_text()
    assert len(log.splitlines()) == 5
    assert KEY not in log and "writeKey" not in log


def test_an_envelope_context_that_is_not_an_object_is_refused_as_ingest_refuses_it(
        serve: Any, db: str) -> None:
    server = serve(db)
    body = {"batch": [identify("u-1", "d-1")], "context": "not an object"}
    assert_error(post(server, "/v1/batch", body), 400, "invalid_request")
    server.stop()
    with idstitch.open(db) as ws:
        report = ws.ingest([body])
        assert report.accepted == 0 and report.rejected[0][1].startswith("context:")
        assert ws.profile("u-1") is None


def test_gzip_members_are_read_one_after_the_other(serve: Any, db: str) -> None:
    server = serve(db)
    text = json.dumps({"batch": [identify("u-1", "d-1")]}).encode()
    headers = {"Content-Encoding": "gzip", "Authorization": "Bearer " + KEY}
    two = gzip.compress(text[:20]) + gzip.compress(text[20:])
    assert requests.post(server.url + "/v1/batch", data=two, headers=headers,
                         timeout=30).status_code == 200
    junk = gzip.compress(text) + b"junk"
    assert_error(requests.post(server.url + "/v1/batch", data=junk, headers=headers, timeout=30),
                 400, "invalid_request")
    server.stop()
    assert recorded(db, "u-1") == ["u-1"]


def test_a_body_that_never_arrives_frees_its_slot(serve: Any, db: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from idstitch.serve import endpoint

    monkeypatch.setattr(endpoint, "BODY_TIMEOUT", 0.5)
    server = serve(db, capacity=1)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as stalled:
        stalled.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                        b"\r\nContent-Length: 100\r\n\r\n{")  # no key, and the body never ends
        answer = stalled.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    # Its slot was the only one: the next request gets it.
    assert post(server, "/v1/batch", {"batch": [identify("u-1", "d-1")]}).status_code == 200
    server.stop()
    assert recorded(db, "u-1") == ["u-1"]


def test_a_lone_surrogate_refuses_its_message_alone(serve: Any, db: str) -> None:
    """Python's Segment client escapes a string that held an undecodable byte as a lone
    UTF-16 surrogate, which is no character: that message is refused, the batch is not."""
    server = serve(db)
    bad = {"type": "identify", "userId": "u-2", "traits": {"file": "r\udce9sum\udce9.pdf"},
           "context": {"device": {"id": "d-2"}}}
    # Within the 32 KB as sent (UTF-8), twice that were it measured escaped to ASCII.
    wide = identify("u-3", "d-3", traits={f"k{i}": "\u6f22" * 300 for i in range(30)})
    body = json.dumps({"batch": [identify("u-1", "d-1"), bad, wide],
                       "sentAt": datetime.now(UTC).isoformat()}, ensure_ascii=False
                      ).encode("utf-8", "surrogatepass").replace(
                          "\udce9".encode("utf-8", "surrogatepass"), b"\\udce9")
    assert b"\\udce9" in body and len(body) < 40_000
    only_the_second_refused_as_not_json(post(server, "/v1/batch", body))
    server.stop()
    assert recorded(db, "u-1", "u-2", "u-3") == ["u-1", "u-3"]
