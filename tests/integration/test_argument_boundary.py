"""Issue 9, item 4: a bad argument of the public surface is an InvalidCommand naming it, on every
store, and nothing is recorded; a well-formed identifier that names nothing is "not found"."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.service.arguments import is_checked
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


def test_every_public_method_of_the_workspace_goes_through_the_boundary() -> None:
    """A public method added without the boundary (outside the class body, or by removing
    ``@checked_methods``) fails here."""
    unchecked = [
        name for name, member in inspect.getmembers(Workspace)
        if not name.startswith("_")
        and (callable(member) or isinstance(member, property))
        and not is_checked(inspect.getattr_static(Workspace, name))
    ]
    assert unchecked == []
    assert is_checked(idstitch.open)


# The issue's cases, each with the argument the error must name.
ISSUE_CASES: list[tuple[str, Callable[[Workspace], object], str]] = [
    ("profile(None)", lambda ws: ws.profile(None), "identifier"),  # type: ignore[arg-type]
    ("profile(123)", lambda ws: ws.profile(123), "identifier"),  # type: ignore[arg-type]
    ("merges(None)", lambda ws: ws.merges(None), "identifier"),  # type: ignore[arg-type]
    ("profile(b'x')", lambda ws: ws.profile(b"x"), "identifier"),  # type: ignore[arg-type]
    ("ingest(None)", lambda ws: ws.ingest(None), "messages"),  # type: ignore[arg-type]
    ("ingest([], batch_size='10')", lambda ws: ws.ingest([], batch_size="10"),  # type: ignore[arg-type]
     "batch_size"),
    ("unset=[lone surrogate]",
     lambda ws: ws.set_profile_attributes("d1", {"plan": "pro"}, unset=["\ud800"]), "unset"),
    ("profile(lone surrogate)", lambda ws: ws.profile("\ud800"), "identifier"),
    ("device(['a'])", lambda ws: ws.device(["a"]), "device_id"),  # type: ignore[arg-type]
]

# More of the same classes that were untyped errors too: other queries, other arguments.
MORE_CASES: list[tuple[str, Callable[[Workspace], object], str]] = [
    ("profile_of_device(None)", lambda ws: ws.profile_of_device(None), "device_id"),  # type: ignore[arg-type]
    ("profile(NUL)", lambda ws: ws.profile("u1\x00"), "identifier"),
    ("device(NUL)", lambda ws: ws.device("d1\x00"), "device_id"),
    ("merges(b'u1')", lambda ws: ws.merges(b"u1"), "identifier"),  # type: ignore[arg-type]
    ("ingest('one line')", lambda ws: ws.ingest('{"type": "identify"}'), "messages"),  # type: ignore[arg-type]
    ("ingest(one dict)", lambda ws: ws.ingest({"type": "identify", "userId": "u"}), "messages"),
    ("ingest(progress=5)", lambda ws: ws.ingest([], progress=5), "progress"),  # type: ignore[arg-type]
    ("rebuild(5)", lambda ws: ws.rebuild(5), "names"),  # type: ignore[arg-type]
    ("rebuild(progress='x')", lambda ws: ws.rebuild(None, "x"), "progress"),  # type: ignore[arg-type]
    ("profile_as_of(at in year 0 in UTC)",
     lambda ws: ws.profile_as_of("u1", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))), "at"),
    ("profile_as_of(at in year 10000 in UTC)",
     lambda ws: ws.profile_as_of("u1", datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))),
     "at"),
]


def _seeded(make_ws: WorkspaceFactory) -> Workspace:
    ws = make_ws()
    ws.identify("d1", "u1", {"plan": "free"})
    ws.register_device_token("d1", "tok")
    return ws


@pytest.mark.parametrize(("name", "call", "field"), ISSUE_CASES + MORE_CASES,
                         ids=[c[0] for c in ISSUE_CASES + MORE_CASES])
def test_a_bad_argument_is_an_invalid_command_naming_it_and_nothing_is_recorded(
    make_ws: WorkspaceFactory, name: str, call: Callable[[Workspace], object], field: str
) -> None:
    ws = _seeded(make_ws)
    head, before = ws.log.head(), ws.dump()
    with pytest.raises(InvalidCommand) as caught:
        call(ws)
    assert caught.value.field == field or caught.value.field.startswith(f"{field}[")
    assert caught.value.reason
    assert ws.log.head() == head
    assert ws.dump() == before
    # The workspace is unharmed: it goes on answering and recording.
    assert ws.profile("u1") is not None
    assert ws.identify("d1", "u1", {"plan": "pro"}) is not None


@pytest.mark.parametrize("identifier", [
    "", "   ", "nobody", "null", "cio_", "cio_nobody", "x" * 151, "é" * 2000, "nobody@example.com",
    "\U0001f600",
])
def test_text_that_names_nothing_is_not_found_and_its_bytes_are_refused(
    make_ws: WorkspaceFactory, identifier: str
) -> None:
    """Not found is the honest answer for any text, even text no command could have recorded
    (blank, a placeholder, too long); bytes are not text, whatever they spell."""
    ws = _seeded(make_ws)
    assert ws.profile(identifier) is None
    assert ws.merges(identifier) == []
    assert ws.device(identifier) is None
    assert ws.profile_of_device(identifier) is None
    for query in (ws.profile, ws.merges, ws.device, ws.profile_of_device):
        with pytest.raises(InvalidCommand):
            query(identifier.encode())  # type: ignore[operator]


def test_the_retries_setter_is_checked(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    for value, reason in [("5", "must be an int"), (True, "must be an int"), (0, "at least 1")]:
        with pytest.raises(InvalidCommand, match=reason) as caught:
            ws.retries = value  # type: ignore[assignment]
        assert caught.value.field == "retries"
    assert ws.retries >= 1
    with pytest.raises(InvalidCommand) as caught:
        ws.auto_catch_up = "yes"  # type: ignore[assignment]
    assert caught.value.field == "auto_catch_up"


OPEN_CASES: list[tuple[str, Callable[[], object], str]] = [
    ("open(5)", lambda: idstitch.open(5), "url"),  # type: ignore[arg-type]
    ("open(0)", lambda: idstitch.open(0), "url"),  # type: ignore[arg-type]
    ("open(surrogate path)", lambda: idstitch.open("sqlite:///\ud800.db"), "url"),
    ("open(NUL path)", lambda: idstitch.open("sqlite:///a\x00.db"), "url"),
]


@pytest.mark.parametrize(("name", "call", "field"), OPEN_CASES, ids=[c[0] for c in OPEN_CASES])
def test_a_bad_argument_of_open_is_an_invalid_command_naming_it(
    name: str, call: Callable[[], object], field: str, tmp_path: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Run where a store opened by mistake (open(0) used to open ./idstitch.db) would show.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidCommand) as caught:
        call()
    assert caught.value.field == field
    assert list(tmp_path.iterdir()) == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("reading", [5, None, datetime(2026, 1, 1), "2026-01-01T00:00:00Z"])
def test_a_clock_that_does_not_tell_aware_time_is_refused_before_anything_is_recorded(
    make_ws: WorkspaceFactory, reading: object
) -> None:
    ws = make_ws(clock=lambda: reading)
    for call in (lambda: ws.identify("d1", "u1"),
                 lambda: ws.ingest([{"type": "identify", "userId": "u1", "anonymousId": "d1",
                                     "messageId": "m1"}])):
        with pytest.raises(InvalidCommand) as caught:
            call()
        assert caught.value.field == "clock"
    assert ws.log.head() == 0
