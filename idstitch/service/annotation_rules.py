"""The rules of the argument boundary (:mod:`idstitch.service.arguments`): what each parameter
annotation of the public surface admits, as one small check per annotation (the list is in that
module's docstring). A rule judges one argument and returns the value to pass on: the argument
itself, or its plain form (a ``str`` subclass's string); a wrong one is an ``InvalidCommand``
naming the argument.
"""

from __future__ import annotations

import collections.abc as abc
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from idstitch.domain.errors import InvalidCommand
from idstitch.domain.rules import plain_str

Check = Callable[[str, object], object]
"""Judges one argument: returns the value to pass on (the argument itself, or its plain form:
a ``str`` subclass's string), or raises InvalidCommand naming the field."""

_brief = reprlib.Repr()
_brief.maxlevel, _brief.maxstring, _brief.maxother = 2, 40, 40
"""A short picture of a bad value: plain ``repr`` of a value nested thousands deep raises
RecursionError, and of a megabyte string makes a megabyte message."""

_NOT_A_STREAM = (str, bytes, bytearray, memoryview, Mapping)


class _Rule(NamedTuple):
    what: str
    """What the argument must be, for the message: ``a string``, ``an int``..."""
    kinds: tuple[type, ...]
    """The Python types the rule is about: when every alternative of a union refuses a value,
    the one whose kind the value is gives the reason (a naive datetime: "must be aware")."""
    check: Check


def _got(value: object) -> str:
    return type(value).__name__


def _not_text(field: str, value: object) -> str:
    """The slow path of :func:`_text`: say why ``value`` is not text, or accept it (as a plain
    ``str``)."""
    if not isinstance(value, str):
        raise InvalidCommand(field, f"must be a string, got {_got(value)}")
    value = plain_str(value)  # judged by its characters, not by what its class overrides
    if "\x00" in value:
        raise InvalidCommand(field, "contains a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError as e:
        raise InvalidCommand(
            field, f"is not valid text: a lone surrogate at index {e.start}") from None
    return plain_str(value)


def _text(field: str, value: object) -> object:
    # ASCII without NUL, settled in two C calls: nearly every id, token and name.
    if type(value) is str and value.isascii() and "\x00" not in value:
        return value
    return _not_text(field, value)


def _int(field: str, value: object) -> object:
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise InvalidCommand(field, f"must be an int, got {_got(value)}")


def _bool(field: str, value: object) -> object:
    if value is True or value is False:
        return value
    raise InvalidCommand(field, f"must be True or False, got {_got(value)}")


def _aware(field: str, value: object) -> object:
    if type(value) is datetime and value.tzinfo is UTC:
        return value
    if not isinstance(value, datetime):
        raise InvalidCommand(field, f"must be a datetime, got {_got(value)}")
    try:
        offset = value.utcoffset()
    except Exception as e:  # a caller's tzinfo may raise anything: it is still bad input
        raise InvalidCommand(field, f"has no valid UTC offset: {e}") from e
    if offset is None:
        raise InvalidCommand(field, "must be timezone-aware")
    return value


def _mapping(field: str, value: object) -> object:
    if type(value) is dict or isinstance(value, Mapping):
        return value
    raise InvalidCommand(field, f"must be a mapping (a dict), got {_got(value)}")


def _callable(field: str, value: object) -> object:
    if not callable(value):
        raise InvalidCommand(field, f"must be callable, got {_got(value)}")
    return value


def _stream(field: str, value: object) -> object:
    if isinstance(value, Iterable) and not isinstance(value, _NOT_A_STREAM):
        return value
    raise InvalidCommand(field, f"must be an iterable (a list, a file, a generator), got {_got(value)}")


def anything(field: str, value: object) -> object:
    return value


def _collection(what: str, kinds: tuple[type, ...], excluded: tuple[type, ...], item: _Rule) -> _Rule:
    check_item = item.check

    def check(field: str, value: object) -> object:
        if not isinstance(value, kinds) or isinstance(value, excluded):
            raise InvalidCommand(field, f"must be {what}, got {_got(value)}")
        given = list(typing.cast(Iterable[object], value))
        passed = [check_item(f"{field}[{i}]", element) for i, element in enumerate(given)]
        if all(a is b for a, b in zip(passed, given, strict=True)):
            return value
        # Some item was passed on in its plain form: a collection of the same kind holds them.
        if isinstance(value, frozenset):
            return frozenset(passed)
        if isinstance(value, set):
            return set(passed)
        return tuple(passed) if isinstance(value, tuple) else passed

    return _Rule(what, kinds, check)


def _optional(rule: _Rule) -> _Rule:
    inner = rule.check

    def check(field: str, value: object) -> object:
        return None if value is None else inner(field, value)

    return _Rule(f"{rule.what} or None", (*rule.kinds, type(None)), check)


def _union(rules: list[_Rule]) -> _Rule:
    what = " or ".join(r.what for r in rules)

    def check(field: str, value: object) -> object:
        for rule in rules:
            try:
                return rule.check(field, value)
            except InvalidCommand:
                continue
        own = [r for r in rules if isinstance(value, r.kinds)]
        if len(own) == 1:
            own[0].check(field, value)  # a value of one alternative's kind: that one's reason
        raise InvalidCommand(field, f"must be {what}, got {_got(value)}")

    return _Rule(what, tuple(k for r in rules for k in r.kinds), check)


def _literal(values: tuple[object, ...]) -> _Rule:
    what = "one of " + ", ".join(map(repr, values))

    def check(field: str, value: object) -> object:
        if isinstance(value, str):
            value = plain_str(value)
        # By type as well as value: 1 == True, yet True is no Literal[1].
        if not any(type(value) is type(v) and value == v for v in values):
            raise InvalidCommand(field, f"must be {what}, got {_brief.repr(value)}")
        return value

    return _Rule(what, tuple({type(v) for v in values}), check)


def _subclass(base: type) -> _Rule:
    what = f"{base.__name__} or a subclass of it"

    def check(field: str, value: object) -> object:
        if not (isinstance(value, type) and issubclass(value, base)):
            raise InvalidCommand(field, f"must be {what}, got {_brief.repr(value)}")
        return value

    return _Rule(what, (type,), check)


def _instance(cls: type) -> _Rule:
    what = f"a {cls.__name__}"

    def check(field: str, value: object) -> object:
        if not isinstance(value, cls):
            raise InvalidCommand(field, f"must be {what}, got {_got(value)}")
        return value

    return _Rule(what, (cls,), check)


_SIMPLE: dict[object, _Rule] = {
    str: _Rule("a string", (str,), _text),
    int: _Rule("an int", (int,), _int),
    bool: _Rule("True or False", (bool,), _bool),
    datetime: _Rule("an aware datetime", (datetime,), _aware),
    dict: _Rule("a mapping", (Mapping,), _mapping),
    abc.Mapping: _Rule("a mapping", (Mapping,), _mapping),
    abc.Iterable: _Rule("an iterable", (Iterable,), _stream),
    abc.Callable: _Rule("callable", (), _callable),
}


def rule_for(annotation: object, where: str) -> _Rule | None:
    """The rule of one (resolved) annotation; None for ``Any`` (no check). ``where`` names the
    parameter for the TypeError that an annotation the boundary cannot judge raises."""
    if annotation is Any or annotation is object:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        others = [a for a in args if a is not type(None)]
        rules = [rule_for(a, where) for a in others]
        if any(r is None for r in rules):
            return None  # Any | ...: anything
        rule = rules[0] if len(rules) == 1 else _union([r for r in rules if r is not None])
        assert rule is not None
        return _optional(rule) if len(others) < len(args) else rule
    if origin is typing.Literal:
        return _literal(args)
    base = annotation if origin is None else origin
    simple = _SIMPLE.get(base)
    if simple is not None:
        return simple
    if base in (list, abc.Sequence):
        item = (rule_for(args[0], where) if args else None) or _Rule("a value", (object,), anything)
        items = item.what.removeprefix("a ").removeprefix("an ") + "s"
        if base is list:
            return _collection(f"a list of {items}", (list, tuple, set, frozenset), (), item)
        return _collection(f"a list or tuple of {items}", (abc.Sequence,),
                           (str, bytes, bytearray, memoryview), item)
    if origin is type and args and isinstance(args[0], type):
        return _subclass(args[0])
    if origin is None and isinstance(annotation, type):
        if getattr(annotation, "_is_protocol", False) and not getattr(
                annotation, "_is_runtime_protocol", False):
            # isinstance() against it would raise TypeError at call time: judge nothing silently.
            raise TypeError(f"{where}: the argument boundary cannot check the protocol "
                            f"{annotation.__name__}; make it @runtime_checkable")
        return _instance(annotation)
    raise TypeError(f"{where}: the argument boundary cannot check {annotation!r}; "
                    "teach idstitch.service.annotation_rules.rule_for this annotation")


__all__ = ["Check", "anything", "rule_for"]
