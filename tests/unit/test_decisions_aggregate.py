"""The Decisions aggregate (the workspace's person-level decisions), with no store: the events
it records for each command, on the decisions stream, and its own invariant (a merge is undone
once), which a replay of its events remembers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from idstitch.domain.aggregates import new_aggregate
from idstitch.domain.commands import ForgetPerson, MergePersons, Unmerge
from idstitch.domain.decisions import Decisions
from idstitch.domain.device import Device
from idstitch.domain.errors import InvalidCommand
from idstitch.domain.events import DECISIONS_STREAM, MergeUndone, PersonForgotten, PersonsMerged
from idstitch.domain.ids import device_aggregate_id, merge_id, subject_key_id

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_each_decision_records_its_event_on_the_decisions_stream() -> None:
    decisions = Decisions()
    assert decisions.handle(MergePersons(primary="p1", secondary="p2", reason="same"), T)
    # Named by the decision that causes it (the stream's first event), as an automatic
    # merge is by its device's event: no random number.
    m1 = merge_id(f"{DECISIONS_STREAM}#1", "explicit")
    assert decisions.handle(Unmerge(merge_id=m1, reason="wrong"), T)
    assert decisions.handle(ForgetPerson(person_id="p2", reason="erasure request"), T)
    recorded = decisions.collect_events()
    assert [type(r.event) for r in recorded] == [PersonsMerged, MergeUndone, PersonForgotten]
    assert [r.originator_version for r in recorded] == [1, 2, 3]
    assert {r.originator_id for r in recorded} == {device_aggregate_id(DECISIONS_STREAM)}
    # As a device's stream stamped them before this aggregate existed: the stored format holds.
    assert {r.event.key_id for r in recorded} == {subject_key_id(DECISIONS_STREAM, 0, None)}
    assert all(r.event.device_id == DECISIONS_STREAM and r.event.timestamp == T
               and r.event.recorded_at == T for r in recorded)
    merged = recorded[0].event
    assert isinstance(merged, PersonsMerged)
    assert (merged.merge_id, merged.primary, merged.secondary, merged.reason) == (
        m1, "p1", "p2", "same")


def test_a_merge_is_undone_once_and_a_replay_remembers_it() -> None:
    decisions = Decisions()
    decisions.handle(Unmerge(merge_id="m1", reason="wrong"), T)
    with pytest.raises(InvalidCommand) as e:
        decisions.handle(Unmerge(merge_id="m1", reason="again"), T)
    assert e.value.field == "merge_id" and "undone already" in e.value.reason
    events = decisions.collect_events()
    assert len(events) == 1  # the refusal recorded nothing
    replayed = Decisions()
    for recorded in events:
        replayed.apply(recorded.event)
    with pytest.raises(InvalidCommand):
        replayed.handle(Unmerge(merge_id="m1", reason="again"), T)
    assert replayed.handle(Unmerge(merge_id="m2", reason="another"), T)


def test_the_log_loads_the_decisions_stream_as_decisions_and_any_other_as_a_device() -> None:
    assert isinstance(new_aggregate(DECISIONS_STREAM), Decisions)
    device = new_aggregate("phone")
    assert isinstance(device, Device) and device.id == device_aggregate_id("phone")
    assert not Decisions().is_duplicate(None)
