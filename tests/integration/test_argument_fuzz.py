"""Issue 9, item 4, as a property: every public method of the Workspace, found by introspection
(so a method added later is fuzzed too), and ``idstitch.open``, fed values of the wrong types in
each argument, on memory, SQLite and PostgreSQL, raise only InvalidCommand naming that argument
and leave the store as it was; fed any values at all, the methods raise only IdstitchError, and
a refused call leaves the store as it was.

``fits`` restates what each annotation admits (docs/reference/api.md, "Arguments") on its own,
without the boundary's code: a value it calls a wrong type must be refused.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idstitch
from idstitch.errors import IdstitchError, InvalidCommand
from idstitch.testing_projections import NoEvents
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]

SKIPPED = {"close"}
"""Public methods left out: ``close`` ends the workspace the next examples use (it takes no
arguments, so there is nothing to feed it)."""


def _is_text(value: object) -> bool:
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def fits(value: object, hint: Any) -> bool:
    """Whether ``value`` is of the type ``hint`` names, as the reference says."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (types.UnionType, typing.Union):
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    base = origin or hint
    if base is str:
        return _is_text(value)
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is datetime:
        return isinstance(value, datetime) and value.utcoffset() is not None
    if base in (dict, abc.Mapping):
        return isinstance(value, Mapping)
    if base is list:
        return (isinstance(value, (list, tuple, set, frozenset))
                and all(fits(v, args[0]) for v in value))
    if base is abc.Sequence:
        return (isinstance(value, (list, tuple))
                and all(fits(v, args[0]) for v in value))
    if base is abc.Iterable:
        return isinstance(value, Iterable) and not isinstance(value, (str, bytes, bytearray, Mapping))
    if base is abc.Callable:
        return callable(value)
    if base is type:
        return isinstance(value, type) and issubclass(value, args[0])
    if isinstance(base, type):
        return isinstance(value, base)
    raise AssertionError(f"the fuzz test does not know {hint!r}: teach `fits` and `BASELINE`")


BASELINE: dict[object, object] = {str: "fuzz-1", int: 1, datetime: datetime(2026, 1, 1, tzinfo=UTC),
                                  dict: {}, abc.Iterable: [], type: NoEvents}
"""A value of the right type for each required parameter's annotation (by its origin; a union
by its first alternative that has one). A new kind of required parameter needs one here."""


def baseline(method: str, param: str, hint: Any) -> object:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for alternative in typing.get_args(hint):
            if (typing.get_origin(alternative) or alternative) in BASELINE:
                return baseline(method, param, alternative)
    key = origin or hint
    assert key in BASELINE, f"no baseline for {method}({param}: {hint}): add one to BASELINE"
    return BASELINE[key]


class Target(typing.NamedTuple):
    """One argument of one public method (or property setter)."""

    method: str
    param: str
    hint: Any
    required: list[tuple[str, Any]]
    """The method's required parameters and their baseline values, in order."""
    setter: bool = False
    keyword: frozenset[str] = frozenset()
    """The method's keyword-only parameters (a required one is passed by name)."""


def targets() -> list[Target]:
    """Every argument of every public method and property setter of the Workspace, those of
    its rooms (its base classes, idstitch.rooms) included."""
    found: list[Target] = []
    for name in dir(Workspace):
        if name.startswith("_") or name in SKIPPED:
            continue
        member = inspect.getattr_static(Workspace, name)
        if isinstance(member, property):
            if member.fset is not None:
                hints = typing.get_type_hints(member.fset)
                found.append(Target(name, name, hints["value"], [], setter=True))
            continue
        hints = typing.get_type_hints(member, localns={"Workspace": Workspace})
        params = list(inspect.signature(member).parameters.values())[1:]
        required = []
        for p in params:
            if p.default is p.empty:
                required.append((p.name, baseline(name, p.name, hints[p.name])))
        keyword = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        found += [Target(name, p.name, hints[p.name], required, keyword=frozenset(keyword))
                  for p in params]
    return found


TARGETS = targets()
OPEN_TARGETS = [Target("open", name, hint, [])
                for name, hint in typing.get_type_hints(idstitch.open).items() if name != "return"]
"""``idstitch.open``'s arguments: fed wrong types only (any text as a url opens some store)."""

hostile_text = st.sampled_from(["\ud800", "a\udfffb", "\x00", "id\x00", "\udc80" * 3])
any_text = st.text(st.characters(exclude_categories=()), max_size=6) | hostile_text
safe_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6)
objects = st.sampled_from([object(), Exception("x"), type, int, b"x", bytearray(b"x"), 1j,
                           frozenset(), range(2), NotImplemented, Ellipsis])
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=6)
           | any_text | objects
           | st.datetimes()  # naive
           | st.datetimes(timezones=st.just(UTC))
           | st.builds(lambda moment, offset: moment.replace(tzinfo=timezone(offset)),
                       st.datetimes(),  # any year: the far ends overflow in UTC
                       st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))))
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner, inner)
                   | st.dictionaries(safe_text, inner, max_size=3)),
    max_leaves=6,
)
"""Anything: None, bools, ints, floats, bytes, text with lone surrogates and NUL, objects,
naive and aware datetimes, and lists, tuples and dicts of them."""


def call(ws: Workspace, target: Target, value: object) -> object:
    """The method with its baseline arguments and ``value`` in ``target.param``."""
    if target.setter:
        setattr(ws, target.method, value)
        return None
    if target.method == "open":
        opened = idstitch.open(**{"url": "memory:", target.param: value})
        opened.close()
        return opened
    method = getattr(ws, target.method)
    values = dict(target.required) | {target.param: value}
    # Required positional arguments positionally, as callers do; the rest (keyword-only ones,
    # an optional one fed) by name.
    args = [values.pop(k) for k, _ in target.required if k not in target.keyword]
    return method(*args, **values)


def seed(ws: Workspace) -> None:
    """Something for the queries to find (once per workspace)."""
    if ws.log.head() == 0:
        ws.identify("fuzz-1", "fuzz-1", {"plan": "free"}, message_id="fuzz-seed-1")
        ws.register_device_token("fuzz-1", "tok-1", message_id="fuzz-seed-2")


def restore(ws: Workspace) -> None:
    ws.retries = 5
    ws.auto_catch_up = True


def test_every_argument_of_every_public_method_is_fuzzed() -> None:
    methods = {t.method for t in TARGETS}
    assert {"identify", "profile", "merges", "device", "ingest", "rebuild", "retries"} <= methods
    # One of each room's (idstitch.rooms) besides: the rooms are base classes of the Workspace.
    assert {"merge_persons", "forget", "wait_for", "auto_catch_up", "explain", "verify"} <= methods
    assert {t.param for t in OPEN_TARGETS} == {"url", "anonymous_merge", "clock", "auto_catch_up",
                                              "projections"}
    assert ("set_profile_attributes", "unset") in {(t.method, t.param) for t in TARGETS}


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_wrong_type_in_any_argument_is_refused_naming_it_and_changes_nothing(
    ws: Workspace, data: st.DataObject
) -> None:
    seed(ws)
    head, before = ws.log.head(), ws.dump()
    # Each example feeds every argument of every method (and of open) once.
    for target in TARGETS + OPEN_TARGETS:
        value = data.draw(values.filter(lambda v, hint=target.hint: not fits(v, hint)),
                          label=f"{target.method}({target.param})")
        with pytest.raises(InvalidCommand) as caught:
            call(ws, target, value)
        field = caught.value.field
        assert field == target.param or field.startswith(f"{target.param}["), (target, field)
        assert ws.log.head() == head, target
    restore(ws)
    assert ws.dump() == before


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(target=st.sampled_from(TARGETS), data=st.data())
def test_any_value_in_any_argument_raises_only_idstitch_errors_and_a_refusal_changes_nothing(
    ws: Workspace, target: Target, data: st.DataObject
) -> None:
    seed(ws)
    # parallel=True would start a projecting child for a two-line store: slow, and fed wrong
    # types by the test above.
    strategy = values.filter(lambda v: v is not True) if target.param == "parallel" else values
    value = data.draw(strategy, label=f"{target.method}({target.param})")
    head, before = ws.log.head(), ws.dump()
    try:
        call(ws, target, value)
    except IdstitchError:
        restore(ws)
        assert ws.log.head() == head
        assert ws.dump() == before
    finally:
        restore(ws)
