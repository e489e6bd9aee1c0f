"""Issue 9, items 1 and 2: hostile input gets one outcome on every store, never a crash.

Each input runs on memory, a real SQLite file and the real PostgreSQL of the test run (the
``ws``/``make_ws`` fixtures), and every store must give the outcome the table names: either
``InvalidCommand`` naming the field with the store unchanged, or accepted with catch-up, the
queries and a rebuild still working. A value that one store accepts and another refuses (a NUL
byte in a row key on PostgreSQL) would otherwise be recorded and then poison every catch-up.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.testing import FrozenClock, TemporaryPostgres
from idstitch.workspace import Workspace

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUS_5 = timezone(timedelta(hours=-5))
PLUS_5 = timezone(timedelta(hours=5))
LAST_HOUR = datetime(9999, 12, 31, 23, tzinfo=MINUS_5)
"""In UTC this is year 10000: converting it overflows."""
FIRST_HOUR = datetime(1, 1, 1, 1, tzinfo=PLUS_5)
"""In UTC this is year 0: converting it overflows."""
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


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


class BrokenOffset(tzinfo):
    """A tzinfo whose offset is not a valid one (a day and more)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "broken"


def assert_usable(ws: Workspace) -> None:
    """Catch-up, a command, the queries and a rebuild all work afterwards."""
    ws.catch_up()
    ws.identify("d-after", "u-after", {"after": True})
    assert ws.profile("u-after").attributes == {"after": True}  # type: ignore[union-attr]
    rows = ws.dump()
    ws.rebuild()
    assert ws.dump() == rows


SURROGATE = "\ud800"
REJECTED: list[tuple[str, Callable[[Workspace], object], str]] = [
    # NUL: PostgreSQL text cannot hold it, so no recorded string may contain it.
    ("NUL in an email trait", lambda ws: ws.identify("d1", "u1", {"email": "a\x00@x.com"}),
     "traits.email"),
    ("NUL in a trait value", lambda ws: ws.set_profile_attributes("d1", {"plan": "p\x00"}),
     "traits.plan"),
    ("NUL in a trait name", lambda ws: ws.set_profile_attributes("d1", {"pl\x00an": 1}), "traits"),
    ("NUL in a nested value",
     lambda ws: ws.set_profile_attributes("d1", {"a": {"b": ["ok", "x\x00"]}}), "traits.a"),
    ("NUL in a nested name", lambda ws: ws.set_device_attributes("d1", {"a": {"\x00": 1}}),
     "attributes.a"),
    ("NUL in a set_once value", lambda ws: ws.set_profile_attributes(
        "d1", set_once={"email": "b\x00@x.com"}), "set_once.email"),
    ("NUL in an unset name", lambda ws: ws.set_profile_attributes("d1", unset=["a\x00"]),
     "unset"),
    ("NUL in an sdk value", lambda ws: ws.activate("d1", sdk={"version": "1\x00"}), "sdk.version"),
    ("NUL in a device attribute", lambda ws: ws.set_device_attributes("d1", {"k": "\x00"}),
     "attributes.k"),
    ("NUL in a collected attribute",
     lambda ws: ws.collect_device_attributes("d1", {"device_os": "18\x00"}), "context.device_os"),
    # Surrogates cannot be encoded as UTF-8 by any store.
    ("surrogate in an unset name", lambda ws: ws.set_profile_attributes("d1", unset=[SURROGATE]),
     "unset"),
    # Attribute names have one limit, whether set or unset.
    ("unset name over 150 bytes", lambda ws: ws.set_profile_attributes("d1", unset=["n" * 151]),
     "unset"),
    # Attribute names follow one rule at any depth (docs/reference/api.md, "Limits").
    ("a blank nested name", lambda ws: ws.set_profile_attributes("d1", {"a": {"  ": 1}}),
     "traits.a"),
    ("an empty name in a list", lambda ws: ws.set_device_attributes("d1", {"a": [{"": 1}]}),
     "attributes.a[0]"),
    ("a nested name over 150 bytes",
     lambda ws: ws.identify("d1", "u1", {"a": {"b": {"n" * 151: 1}}}), "traits.a.b.nnn"),
    ("a nested name over 150 bytes of UTF-8",
     lambda ws: ws.collect_device_attributes("d1", {"ip": {"\u00e9" * 76: 1}}), "context.ip."),
    ("a blank name in set_once", lambda ws: ws.set_profile_attributes(
        "d1", set_once={"a": {"\t": 1}}), "set_once.a"),
    ("a blank name in sdk", lambda ws: ws.activate("d1", sdk={"a": {" ": 1}}), "sdk.a"),
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
    # Times whose conversion to UTC, or whose clock-skew correction, leaves datetime's range.
    ("timestamp past year 9999 in UTC",
     lambda ws: ws.identify("d1", "u1", timestamp=LAST_HOUR), "timestamp"),
    ("timestamp before year 1 in UTC",
     lambda ws: ws.identify("d1", "u1", timestamp=FIRST_HOUR), "timestamp"),
    ("sent_at past year 9999 in UTC",
     lambda ws: ws.identify("d1", "u1", timestamp=T0, sent_at=LAST_HOUR), "sent_at"),
    ("skew correction past year 9999", lambda ws: ws.identify(
        "d1", "u1", timestamp=LATEST, sent_at=EARLIEST), "sent_at"),
    ("skew correction before year 1", lambda ws: ws.set_profile_attributes(
        "d1", {"a": 1}, timestamp=EARLIEST, sent_at=LATEST), "sent_at"),
    ("received_at past year 9999 in UTC", lambda ws: ws.identify(
        "d1", "u1", timestamp=T0, sent_at=T0, received_at=LAST_HOUR), "received_at"),
    ("skew correction from received_at past year 9999", lambda ws: ws.set_device_attributes(
        "d1", {"a": 1}, timestamp=T0, sent_at=EARLIEST, received_at=LATEST), "sent_at"),
    ("device attributes timestamp overflow",
     lambda ws: ws.set_device_attributes("d1", {"a": 1}, timestamp=LAST_HOUR), "timestamp"),
    ("activate timestamp overflow", lambda ws: ws.activate("d1", timestamp=FIRST_HOUR),
     "timestamp"),
    ("token removal timestamp overflow",
     lambda ws: ws.remove_device_token("d1", "tok", timestamp=LAST_HOUR), "timestamp"),
    ("push status timestamp overflow",
     lambda ws: ws.record_push_status("d1", "sent", timestamp=LAST_HOUR), "timestamp"),
    ("clear_identify timestamp overflow",
     lambda ws: ws.clear_identify("d1", timestamp=FIRST_HOUR), "timestamp"),
    ("logout timestamp overflow", lambda ws: ws.logout("d1", timestamp=LAST_HOUR), "timestamp"),
    ("a tzinfo with an impossible offset", lambda ws: ws.identify(
        "d1", "u1", timestamp=datetime(2026, 1, 1, tzinfo=BrokenOffset())), "timestamp"),
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


MAX_EMAIL = "\u0130" * 496 + "@x.com"
"""998 bytes of UTF-8 (1000 serialized, the value limit), 1,494 once lower-cased: the longest
identifier row key an attribute can make stays well under PostgreSQL's btree entry limit."""


def test_the_longest_values_and_names_are_accepted_on_every_store(ws: Workspace) -> None:
    # The edges of what is allowed, so that a fix for the classes above does not reject them.
    user, email_user = "u" * 150, "a" * 144 + "@x.com"
    token = "\u20ac" * 333  # 999 bytes
    ws.identify("d1", user, {"email": MAX_EMAIL, "n" * 150: 1})
    ws.identify("d2", email_user)
    ws.register_device_token("d1", token, platform="\U0010ffff")
    odd = {"ffff": "\uffff", "controls": "\x01\x7f\x85", "bom": "\ufeff", "escaped": "\\u0000",
           "max": 2**64 - 1, "min": -(2**63), "big": 1e308, "tiny": 5e-324, "zero": -0.0}
    ws.set_device_attributes("d1", {"odd": odd})
    ws.set_profile_attributes("d1", set_once={"first": T0.isoformat()}, unset=["n" * 150])
    assert_usable(ws)
    assert ws.profile(email_user) is not None
    for identifier in (user, MAX_EMAIL.lower()):
        profile = ws.profile(identifier)
        assert profile is not None and profile.attributes["email"] == MAX_EMAIL
    device = ws.device("d1")
    assert device is not None and device.token == token and device.attributes == {"odd": odd}
    assert ws.profile(MAX_EMAIL.lower()).attributes == {  # type: ignore[union-attr]
        "email": MAX_EMAIL, "first": T0.isoformat()}


@pytest.mark.parametrize("moment", [EARLIEST, LATEST, datetime(9999, 12, 31, 18, tzinfo=MINUS_5)],
                         ids=["year 1", "year 9999", "year 9999 at -05:00"])
def test_times_at_the_edges_of_the_range_are_accepted_on_every_store(
    ws: Workspace, moment: datetime
) -> None:
    ws.identify("d1", "u1", {"a": 1}, timestamp=moment)
    ws.set_profile_attributes("d1", {"b": 2}, timestamp=moment, sent_at=moment)
    report = ws.ingest([line(1, userId="u2", anonymousId="d2", timestamp=moment.isoformat())])
    assert report.rejected == [] and report.accepted == 1
    assert_usable(ws)
    assert ws.profile("u1").attributes == {"a": 1, "b": 2}  # type: ignore[union-attr]
    assert ws.profile("u2") is not None


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
    ("NUL in an email trait", text(line(1, traits={"email": "a\x00@x.com"})), "traits.email"),
    ("NUL in a trait name", text(line(1, traits={"a\x00": 1})), "traits"),
    ("NUL in a property", text({"type": "track", "event": "Device Created or Updated",
                                "anonymousId": "dev-1", "properties": {"device_os": "\x00"},
                                "context": {"device": {"id": "dev-1", "token": "tok-1"}}}),
     "context.device_os"),
    # A number past a float's range: the error names where it is, not msgspec's `traits[...]`.
    ("a trait out of a float's range", text(line(1, traits={"plan": "HOLE"})).replace(
        '"HOLE"', "1e400"), "traits.plan: number out of range"),
    ("a nested trait out of range", text(line(1, traits={"a": {"b": [1, "HOLE"]}})).replace(
        '"HOLE"', "-1e400"), "traits.a.b[1]: number out of range"),
    ("a property out of range", text({
        "type": "track", "event": "Device Created or Updated", "anonymousId": "dev-1",
        "properties": {"device_os": "18", "custom": "HOLE"},
        "context": {"device": {"id": "dev-1", "token": "tok-1"}}}).replace('"HOLE"', "1e999"),
     "properties.custom: number out of range"),
    ("timestamp past year 9999 in UTC", text(line(1, timestamp="9999-12-31T23:00:00-05:00")),
     "timestamp"),
    ("timestamp before year 1 in UTC", text(line(1, timestamp="0001-01-01T01:00:00+05:00")),
     "timestamp"),
    ("sentAt past year 9999 in UTC", text(line(1, sentAt="9999-12-31T23:00:00-05:00")), "sent_at"),
    ("skew correction past year 9999", text(line(
        1, timestamp="9999-12-31T23:59:59Z", sentAt="0001-01-01T00:00:00Z")), "sent_at"),
    ("skew correction before year 1", text(line(
        1, timestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T00:00:00Z")), "sent_at"),
    ("receivedAt past year 9999 in UTC", text(line(
        1, sentAt="2026-01-01T00:00:00Z", receivedAt="9999-12-31T23:00:00-05:00")), "received_at"),
    ("skew correction from receivedAt", text(line(
        1, timestamp="0001-01-01T00:00:00Z", sentAt="2026-01-01T00:00:00Z",
        receivedAt="0001-01-01T00:00:00Z")), "sent_at"),
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

SPECIAL = st.sampled_from(["\x00", "\ud800", "\udfff", "\u0130", "\uffff", "\U0010ffff", "@", "\\"])
TEXT = st.text(st.one_of(st.characters(), SPECIAL), max_size=12)
EMAILS = st.builds(lambda a, b: f"{a}@{b}", TEXT, TEXT)
LONG = st.sampled_from(["x" * 1001, "n" * 151, "\u20ac" * 400])
SCALARS = st.one_of(
    st.none(), st.booleans(), TEXT, EMAILS, LONG, st.floats(),
    st.integers(-(2**70), 2**70), st.sampled_from([2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
)
NAMES = st.one_of(st.sampled_from(["email", "plan", "n" * 150]), TEXT, LONG)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(NAMES, inner, max_size=3)),
    max_leaves=8,
)
VALUES = st.one_of(JSONISH, st.integers(17, 5000).map(deep), st.integers(17, 5000).map(deep_list))
TRAITS = st.dictionaries(NAMES, VALUES, max_size=4)


def test_any_traits_get_one_outcome_on_every_store(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    clock = FrozenClock(T0)
    spaces = {
        "memory": idstitch.open("memory:", clock=clock),
        "sqlite": idstitch.open(f"sqlite:///{tmp_path}/any.db", clock=clock),
        "postgres": idstitch.open(postgres.url("idstitch_tests") + "?schema=hostile_traits",
                                  clock=clock),
    }
    numbers = itertools.count()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(traits=TRAITS)
    def one_outcome(traits: dict[str, Any]) -> None:
        n = next(numbers)
        device = f"dev-{n}"
        outcomes: dict[str, object] = {}
        for kind, ws in spaces.items():
            # Identified, so that an `email` trait is claimed as an identifier (a row key).
            ws.identify(device, f"user-{n}")
            head, before = ws.log.head(), ws.dump()
            try:
                ws.set_profile_attributes(device, traits)
            except InvalidCommand as e:
                assert ws.log.head() == head and ws.dump() == before, kind
                outcomes[kind] = ("invalid", e.field)
                continue
            ws.catch_up()
            profile = ws.profile_of_device(device)
            assert profile is not None
            ws.rebuild()
            assert ws.profile_of_device(device) == profile, kind
            outcomes[kind] = ("accepted", profile.attributes)
        assert outcomes["memory"] == outcomes["sqlite"] == outcomes["postgres"]

    try:
        one_outcome()
    finally:
        for ws in spaces.values():
            ws.close()


def test_an_item_that_is_not_a_message_is_a_rejected_line(ws: Workspace) -> None:
    """Found by fuzzing the argument boundary: anything but a dict or a JSON line in the stream
    stopped the whole ingest with a TypeError from the decoder."""
    report = ws.ingest([range(2), 42, None, {"type": "identify", "userId": "u", "anonymousId": "d"}])  # type: ignore[list-item]
    assert report.accepted == 1
    assert [(i, reason.split(":")[0]) for i, reason in report.rejected] == [
        (0, "message"), (1, "message"), (2, "message")]
    assert ws.profile("u") is not None


def test_names_at_the_limit_are_accepted_at_any_depth(ws: Workspace) -> None:
    nested = {"n" * 150: 1, "\u00e9" * 75: 2, "x": [{"k" * 150: None}]}
    ws.identify("d1", "u1", {"a": nested})
    ws.set_device_attributes("d1", {"a": nested})
    profile, device = ws.profile("u1"), ws.device("d1")
    assert profile is not None and profile.attributes == {"a": nested}
    assert device is not None and device.attributes == {"a": nested}


@pytest.mark.parametrize("length", [151, 1001, 5000])
def test_a_message_id_over_the_limit_names_its_own_limit(ws: Workspace, length: int) -> None:
    with pytest.raises(InvalidCommand) as caught:
        ws.identify("d1", "u1", message_id="m" * length)
    assert caught.value.field == "message_id"
    assert caught.value.reason == "is longer than 150 bytes"
    report = ws.ingest([{**line(1), "messageId": "m" * length}])
    assert report.rejected == [(0, "message_id: is longer than 150 bytes")]
    assert ws.log.head() == 0


@pytest.mark.parametrize("message_id", ["m" * 141, "m" * 145, "m" * 150, "\u00e9" * 75,
                                        "m" * 139 + "\u00e9"],
                         ids=["141 bytes", "145 bytes", "150 bytes", "150 bytes of UTF-8",
                              "141 bytes, one of them non-ASCII"])
def test_a_device_message_with_a_long_valid_id_is_recorded_whole_and_once(
    ws: Workspace, message_id: str
) -> None:
    message = {"type": "track", "event": "Device Created or Updated", "anonymousId": "dev-1",
               "messageId": message_id, "properties": {"device_os": "18", "prefs": "dark"},
               "context": {"device": {"id": "dev-1", "token": "tok-1", "type": "ios"}}}
    report = ws.ingest([message])
    assert (report.accepted, report.rejected) == (1, [])
    head = ws.log.head()
    assert head == 3  # the token, the collected and the custom attributes
    again = ws.ingest([message, text(message)])
    assert (again.accepted, again.duplicates, again.rejected) == (0, 2, [])
    assert ws.log.head() == head
    device = ws.device("dev-1")
    assert device is not None and device.token == "tok-1"
    assert device.collected == {"device_os": "18"} and device.attributes == {"prefs": "dark"}
