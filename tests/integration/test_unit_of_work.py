"""Issue 15 §1: a handler loads, decides and the unit of work commits. The unit of work records
which aggregate took which command, so a message refused midway is undone whole (the batch's
other messages kept), a conflict with another writer runs the moved aggregates' messages again
on them reloaded, and a read about persons commits the unit of work's own earlier messages
first (no callback into ingest). Real stores; the unit of work driven as ingest drives it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from idstitch.domain.commands import (
    Command,
    Identify,
    Logout,
    RegisterDeviceToken,
    SetProfileAttributes,
)
from idstitch.domain.device import anonymous_id_for
from idstitch.domain.events import DeviceTokenRegistered, Identified
from idstitch.domain.ids import anonymous_person_id

from idstitch.errors import NotIdentified
from idstitch.service import handlers
from idstitch.service.checks import Entry, check
from idstitch.service.uow import UnitOfWork
from idstitch.testing import recorded_events
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T = datetime(2026, 1, 1, tzinfo=UTC)


def unit(ws: Workspace) -> UnitOfWork:
    services = ws._services
    return UnitOfWork(services.writer, services.queries, services.projector, T)


def run(uow: UnitOfWork, index: int, commands: Sequence[Command]) -> bool:
    entry = Entry(T)
    return handlers.run(uow, index, [check(c, entry) for c in commands])


def test_a_message_refused_midway_leaves_nothing_and_the_batch_keeps_the_others(
    make_ws: WorkspaceFactory,
) -> None:
    ws = make_ws()
    ws.identify("tablet", "bob")
    ws.clear_identify("tablet")  # anonymous now: a logout is refused
    head = ws.log.head()
    uow = unit(ws)
    assert run(uow, 0, [SetProfileAttributes(device_id="phone", traits={"plan": "free"},
                                             message_id="m0")])
    # Its first command ran on "phone" (a token) before its second was refused on "tablet".
    with pytest.raises(NotIdentified):
        run(uow, 1, [RegisterDeviceToken(device_id="phone", token="tok-1", message_id="m1"),
                     Logout(device_id="tablet", message_id="m1#logout")])
    assert run(uow, 2, [Identify(device_id="phone", user_id="ann", message_id="m2")])
    result = uow.commit()
    assert result is not None
    assert (result.accepted, result.duplicates, result.rejected) == (2, 0, [])
    events = [e for _, e in recorded_events(ws, head)]
    assert [e.message_id for e in events] == ["m0", "m2"]
    assert not any(isinstance(e, DeviceTokenRegistered) for e in events)
    # The cached device holds nothing of the refused message either: its next token is new.
    device = ws.device("phone")
    assert device is not None and device.token is None
    assert ws.register_device_token("phone", "tok-2", message_id="m1") is not None


def test_a_conflict_runs_the_moved_devices_messages_again_on_them_reloaded(
    make_durable_ws: WorkspaceFactory,
) -> None:
    first = make_durable_ws(None)
    second = make_durable_ws(first.url)
    first.identify("phone", "ann", message_id="m0")
    uow = unit(first)
    # Decided on the cached "phone": "m-2" is new to it.
    assert run(uow, 0, [SetProfileAttributes(device_id="phone", traits={"plan": "pro"},
                                             message_id="m-2")])
    assert run(uow, 1, [SetProfileAttributes(device_id="laptop", traits={"plan": "max"},
                                             message_id="m-3")])
    # Another writer records that very message on "phone" first.
    second.set_profile_attributes("phone", {"plan": "pro"}, message_id="m-2")
    result = uow.commit()
    assert result is not None
    # "phone" was reloaded and its message ran again: a duplicate now; "laptop" kept its event.
    assert (result.accepted, result.duplicates) == (1, 1)
    assert [e.message_id for _, e in recorded_events(first)] == ["m0", "m-2", "m-3"]


def test_a_read_about_persons_commits_the_units_own_earlier_messages_first(
    make_ws: WorkspaceFactory,
) -> None:
    ws = make_ws()
    person_id = anonymous_person_id(anonymous_id_for("cio-phone", 0))
    uow = unit(ws)
    assert run(uow, 0, [Identify(device_id="cio-phone", user_id="u-cio", message_id="c0")])
    assert ws.log.head() == 0  # nothing committed yet
    # The cio_ check reads the person the message before created: the unit of work commits
    # that message and catches the projections up before it reads.
    assert run(uow, 1, [Identify(device_id="cio-tablet", user_id=f"cio_{person_id}",
                                 message_id="c1")])
    assert [e.message_id for _, e in recorded_events(ws)] == ["c0"]
    # The batch goes on after it: a message refused midway there is undone, the rest kept.
    assert run(uow, 2, [SetProfileAttributes(device_id="laptop", traits={"a": 1},
                                             message_id="c2")])
    with pytest.raises(NotIdentified):
        run(uow, 3, [SetProfileAttributes(device_id="laptop", traits={"a": 2},
                                          message_id="c3"),
                     Logout(device_id="nobody-here", message_id="c3#logout")])
    uow.commit()
    assert [r.accepted for r in uow.results] == [1, 2]
    events = [e for _, e in recorded_events(ws)]
    assert [e.message_id for e in events] == ["c0", "c1", "c2"]
    assert isinstance(events[1], Identified)
    profile = ws.profile("u-cio")
    assert profile is not None
    assert {d.device_id for d in profile.devices} == {"cio-phone", "cio-tablet"}


def test_a_message_that_reads_about_persons_after_running_a_command_runs_again_whole(
    make_ws: WorkspaceFactory,
) -> None:
    """Its first command ran before its second read about persons: the read commits the
    messages before it (not its first command), and the message runs again from its start."""
    ws = make_ws()
    person_id = anonymous_person_id(anonymous_id_for("cio-phone", 0))
    uow = unit(ws)
    assert run(uow, 0, [Identify(device_id="cio-phone", user_id="u-cio", message_id="c0")])
    assert run(uow, 1, [SetProfileAttributes(device_id="cio-tablet", traits={"a": 1},
                                             message_id="c1"),
                        Identify(device_id="cio-tablet", user_id=f"cio_{person_id}",
                                 message_id="c1#identify")])
    assert [e.message_id for _, e in recorded_events(ws)] == ["c0"]
    uow.commit()
    assert [e.message_id for _, e in recorded_events(ws)] == ["c0", "c1", "c1#identify"]
    profile = ws.profile("u-cio")
    assert profile is not None and profile.attributes == {"a": 1}
