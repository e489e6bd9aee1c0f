"""Projections: rebuild equals incremental, policy change is a replay, writers race safely."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from idstitch.domain.device import minted_person_id, new_person_id
from idstitch.projections.identity.rows import ROW_TYPES
from idstitch.projections.runner import RunnerState, catch_up

import idstitch
from idstitch.errors import ConcurrencyConflict
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def story(ws: Workspace) -> None:
    """A bit of everything: conversion, merge, switch, tokens moving, clears, late events."""
    t = [T0]

    def at() -> datetime:
        t[0] += timedelta(seconds=1)
        return t[0]

    ws.set_profile_attributes("tablet", {"theme": "dark"}, timestamp=at())
    ws.identify("phone", "u1", {"first_name": "Dana", "email": "dana@example.com"}, timestamp=at())
    ws.register_device_token("phone", "tok-1", platform="ios", timestamp=at())
    ws.identify("tablet", "dana@example.com", timestamp=at())
    ws.identify("phone", "u2", {"first_name": "Sam"}, timestamp=at())
    ws.register_device_token("tablet", "tok-1", timestamp=at())
    ws.set_profile_attributes("tablet", {"first_name": "Old"}, timestamp=T0)
    ws.clear_identify("phone", timestamp=at())
    ws.collect_device_attributes("phone", {"device_os": "17", "network": {"wifi": True}},
                                 timestamp=at())


def test_rebuild_gives_exactly_the_incremental_result(ws: Workspace) -> None:
    story(ws)
    incremental = ws.dump()
    assert incremental["p"] and incremental["m"]
    replayed = ws.rebuild()
    assert replayed == ws.log.head()
    assert ws.dump() == incremental


def test_every_store_agrees(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    story(ws)
    reference = idstitch.open("memory:", clock=ws.clock)
    story(reference)
    assert ws.dump() == reference.dump()


def test_a_policy_change_on_open_is_a_replay(make_durable_ws: WorkspaceFactory) -> None:
    ws = make_durable_ws()
    story(ws)
    assert ws.profile("tablet") is None
    assert [m.kind for m in ws.merges("u1")].count("merged") == 1
    url = ws.url
    ws.close()
    switched = make_durable_ws(url, anonymous_merge="switch")
    assert [m.kind for m in switched.merges("u1")].count("merged") == 0
    assert "switched" in [m.kind for m in switched.merges("u1")]
    fresh = idstitch.open("memory:", anonymous_merge="switch", clock=ws.clock)
    story(fresh)
    assert switched.dump() == fresh.dump()


def test_rows_of_another_layout_are_rebuilt_on_open(make_durable_ws: WorkspaceFactory) -> None:
    ws = make_durable_ws()
    story(ws)
    expected = ws.dump()
    # What another version left: its meta and rows this one cannot decode.
    with ws.rows.transaction("identity") as tx:
        tx.write({("d", "phone"): b"\x93old", ("p", "junk"): b"\x00"}, ws.log.head(),
                 "anonymous_merge=merge rows=999")
    url = ws.url
    ws.close()
    reopened = make_durable_ws(url)
    identity = reopened.projections["identity"]
    assert identity.config_of(reopened.rows.meta("identity")) == identity.meta
    assert reopened.anonymous_merge == "merge"
    assert reopened.dump() == expected


@pytest.mark.parametrize("old_meta", ["anonymous_merge=merge", "anonymous_merge=merge rows=3"])
def test_a_store_from_before_event_derived_ids_keeps_its_person_ids(
    make_durable_ws: WorkspaceFactory, old_meta: str
) -> None:
    """Person ids minted for unknown users came from log positions before (format 3 and older);
    such a store is rebuilt on open but keeps that derivation, so no id handed out changes."""
    ws = make_durable_ws()
    story(ws)
    minted = ws.profile("u2")
    assert minted is not None
    assert minted.person_id == minted_person_id("phone", 3)  # the phone's third identity event
    position = ws.merges("u2")[-1].position
    with ws.rows.transaction("identity") as tx:
        tx.write({}, ws.log.head(), old_meta)
    url = ws.url
    ws.close()
    reopened = make_durable_ws(url)
    assert "ids=position" in (reopened.rows.meta("identity") or "")
    assert reopened.profile("u2").person_id == new_person_id("phone", position)  # type: ignore[union-attr]
    reopened.rebuild()
    assert reopened.profile("u2").person_id == new_person_id("phone", position)  # type: ignore[union-attr]


def test_a_stale_writer_retries_and_wins(make_durable_ws: WorkspaceFactory) -> None:
    first = make_durable_ws()
    second = make_durable_ws(first.url)
    first.identify("d1", "u1", {"a": 1})
    second.set_profile_attributes("d1", {"b": 2})
    # `first` still caches the device at version 1: its append conflicts, it reloads, it wins.
    position = first.set_profile_attributes("d1", {"c": 3})
    assert position is not None and position == first.log.head()
    assert first.profile("u1").attributes == {"a": 1, "b": 2, "c": 3}  # type: ignore[union-attr]


def test_conflict_reaches_the_caller_only_when_retries_run_out(
    make_durable_ws: WorkspaceFactory,
) -> None:
    first = make_durable_ws()
    second = make_durable_ws(first.url)
    first.identify("d1", "u1")
    second.identify("d1", "u1", {"b": 2})
    first.retries = 1
    with pytest.raises(ConcurrencyConflict):
        first.set_profile_attributes("d1", {"c": 3})
    first.retries = 2
    assert first.set_profile_attributes("d1", {"c": 3}) is not None


def test_concurrent_writers_on_one_device_all_land(
    make_durable_ws: WorkspaceFactory,
) -> None:
    writers = [make_durable_ws(None) for _ in range(1)]
    url = writers[0].url
    writers += [make_durable_ws(url) for _ in range(3)]
    for w in writers:
        w.retries = 50
    errors: list[BaseException] = []

    def work(w: Workspace, n: int) -> None:
        try:
            for i in range(10):
                w.set_profile_attributes("shared", {f"w{n}-{i}": i})
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w, n)) for n, w in enumerate(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    # Count events, not the head: PostgreSQL sequences leave gaps where an insert rolled back.
    from idstitch.testing import recorded_events

    assert len(recorded_events(writers[0])) == 40
    assert len(writers[0].profile_of_device("shared").attributes) == 40  # type: ignore[union-attr]


def test_events_handed_over_with_a_gap_do_not_skip_the_gap(make_ws: WorkspaceFactory) -> None:
    ws = make_ws(auto_catch_up=False)
    ws.identify("mine-1", "u1")
    ws.identify("theirs", "u2")  # as if another process wrote it in between
    ws.identify("mine-2", "u3")
    mine = [e for e in ws.log.read(0, 10) if e.event.device_id != "theirs"]
    assert [e.position for e in mine] == [1, 3]
    ws._services.projector.catch_up(mine)
    assert ws.profile("u2") is not None  # the event at position 2 was not skipped
    assert catch_up(ws.projections["identity"],
                    RunnerState(ws.projections["identity"]), ws.log, ws.rows) == ws.log.head()


def test_a_catch_up_raced_by_another_process_writes_nothing_stale(
    make_durable_ws: WorkspaceFactory,
) -> None:
    """The fold runs outside the write lock; if another process commits the projection
    meanwhile, the folded rows are dropped and the catch-up goes again from there."""
    other = make_durable_ws(None, auto_catch_up=False)
    story(other)
    other.catch_up()
    ws = make_durable_ws(other.url, auto_catch_up=False)  # its cache starts cold
    ws.set_profile_attributes("phone", {"plan": "pro"}, timestamp=T0 + timedelta(hours=1))
    raced: list[int] = []

    def commit_behind_its_back(applied: int) -> None:
        if not raced:
            raced.append(applied)
            # A new device and person, outside the batch being folded; the refused email makes
            # applying this event twice visible (two refusals instead of one).
            other.identify("watch", "u9", {"email": "dana@example.com"},
                           timestamp=T0 + timedelta(hours=2))
            other.catch_up()

    position = catch_up(ws.projections["identity"],
                    RunnerState(ws.projections["identity"]), ws.log, ws.rows, progress=commit_behind_its_back)
    assert raced
    assert position == ws.log.head() == ws.rows.position("identity")
    assert ws.profile("u9").attributes == {"email": "dana@example.com"}  # type: ignore[union-attr]
    rows = ws.dump()
    ws.rebuild()
    assert ws.dump() == rows


class LogUpTo:
    """The log as a rebuild that has read only up to ``last`` sees it."""

    def __init__(self, log: Any, last: int) -> None:
        self.log, self.last = log, last

    def head(self) -> int:
        return min(int(self.log.head()), self.last)

    def drop_keys(self) -> None:
        self.log.drop_keys()

    def read(self, after: int, limit: int) -> list[Any]:
        return [e for e in self.log.read(after, limit) if e.position <= self.last]

    def read_selected(self, after: int, until: int, limit: int, types: Any, *,
                      first: bool = False) -> list[Any]:
        return list(self.log.read_selected(after, min(until, self.last), limit, types,
                                           first=first))


def test_a_catch_up_raced_by_a_replay_to_the_same_position_writes_nothing_stale(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Position alone cannot tell: another process resets the rows and replays them up to the
    very position this catch-up started from. The epoch in the tracking meta tells."""
    first = make_durable_ws(None)
    for i in range(5):
        first.identify(f"d{i}", f"u{i}", {"n": i}, timestamp=T0 + timedelta(seconds=i))
    start = first.rows.position("identity")
    first.auto_catch_up = False
    first.set_profile_attributes("d1", {"plan": "pro"}, timestamp=T0 + timedelta(seconds=10))
    ws = make_durable_ws(first.url, auto_catch_up=False)
    replaying = make_durable_ws(first.url, auto_catch_up=False)
    get_many, transaction = ws.rows.get_many, ws.rows.transaction
    reset: list[bool] = []

    def reads_mid_reset(kind: str, keys: Any) -> Any:
        if not reset:  # the other process's rebuild starts while this one reads its rows
            reset.append(True)
            replaying.rows.reset("identity", list(ROW_TYPES))
            replaying._services.projector.states.forget("identity")
        return get_many(kind, keys)

    @contextmanager
    def commits_after_the_replay(name: str) -> Iterator[Any]:
        catch_up(replaying.projections["identity"],
                 RunnerState(replaying.projections["identity"]), LogUpTo(replaying.log, start),  # type: ignore[arg-type]
                 replaying.rows)
        with transaction(name) as tx:
            yield tx

    monkeypatch.setattr(ws.rows, "get_many", reads_mid_reset)
    monkeypatch.setattr(ws.rows, "transaction", commits_after_the_replay)
    ws.catch_up()
    monkeypatch.undo()
    assert reset
    rows = ws.dump()
    assert ws.profile_of_device("d1").identifiers == {"id": "u1"}  # type: ignore[union-attr]
    ws.rebuild()
    assert ws.dump() == rows
