"""The argument boundary on its own: what each annotation admits, and how a class is guarded."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Literal, Protocol, runtime_checkable

import pytest

from idstitch.errors import InvalidCommand
from idstitch.service.arguments import checked, checked_methods, is_checked

AWARE = datetime(2026, 1, 1, tzinfo=UTC)


class BrokenZone(tzinfo):
    """A caller's tzinfo whose offset is no offset."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset today")


@checked_methods
class Sample:
    """Every kind of annotation the Workspace uses, one parameter each."""

    def text(self, value: str) -> None: ...
    def optional_text(self, value: str | None = None) -> None: ...
    def number(self, value: int) -> None: ...
    def flag(self, value: bool) -> None: ...
    def moment(self, value: datetime | None = None) -> None: ...
    def mapping(self, value: dict[str, Any] | None = None) -> None: ...
    def any_mapping(self, value: Mapping[str, Any]) -> None: ...
    def names(self, value: list[str] | None = None) -> None: ...
    def sequence(self, value: Sequence[str] | None = None) -> None: ...
    def stream(self, value: Iterable[dict[str, Any] | str | bytes]) -> None: ...
    def callback(self, value: Callable[[int], None] | None = None) -> None: ...
    def policy(self, value: Literal["merge", "switch"] | None = None) -> None: ...
    def at(self, value: int | datetime) -> None: ...
    def kind(self, value: type[Exception]) -> None: ...
    def anything(self, value: Any) -> None: ...

    def several(self, a: str, b: int = 1, *, c: str | None = None) -> tuple[str, int, str | None]:
        return a, b, c

    @property
    def size(self) -> int:
        return 0

    @size.setter
    def size(self, value: int) -> None:
        pass

    def _private(self, value: str) -> str:
        return value


ACCEPTED: list[tuple[str, object]] = [
    ("text", "device-1"), ("text", "Zoë ✓"), ("text", ""), ("optional_text", None),
    ("number", 0), ("number", -3), ("flag", True), ("flag", False),
    ("moment", None), ("moment", AWARE),
    ("moment", datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
    ("mapping", None), ("mapping", {}), ("mapping", {"a": object()}), ("any_mapping", {"a": 1}),
    ("names", None), ("names", ["a"]), ("names", ("a", "b")), ("names", {"a"}), ("names", []),
    ("sequence", ["a"]), ("sequence", ("a",)),
    ("stream", []), ("stream", iter([1])), ("stream", (m for m in [])),
    ("callback", None), ("callback", print), ("callback", lambda n: None),
    ("policy", "merge"), ("policy", None),
    ("at", 5), ("at", AWARE), ("kind", ValueError), ("kind", Exception),
    ("anything", object()), ("anything", None),
]

REFUSED: list[tuple[str, object, str]] = [
    ("text", None, "must be a string, got NoneType"),
    ("text", 1, "must be a string, got int"),
    ("text", b"x", "must be a string, got bytes"),
    ("text", ["a"], "must be a string, got list"),
    ("text", "\ud800", "lone surrogate at index 0"),
    ("text", "ok\udfffok", "lone surrogate at index 2"),
    ("text", "a\x00b", "NUL"),
    ("optional_text", 3.5, "must be a string, got float"),
    ("number", True, "must be an int, got bool"),
    ("number", "10", "must be an int, got str"),
    ("number", 10.0, "must be an int, got float"),
    ("flag", 1, "must be True or False, got int"),
    ("flag", None, "must be True or False, got NoneType"),
    ("moment", datetime(2026, 1, 1), "timezone-aware"),
    ("moment", datetime(2026, 1, 1, tzinfo=BrokenZone()), "no valid UTC offset"),
    ("moment", "2026-01-01T00:00:00Z", "must be a datetime, got str"),
    ("moment", 1767225600, "must be a datetime, got int"),
    ("mapping", [("a", 1)], "must be a mapping (a dict), got list"),
    ("mapping", "a=1", "must be a mapping (a dict), got str"),
    ("names", "plan", "must be a list of strings, got str"),
    ("names", {"plan": 1}, "must be a list of strings, got dict"),
    ("names", [1], "must be a string, got int"),
    ("names", ["ok", "\ud800"], "lone surrogate"),
    ("sequence", "identity", "must be a list or tuple of strings, got str"),
    ("sequence", b"identity", "got bytes"),
    ("stream", None, "must be an iterable"),
    ("stream", "{}", "got str"),
    ("stream", b"{}", "got bytes"),
    ("stream", {"type": "identify"}, "got dict"),
    ("stream", 5, "got int"),
    ("callback", 5, "must be callable, got int"),
    ("policy", "MERGE", "must be one of 'merge', 'switch', got 'MERGE'"),
    ("policy", ["merge"], "got ['merge']"),
    ("at", "5", "must be an int or an aware datetime, got str"),
    ("at", datetime(2026, 1, 1), "timezone-aware"),
    ("at", True, "must be an int, got bool"),
    ("kind", ValueError(), "must be Exception or a subclass of it"),
    ("kind", int, "must be Exception or a subclass of it"),
]


@pytest.mark.parametrize(("method", "value"), ACCEPTED)
def test_the_boundary_accepts_what_the_annotation_names(method: str, value: object) -> None:
    getattr(Sample(), method)(value)
    getattr(Sample(), method)(value=value)


@pytest.mark.parametrize(("method", "value", "reason"), REFUSED)
def test_the_boundary_refuses_other_values_naming_the_argument(
    method: str, value: object, reason: str
) -> None:
    for call in (lambda: getattr(Sample(), method)(value), lambda: getattr(Sample(), method)(value=value)):
        with pytest.raises(InvalidCommand) as caught:
            call()
        assert caught.value.field.startswith("value")
        assert reason in caught.value.reason


def test_an_item_of_a_list_is_named_by_its_index() -> None:
    with pytest.raises(InvalidCommand) as caught:
        Sample().names(["a", "b", 3])
    assert caught.value.field == "value[2]"


def test_positional_and_keyword_arguments_are_checked_and_defaults_are_not() -> None:
    sample = Sample()
    assert sample.several("a") == ("a", 1, None)
    assert sample.several(a="a", b=2, c="c") == ("a", 2, "c")
    for call, field in [(lambda: sample.several(1), "a"), (lambda: sample.several("a", "2"), "b"),
                        (lambda: sample.several("a", b="2"), "b"), (lambda: sample.several("a", c=3), "c")]:
        with pytest.raises(InvalidCommand) as caught:
            call()
        assert caught.value.field == field


def test_a_call_that_does_not_match_the_signature_stays_pythons_type_error() -> None:
    with pytest.raises(TypeError):
        Sample().several("a", d=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Sample().several()  # type: ignore[call-arg]


def test_a_property_setter_is_checked_under_the_property_name() -> None:
    sample = Sample()
    sample.size = 3
    with pytest.raises(InvalidCommand) as caught:
        sample.size = "3"  # type: ignore[assignment]
    assert caught.value.field == "size"


def test_a_value_that_cannot_be_printed_still_gives_a_short_message() -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(InvalidCommand) as caught:
        Sample().policy(deep)  # type: ignore[arg-type]
    assert len(str(caught.value)) < 200


def test_a_str_subclass_is_text() -> None:
    class Name(str):
        pass

    Sample().text(Name("device-1"))


def test_every_public_method_is_marked_and_private_ones_are_left_alone() -> None:
    for name in ("text", "several", "anything"):
        assert is_checked(getattr(Sample, name))
    assert is_checked(vars(Sample)["size"])
    assert not is_checked(Sample._private)
    assert Sample()._private(3) == 3  # type: ignore[arg-type]


def test_the_wrapper_keeps_the_signature_and_the_docstring() -> None:
    import inspect

    assert list(inspect.signature(Sample.several).parameters) == ["self", "a", "b", "c"]
    assert Sample.several.__name__ == "several"


def test_a_parameter_without_an_annotation_fails_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"Bad.method\(value\).*needs an annotation"):
        @checked_methods
        class Bad:
            def method(self, value) -> None:  # type: ignore[no-untyped-def]
                pass


def test_an_annotation_the_boundary_cannot_judge_fails_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"Bad.method\(value\).*cannot check"):
        @checked_methods
        class Bad:
            def method(self, value: tuple[int, str]) -> None:
                pass


class Sized(Protocol):
    def __len__(self) -> int: ...


@runtime_checkable
class Lengthy(Protocol):
    def __len__(self) -> int: ...


def test_a_protocol_it_cannot_test_instances_of_fails_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="make it @runtime_checkable"):
        @checked_methods
        class Bad:
            def method(self, value: Sized) -> None:
                pass

    @checked_methods
    class Good:
        def method(self, value: Lengthy) -> None:
            pass

    Good().method([])
    with pytest.raises(InvalidCommand, match="must be a Lengthy, got int"):
        Good().method(5)  # type: ignore[arg-type]


def test_star_arguments_fail_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="no \\*args"):
        @checked_methods
        class Bad:
            def method(self, *values: str) -> None:
                pass


def test_a_function_is_checked_too() -> None:
    @checked
    def opener(url: str | None = None, *, flag: bool = True) -> str | None:
        return url

    assert is_checked(opener)
    assert opener("memory:") == "memory:"
    with pytest.raises(InvalidCommand, match="url"):
        opener(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidCommand, match="flag"):
        opener(flag="yes")  # type: ignore[arg-type]
