"""Issue 9, items 1 and 2: hostile input gets one outcome on every store, never a crash.

Each input runs on memory, a real SQLite file and the real PostgreSQL of the test run (the
``ws``/``make_ws`` fixtures), and every store must give the outcome the table names: either
``InvalidCommand`` naming the field with the store unchanged, or accepted with catch-up, the
queries and a rebuild still working. A value that one store accepts and another refuses (a NUL
byte in a row key on PostgreSQL) would otherwise be recorded and then poison every catch-up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from idstitch.errors import InvalidCommand
from idstitch.workspace import Workspace


def deep(levels: int, leaf: Any = 1) -> Any:
    """An object nested ``levels`` deep."""
    value = leaf
    for _ in range(levels):
        value = {"x": value}
    return value


def deep_list(levels: int) -> Any:
    """A list nested ``levels`` deep."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def deep_tuple(levels: int) -> Any:
    """A (hashable) tuple nested ``levels`` deep."""
    value: Any = ()
    for _ in range(levels):
        value = (value,)
    return value


def assert_usable(ws: Workspace) -> None:
    """Catch-up, a command, the queries and a rebuild all work afterwards."""
    ws.catch_up()
    ws.identify("d-after", "u-after", {"after": True})
    assert ws.profile("u-after").attributes == {"after": True}  # type: ignore[union-attr]
    rows = ws.dump()
    ws.rebuild()
    assert ws.dump() == rows


REJECTED: list[tuple[str, Callable[[Workspace], object], str]] = [
    # Nesting far past 16 levels: the encoder's own recursion must not escape.
    ("traits 10,000 deep", lambda ws: ws.set_profile_attributes("d1", deep(10_000)), "traits"),
    ("identify traits 10,000 deep", lambda ws: ws.identify("d1", "u1", {"a": deep(10_000)}),
     "traits.a"),
    ("list 10,000 deep", lambda ws: ws.set_profile_attributes("d1", {"a": deep_list(10_000)}),
     "traits.a"),
    ("set_once 10,000 deep", lambda ws: ws.set_profile_attributes(
        "d1", set_once={"a": deep(10_000)}), "set_once.a"),
    ("device attributes 10,000 deep",
     lambda ws: ws.set_device_attributes("d1", deep(10_000)), "attributes"),
    ("collected attributes 10,000 deep",
     lambda ws: ws.collect_device_attributes("d1", {"ip": deep(10_000)}), "context.ip"),
    ("sdk 10,000 deep", lambda ws: ws.activate("d1", sdk=deep(10_000)), "sdk"),
    ("an unset entry 10,000 deep",
     lambda ws: ws.set_profile_attributes("d1", unset=[deep_list(10_000)]), "unset"),
    ("a key 10,000 deep", lambda ws: ws.set_profile_attributes("d1", {deep_tuple(10_000): 1}),
     "traits"),
]


@pytest.mark.parametrize(("name", "call", "field"), REJECTED, ids=[c[0] for c in REJECTED])
def test_hostile_input_is_invalid_on_every_store_and_changes_nothing(
    ws: Workspace, name: str, call: Callable[[Workspace], object], field: str
) -> None:
    ws.identify("d1", "u1", {"kept": True})
    ws.register_device_token("d1", "tok")
    head, before = ws.log.head(), ws.dump()
    with pytest.raises(InvalidCommand) as caught:
        call(ws)
    assert caught.value.field.startswith(field), caught.value
    assert caught.value.reason
    assert ws.log.head() == head
    assert ws.dump() == before
    assert_usable(ws)


# Ingest: one bad line is a rejection with its reason; the lines around it are recorded.

def line(n: int, **fields: Any) -> dict[str, Any]:
    """An identify message numbered ``n`` (a valid one unless ``fields`` spoil it)."""
    msg: dict[str, Any] = {"type": "identify", "userId": f"user-{n}", "anonymousId": f"dev-{n}",
                           "messageId": f"m{n}", "timestamp": "2026-01-01T00:00:00Z",
                           "traits": {"n": n}}
    msg.update(fields)
    return msg


def text(msg: dict[str, Any]) -> str:
    return json.dumps(msg)


def nested_json(msg: dict[str, Any], levels: int) -> str:
    """``msg`` as a JSON line, its ``"HOLE"`` value replaced by arrays nested ``levels`` deep
    (written out: the json module itself cannot encode such depth)."""
    return text(msg).replace('"HOLE"', "[" * levels + "]" * levels)


BAD_LINES: list[tuple[str, object, str]] = [
    ("nested 1,000 deep in an ignored field",
     nested_json(line(1, integrations={"a": "HOLE"}), 1000), "message"),
    ("nested 100,000 deep in an ignored field",
     nested_json(line(1, integrations="HOLE"), 100_000), "message"),
    ("traits nested 1,000 deep", nested_json(line(1, traits={"a": "HOLE"}), 1000), "message"),
    ("a str line holding a lone surrogate",
     json.dumps(line(1, traits={"a": "\ud800"}), ensure_ascii=False), "message"),
    ("a dict whose type holds a lone surrogate", line(1, type="identify\ud800"), "message"),
    ("a dict with traits 10,000 deep", line(1, traits={"a": deep(10_000)}), "traits.a"),
    ("a dict with properties 10,000 deep",
     {"type": "track", "event": "Device Created or Updated", "anonymousId": "dev-1",
      "messageId": "m1", "properties": {"prefs": deep(10_000)},
      "context": {"device": {"id": "dev-1", "token": "tok-1"}}}, "attributes.prefs"),
]


@pytest.mark.parametrize(("name", "bad", "field"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_a_bad_line_is_rejected_with_its_reason_and_the_batch_goes_on(
    ws: Workspace, name: str, bad: object, field: str
) -> None:
    report = ws.ingest([text(line(0)), bad, line(2), text(line(3)).encode()])  # type: ignore[list-item]
    assert report.accepted == 3
    assert [i for i, _ in report.rejected] == [1]
    assert report.rejected[0][1].startswith(f"{field}"), report.rejected[0][1]
    assert_usable(ws)
    assert [ws.profile(f"user-{n}") is not None for n in range(4)] == [True, False, True, True]


# Any JSON-ish traits: one outcome on every store.


