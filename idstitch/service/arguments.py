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

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from idstitch.service.annotation_rules import Check, anything, rule_for

MARK = "__idstitch_checked__"
"""Set on every function the boundary guards (the wrapper, or a method with nothing to check,
or one whose arguments are checked where its command enters)."""

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


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
        check = anything if rule is None else rule.check
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
