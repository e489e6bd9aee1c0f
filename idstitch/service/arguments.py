"""The public surface's one argument boundary: types are judged here, or where a command enters.

:func:`checked_methods` wraps every public method and property setter of a class (the
Workspace's rooms), :func:`checked` one function (``idstitch.open``), once, at import: each
parameter's annotation becomes one small check, run on the arguments a call was given
(defaults are trusted) before the body: a wrong type is an ``InvalidCommand`` naming the
argument, before anything is read or recorded, on every store alike. The queries keep the
checks that need meaning (lengths, limits).

A method marked :func:`entering` is not wrapped: its arguments become a command, and the
command's check (:mod:`idstitch.service.checks`, where the command enters the service) judges
each field once, type and meaning together, naming the same argument. Every command method of
the Workspace is one: its arguments are judged once, not here and again in the rules.

What each annotation admits:

- ``str``: text every store can hold: a string without NUL and without lone surrogates (so it
  encodes to UTF-8; PostgreSQL refuses both, and one store must not accept what another refuses).
  An instance of a ``str`` subclass (an ``enum.StrEnum`` member, ``markupsafe.Markup``, numpy's
  ``str_``) is passed on as its plain string value: the encoders of the stored events know only
  ``str``, and what is recorded must not depend on the caller's class
- ``int``: an int that is not a bool; ``bool``: True or False
- ``datetime``: a timezone-aware datetime
- ``dict[...]``, ``Mapping[...]``: any mapping (what it holds is the rules' business)
- ``list[str]``: a list, tuple or set of such text; ``Sequence[str]``: a list or tuple of it
- ``Iterable[...]``: any iterable but a string, bytes or a mapping (one message is not a stream)
- ``Callable[...]``: anything callable
- ``Literal[...]``: one of its values (a ``str`` subclass equal to a string value passes, as
  that plain value); ``X | None``: None or an X; ``A | B``: either
- ``type[X]``: X or a subclass of it; any other class: an instance of it; ``Any``: anything

An annotation the boundary cannot judge, or a parameter without one, is a ``TypeError`` when the
class is defined, that is when ``idstitch`` is imported: a public method cannot ship unchecked.

Cost: one generic wrapper, a Python call per argument given: about 1 us for ``profile``'s one
argument against a call of 170 us (p50, SQLite, benchmarks/bench_latency.py); a wrapper
generated per signature was not worth the generated code at that share.
"""

from __future__ import annotations

import collections.abc as abc
import functools
import inspect
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from idstitch.domain.errors import InvalidCommand
from idstitch.domain.rules import plain_str

Check = Callable[[str, object], object]
"""Judges one argument: returns the value to pass on (the argument itself, or its plain form:
a ``str`` subclass's string), or raises InvalidCommand naming the field."""

MARK = "__idstitch_checked__"
"""Set on every function the boundary guards (the wrapper, or a method with nothing to check,
or one whose arguments are checked where its command enters)."""

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

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


def _anything(field: str, value: object) -> object:
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
        item = (rule_for(args[0], where) if args else None) or _Rule("a value", (object,), _anything)
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
                    "teach idstitch.service.arguments.rule_for this annotation")


def _rules(func: Callable[..., Any], localns: dict[str, Any] | None, skip_first: bool,
           field: str | None) -> tuple[tuple[tuple[str, Check], ...], dict[str, Check]]:
    """Each parameter's (name, check) in positional order, and by name for keywords.
    ``field``: the name errors give the one parameter (a property setter's: the property)."""
    where = func.__qualname__
    hints = typing.get_type_hints(func, localns=localns)
    params = list(inspect.signature(func).parameters.values())
    if skip_first:
        params = params[1:]
    positional: list[tuple[str, Check]] = []
    keyword: dict[str, Check] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{where}({p.name}): the argument boundary takes no *args or **kwargs")
        if p.name not in hints:
            raise TypeError(f"{where}({p.name}): a public parameter needs an annotation, "
                            "the argument boundary checks by it")
        rule = rule_for(hints[p.name], f"{where}({p.name})")
        check = _anything if rule is None else rule.check
        if p.kind is not p.KEYWORD_ONLY:
            positional.append((field or p.name, check))
        if p.kind is not p.POSITIONAL_ONLY:
            keyword[p.name] = check
    return tuple(positional), keyword


def _guard(func: F, localns: dict[str, Any] | None, *, method: bool, field: str | None = None) -> F:
    positional, keyword = _rules(func, localns, method, field)
    if not keyword and not positional:
        setattr(func, MARK, True)  # nothing to check: no wrapper, no cost
        return func

    # Two loops over what was given: a default is never checked, an unknown keyword, a missing
    # or an extra argument is left to Python's own TypeError when the function is called. An
    # argument a check passes on in another form (a str subclass's plain string) replaces the
    # one given; the arguments are copied only then.
    first = 1 if method else 0  # a method's own instance is not checked

    def guarded(*args: object, **kwargs: object) -> Any:
        plain: list[object] | None = None
        for i, ((name, check), value) in enumerate(zip(positional, args[first:], strict=False)):
            passed = check(name, value)
            if passed is not value:
                if plain is None:
                    plain = list(args)
                plain[first + i] = passed
        for name, value in kwargs.items():
            by_name = keyword.get(name)
            if by_name is not None:
                passed = by_name(name, value)
                if passed is not value:
                    kwargs[name] = passed  # the same key: the dict's size does not change
        return func(*args, **kwargs) if plain is None else func(*plain, **kwargs)

    functools.update_wrapper(guarded, func)
    setattr(guarded, MARK, True)
    return guarded  # type: ignore[return-value]


def checked(func: F) -> F:
    """Guard a public function's arguments (``idstitch.open``)."""
    return _guard(func, None, method=False)


def entering(func: F) -> F:
    """Mark a public method whose arguments all become a command, checked where it enters the
    service (:func:`idstitch.service.checks.check`, or the first thing the method does): the
    boundary leaves them to that check, which names each argument as the boundary would, so
    that a field is judged once. Counts as guarded for :func:`is_checked`."""
    setattr(func, MARK, True)
    return func


def checked_methods(cls: C) -> C:
    """Guard every public method and property setter of a class, as it is defined.

    Public: a name without a leading underscore. A method written into the class body later is
    guarded with the rest, with nothing to add; one whose parameters the boundary cannot judge
    fails the import. The class's own body only: each room of the Workspace is decorated
    itself. (A method assigned later, or an undecorated room, escapes: a test that lists every
    public member of the Workspace catches that.)"""
    localns = {cls.__name__: cls}
    for name, member in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            if member.fset is not None:
                setter = _guard(member.fset, localns, method=True, field=name)
                setattr(cls, name, member.setter(setter))
        elif isinstance(member, staticmethod):
            setattr(cls, name, staticmethod(_guard(member.__func__, localns, method=False)))
        elif isinstance(member, classmethod):
            setattr(cls, name, classmethod(_guard(member.__func__, localns, method=True)))
        elif inspect.isfunction(member) and not is_checked(member):  # not @entering
            setattr(cls, name, _guard(member, localns, method=True))
    return cls


def is_checked(member: object) -> bool:
    """Whether a function (or a property's setter) went through the boundary."""
    if isinstance(member, property):
        return member.fset is None or is_checked(member.fset)
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    return bool(getattr(member, MARK, False))


__all__ = ["checked", "checked_methods", "entering", "is_checked", "rule_for"]
