"""identity-model.md §7: bad input gets a typed error naming the field; the store is unchanged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from idstitch.errors import InvalidCommand
from idstitch.workspace import Workspace


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"x": value}
    return value


CASES: list[tuple[str, Callable[[Workspace], object], str]] = [
    ("long device id", lambda ws: ws.identify("d" * 151, "u1"), "device_id"),
    ("long user id", lambda ws: ws.identify("d1", "u" * 151), "user_id"),
    ("id not a string", lambda ws: ws.identify("d1", 42), "user_id"),  # type: ignore[arg-type]
    ("traits not an object", lambda ws: ws.identify("d1", "u1", ["a"]), "traits"),  # type: ignore[arg-type]
    ("too many attributes",
     lambda ws: ws.set_profile_attributes("d1", {f"k{i}": i for i in range(301)}), "traits"),
    ("value over 1000 bytes",
     lambda ws: ws.set_profile_attributes("d1", {"bio": "x" * 1001}), "traits.bio"),
    ("nesting deeper than 16",
     lambda ws: ws.set_device_attributes("d1", {"n": deep(16)}), "attributes.n"),
    ("not JSON", lambda ws: ws.set_profile_attributes("d1", {"when": datetime.now()}),
     "traits.when"),
    ("NaN is not JSON", lambda ws: ws.set_profile_attributes("d1", {"x": float("nan")}),
     "traits.x"),
    ("non-string key", lambda ws: ws.set_device_attributes("d1", {1: "a"}),  # type: ignore[dict-item]
     "attributes"),
    ("naive timestamp", lambda ws: ws.identify("d1", "u1", timestamp=datetime(2026, 1, 1)),
     "timestamp"),
    ("blank token", lambda ws: ws.register_device_token("d1", " "), "token"),
    ("unset not a list", lambda ws: ws.set_profile_attributes("d1", unset="plan"),  # type: ignore[arg-type]
     "unset"),
    ("unknown push status", lambda ws: ws.record_push_status("d1", "opened"), "status"),
]


@pytest.mark.parametrize(("name", "call", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_and_nothing_is_recorded(
    ws: Workspace, name: str, call: Callable[[Workspace], object], field: str
) -> None:
    ws.identify("d1", "u1", {"kept": True})
    before = ws.dump()
    head = ws.log.head()
    with pytest.raises(InvalidCommand) as caught:
        call(ws)
    assert caught.value.field.startswith(field)
    assert caught.value.reason
    assert ws.log.head() == head
    assert ws.dump() == before


def test_limits_are_inclusive(ws: Workspace) -> None:
    ws.set_profile_attributes("d1", {f"k{i}": i for i in range(300)})
    ws.set_device_attributes("d1", {"n": deep(15)})
    ws.identify("d1", "u" * 150)
    assert len(ws.profile("u" * 150).attributes) == 300  # type: ignore[union-attr]


def test_unsupported_url_is_a_clear_error() -> None:
    import idstitch

    with pytest.raises(InvalidCommand, match="url"):
        idstitch.open("mysql://nope")


@pytest.mark.parametrize("placeholder", ["null", "undefined", " NULL "])
def test_a_placeholder_anonymous_id_beside_a_device_id_is_rejected(
        make_ws: Callable[..., Workspace], placeholder: str) -> None:
    """The SDK's anonymousId becomes an identifier profiles are found by: a placeholder one
    beside a context.device.id was accepted, and "null" then found whoever sent it."""
    ws = make_ws()
    report = ws.ingest([
        {"type": "identify", "anonymousId": placeholder, "traits": {"a": 1},
         "context": {"device": {"id": "phone-A"}}},
        {"type": "identify", "userId": "alice", "anonymousId": placeholder,
         "context": {"device": {"id": "phone-A"}}},
        {"type": "identify", "userId": "alice", "anonymousId": "sdk-session-1",
         "context": {"device": {"id": "phone-A"}}}])
    assert [i for i, _ in report.rejected] == [0, 1]
    assert all(reason.startswith("anonymousId:") and "placeholder" in reason
               for _, reason in report.rejected)
    assert ws.profile(placeholder.strip()) is None
    alice = ws.profile("alice")
    assert alice is not None and "sdk-session-1" in alice.anonymous_ids
