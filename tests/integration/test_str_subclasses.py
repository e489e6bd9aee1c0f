"""Strings of a ``str`` subclass are text like any other (issue 16, item 9), on every store.

``enum.StrEnum`` members, ``markupsafe.Markup`` and numpy's ``str_`` are ``str`` subclasses that
callers pass without thinking; the event encoders know only ``str``. Every public method's
every text argument (found by introspection, so a method added later is covered too), and every
string inside a mapping argument (keys and values, at any depth), given as an instance of a
subclass, must give exactly what the plain string gives: the same result or the same error, the
same rows, and plain strings in whatever comes back.
"""

from __future__ import annotations

import collections.abc as abc
import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idstitch
from idstitch.errors import IdstitchError
from idstitch.testing import recorded_events
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


class Sub(str):
    """The plainest subclass."""


class Markupish(str):
    """Like markupsafe.Markup: methods that return its own class, and an ``__html__``; and,
    hostile, a ``__str__`` that lies: what is recorded must be the characters."""

    def __html__(self) -> str:
        return self

    def __getitem__(self, key: Any) -> Markupish:
        return Markupish(str.__getitem__(self, key))

    def strip(self, chars: str | None = None) -> Markupish:
        return Markupish(str.strip(self, chars))

    def __str__(self) -> str:
        return "not what was sent"


def as_enum(value: str) -> str:
    """A StrEnum member with this value."""
    return typing.cast(str, enum.StrEnum("Choice", {"MEMBER": value}).MEMBER)  # type: ignore[misc]


SUBCLASSES: list[Callable[[str], str]] = [Sub, Markupish, as_enum]


def wrap(value: object, make: Callable[[str], str]) -> object:
    """``value`` with every string in it (dict keys too, at any depth) made by ``make``."""
    if isinstance(value, str):
        return make(value)
    if isinstance(value, dict):
        return {wrap(k, make): wrap(v, make) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(wrap(v, make) for v in value)
    return value


def all_plain(value: object) -> bool:
    """Whether every string in a result (a Struct, a dict, a list...) is exactly a str."""
    if isinstance(value, str):
        return type(value) is str
    if isinstance(value, msgspec.Struct):
        return all(all_plain(getattr(value, f)) for f in value.__struct_fields__)
    if isinstance(value, Mapping):
        return all(all_plain(k) and all_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(all_plain(v) for v in value)
    return True


def mentions(hint: Any, wanted: tuple[object, ...]) -> bool:
    if hint in wanted:
        return True
    origin = typing.get_origin(hint)
    if origin in wanted:
        return True
    if origin is typing.Literal:
        return any(isinstance(a, str) for a in typing.get_args(hint))
    return any(mentions(a, wanted) for a in typing.get_args(hint))


WORDS = ["d1", "d2", "u1", "u2", "a@b.co", "tok-1", "tok-2", "ios", "android", "sent",
         "bounced", "deleted", "plan", "identity", "device_attributes", "m1", "m2", " ", "",
         "null", "x" * 151, "é" * 80]
"""Values that mean something to some parameter (ids, tokens, statuses, projection names) and
some each refuses: the subclass must change neither outcome."""
text = st.sampled_from(WORDS) | st.text(max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8)


messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["identify", "track"]), "anonymousId": text, "userId": text,
     "messageId": text, "event": st.sampled_from(["Device Created or Updated", "Added"]),
     "traits": st.dictionaries(text, json_values, max_size=3),
     "properties": st.dictionaries(text, json_values, max_size=3),
     "context": st.fixed_dictionaries({"device": st.fixed_dictionaries(
         {"id": text, "token": text, "type": text})})})


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of a text-bearing annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return st.one_of([strategy(a) for a in args if a is not type(None)
                          and mentions(a, (str, dict, abc.Mapping))])
    if origin is typing.Literal:
        return st.sampled_from([a for a in args if isinstance(a, str)])
    if hint is str:
        return text
    if origin in (list, abc.Sequence):
        return st.lists(text, max_size=3)
    if origin in (dict, abc.Mapping) or hint in (dict, abc.Mapping):
        return st.dictionaries(text, json_values, max_size=4)
    if origin is abc.Iterable:  # ingest's messages
        return st.lists(messages, max_size=3)
    raise AssertionError(f"no strategy for {hint!r}: teach this test")


BASELINE = {str: "d1", int: 1, datetime: datetime(2026, 1, 1, tzinfo=UTC), dict: {},
            abc.Iterable: []}


def baseline(hint: Any) -> object:
    """A valid value for a required parameter (a union: its first alternative with one);
    NO_BASELINE for a parameter that holds no text (e.g. a projection class)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return next((baseline(a) for a in typing.get_args(hint)
                     if (typing.get_origin(a) or a) in BASELINE), NO_BASELINE)
    return BASELINE.get(typing.get_origin(hint) or hint, NO_BASELINE)


NO_BASELINE = object()


class Target(typing.NamedTuple):
    method: str
    param: str
    hint: Any
    required: dict[str, Any]
    keyword: frozenset[str] = frozenset()
    """The method's keyword-only parameters (passed by name)."""


def targets() -> list[Target]:
    """Every parameter of every public Workspace method that holds text, its rooms' (its base
    classes, idstitch.rooms) included."""
    found = []
    for name in dir(Workspace):
        member = inspect.getattr_static(Workspace, name)
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        hints = typing.get_type_hints(member, localns={"Workspace": Workspace})
        params = list(inspect.signature(member).parameters.values())[1:]
        required = {p.name: baseline(hints[p.name]) for p in params if p.default is p.empty}
        keyword = frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY)
        texts = [Target(name, p.name, hints[p.name], required, keyword) for p in params
                 if mentions(hints[p.name], (str, dict, abc.Mapping))]
        # A method whose text parameters need a value this test cannot make: teach it one.
        assert not texts or NO_BASELINE not in required.values(), (name, required)
        found += texts
    return found


TARGETS = targets()


def test_every_text_argument_is_covered() -> None:
    covered = {(t.method, t.param) for t in TARGETS}
    assert {("identify", "device_id"), ("identify", "user_id"), ("identify", "traits"),
            ("set_profile_attributes", "unset"), ("register_device_token", "platform"),
            ("remove_device_token", "reason"), ("record_push_status", "status"),
            ("rebuild", "names"), ("explain", "attribute"), ("activate", "sdk"),
            ("merge_persons", "primary"), ("forget", "reason")} <= covered


def outcome(ws: Workspace, target: Target, value: object) -> tuple[str, object]:
    method = getattr(ws, target.method)
    values = dict(target.required) | {target.param: value}
    # Required positional arguments positionally; keyword-only ones and an optional one fed
    # by name.
    args = [values.pop(k) for k in target.required if k not in target.keyword]
    try:
        result = method(*args, **values)
    except IdstitchError as e:
        return "error", (type(e), getattr(e, "field", None), str(e))
    assert all_plain(result), (target, result)
    return "result", result


def seed(ws: Workspace) -> None:
    if ws.log.head() == 0:
        ws.identify("d1", "u1", {"plan": "free"}, message_id="seed-1")
        ws.register_device_token("d1", "tok-1", message_id="seed-2")


@pytest.fixture
def pair(make_ws: WorkspaceFactory) -> tuple[Workspace, Workspace]:
    """Two workspaces on fresh stores of the same kind, shared by a test's examples."""
    return make_ws(), make_ws()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(target=st.sampled_from(TARGETS), make=st.sampled_from(SUBCLASSES), data=st.data())
def test_a_str_subclass_anywhere_gives_what_the_plain_string_gives(
    pair: tuple[Workspace, Workspace], target: Target, make: Callable[[str], str],
    data: st.DataObject,
) -> None:
    # The two stores get the same calls, one with plain strings, one with the subclass's:
    # they stay equal example after example.
    plain_ws, sub_ws = pair
    seed(plain_ws)
    seed(sub_ws)
    value = data.draw(strategy(target.hint), label=f"{target.method}({target.param})")
    expected = outcome(plain_ws, target, value)
    got = outcome(sub_ws, target, wrap(value, make))
    assert got == expected
    assert sub_ws.log.head() == plain_ws.log.head()
    assert sub_ws.dump() == plain_ws.dump()
    assert recorded_events(sub_ws) == recorded_events(plain_ws)
    for query in (sub_ws.profile("u1"), sub_ws.device("d1"), sub_ws.history("u1")):
        assert all_plain(query)


def test_str_subclasses_in_messages_and_in_open(make_ws: WorkspaceFactory) -> None:
    plain_ws, sub_ws = make_ws(), make_ws()
    message = {"type": "identify", "anonymousId": "d1", "userId": "u1", "messageId": "m1",
               "traits": {"plan": "pro", "nested": {"k": ["v"]}},
               "context": {"device": {"id": "d1", "token": "tok-1", "type": "ios"}}}
    line = msgspec.json.encode({**message, "messageId": "m2", "anonymousId": "d2"}).decode()
    expected = plain_ws.ingest([message, line])
    reports = [sub_ws.ingest([wrap(message, make), make(line)]) for make in SUBCLASSES]
    assert expected.accepted == 2
    assert reports[0] == expected
    # The same message ids again, whatever the class of their text: duplicates.
    assert all(r.duplicates == 2 and not r.rejected for r in reports[1:])
    assert sub_ws.dump() == plain_ws.dump()
    # idstitch.open's text: the URL and the policy.
    reopened = idstitch.open(Markupish(sub_ws.url), anonymous_merge=Sub("merge"))
    try:
        assert type(reopened.url) is str and reopened.url == sub_ws.url
        assert type(reopened.anonymous_merge) is str
        if sub_ws.url != "memory:":  # (memory: opens a store of its own)
            assert reopened.profile(Sub("u1")) == plain_ws.profile("u1")
    finally:
        reopened.close()


def test_a_subclass_key_that_is_a_duplicate_of_a_plain_one_is_one_key(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"plan": "free"})
    ws.set_profile_attributes("d1", {Sub("plan"): Markupish("pro")}, unset=[Sub("gone")])
    profile = ws.profile("u1")
    assert profile is not None and profile.attributes == {"plan": "pro"}
    assert all(type(k) is str and type(v) is str for k, v in profile.attributes.items())


@pytest.mark.parametrize("make", SUBCLASSES, ids=["Sub", "Markupish", "StrEnum"])
def test_every_command_takes_subclass_text(ws: Workspace, make: Callable[[str], str]) -> None:
    ws.activate(make("d1"), customer_user_id=make("u1"), platform=make("ios"),
                sdk={make("name"): make("cio")}, message_id=make("m0"))
    ws.identify(make("d1"), make("u1"), {make("a"): {make("b"): [make("c")]}},
                message_id=make("m1"))
    ws.set_profile_attributes(make("d1"), {make("x"): make("y")}, set_once={make("o"): 1},
                              unset=(make("a"),), message_id=make("m2"))
    ws.set_device_attributes(make("d1"), {make("k"): make("v")})
    ws.collect_device_attributes(make("d1"), {make("device_os"): make("17")})
    ws.register_device_token(make("d1"), make("tok"), platform=make("ios"))
    ws.record_push_status(make("d1"), make("sent"))
    ws.remove_device_token(make("d1"), make("tok"), reason=make("bounced"))
    ws.clear_identify(make("d1"))
    ws.identify(make("d1"), make("u1"))
    ws.logout(make("d1"))
    ws.rebuild(names=[make("identity")], parallel=False)
    assert ws.explain(make("u1"), make("x")) is not None
    for position, event in recorded_events(ws):
        assert all_plain(event), (position, event)
    profile = ws.profile(make("u1"))
    assert profile is not None and profile.attributes["x"] == "y"
    assert all_plain(profile) and all_plain(ws.device(make("d1")))
