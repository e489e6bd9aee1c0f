"""For all command sequences: the Change a custom projection gets for a position is the one
``history`` shows for it (issue 14, section 2), however the catch-up cuts the log.

A custom projection registered over an existing log catches up in batches (one transaction
each) read and folded a chunk at a time, with the stream of Changes started cold at
registration; then it is kept current command by command. Both paths, with batch and chunk
sizes drawn small enough to cut the log anywhere, must give every position's Change exactly
as ``history`` gives it: the event's data, the person after the event, the attribute changes
old -> new, the merges caused, the identifiers refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from idstitch.projections import changes, custom_batches
from idstitch.projections.identity.rows import DEVICE, MERGE, PERSON

import idstitch
from idstitch.errors import IdstitchError
from idstitch.testing import FrozenClock
from idstitch.testing_projections import ChangeLog
from idstitch.workspace import Workspace

T0 = datetime(2026, 6, 1, tzinfo=UTC)
DEVICES = ["d1", "d2", "d3", "d4"]
USERS = ["ann", "bo", "cy@x.io"]
KEYS = ["plan", "email", "k"]
device = st.sampled_from(DEVICES)
value = st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["x", "a@x.io", "b@x.io"]))
attrs = st.dictionaries(st.sampled_from(KEYS), value, max_size=2)
late = st.integers(0, 30)
commands = st.lists(st.one_of(
    st.tuples(st.just("identify"), device, st.sampled_from(USERS), attrs, late),
    st.tuples(st.just("attributes"), device, attrs,
              st.dictionaries(st.sampled_from(KEYS), st.integers(0, 3), max_size=1),
              st.lists(st.sampled_from(KEYS), max_size=1, unique=True), late),
    st.tuples(st.just("clear"), device),
    st.tuples(st.just("token"), device, st.sampled_from(["t1", "t2"])),
    st.tuples(st.just("device"), device, st.integers(0, 2)),
    st.tuples(st.just("merge"), device, st.sampled_from(USERS), st.sampled_from(USERS)),
    st.tuples(st.just("unmerge"), device),
), min_size=1, max_size=30)


def run(ws: Workspace, script: list[tuple[Any, ...]], merges: list[str]) -> None:
    """Play a script; commands the rules refuse (merging a person with itself) are skipped."""
    for step, (verb, dev, *args) in enumerate(script):
        ts = T0 + timedelta(seconds=step)
        try:
            if verb == "identify":
                user, traits, back = args
                ws.identify(dev, user, traits, timestamp=ts - timedelta(seconds=back))
            elif verb == "attributes":
                set_, once, unset, back = args
                ws.set_profile_attributes(dev, set_, set_once=once, unset=unset,
                                          timestamp=ts - timedelta(seconds=back))
            elif verb == "clear":
                ws.clear_identify(dev, timestamp=ts)
            elif verb == "token":
                ws.register_device_token(dev, args[0], platform="ios", timestamp=ts)
            elif verb == "device":
                ws.set_device_attributes(dev, {"v": args[0]}, timestamp=ts)
            elif verb == "merge":
                merges.append(ws.merge_persons(args[0], args[1], reason="same customer"))
            elif merges:
                ws.unmerge(merges.pop(), reason="they are not")
        except IdstitchError:
            continue


def reachable_history(ws: Workspace) -> dict[int, Any]:
    """Every Change the histories of the persons reachable by users and devices show, as
    JSON values, by position."""
    out: dict[int, Any] = {}
    for identifier in [*USERS, *DEVICES]:
        person = (ws.profile_of_device(identifier) if identifier in DEVICES
                  else ws.profile(identifier))
        if person is None:
            continue
        for change in ws.history(person.person_id):
            out[change.position] = msgspec.json.decode(msgspec.json.encode(change))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=commands, cut=st.floats(0, 1), batch=st.integers(1, 12),
       chunk=st.integers(1, 5), prefetch=st.booleans(),
       limit=st.sampled_from([4, 200_000, None]))
def test_folded_changes_are_the_history_of_their_positions(
        script: list[tuple[Any, ...]], cut: float, batch: int, chunk: int, prefetch: bool,
        limit: int | None) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(custom_batches, "BATCH", batch)
        patch.setattr(custom_batches, "CHUNK", chunk)
        # Streams that read every identity row at once (a long catch-up's), or as met; row
        # caches kept whole or dropped and read again over and over.
        patch.setattr(changes, "PREFETCH_POSITIONS", 0 if prefetch else 10**9)
        patch.setattr(changes, "STATES_LIMIT", limit or 200_000)
        ws = idstitch.open("memory:", clock=FrozenClock(T0))
        merges: list[str] = []
        half = round(len(script) * cut)
        run(ws, script[:half], merges)
        if limit is None:
            # Room for every device and person row, not for the merge records as well: the
            # devices searched at once, the records read as met.
            rows = ws._services.projector.rows
            patch.setattr(changes, "STATES_LIMIT", max(1, rows.count(DEVICE) + rows.count(PERSON)))
        ws.run_projection(ChangeLog)  # over the log so far, with the identity rows ahead
        run(ws, script[half:], merges)  # then command by command
        ws.catch_up()
    folded = {p: msgspec.json.decode(c) for p, c in ws.projection_db("change_log").query(
        "SELECT position, change FROM change_log")}
    decisions = {p for p, ev in ws.log.read(0, 10_000) if ev.device_id == "workspace:decisions"}
    assert set(range(1, ws.log.head() + 1)) - decisions <= folded.keys()
    shown = reachable_history(ws)
    for position, change in shown.items():
        assert folded[position] == change, position
    # Decisions: a Change only where history shows one (an applied explicit merge).
    assert folded.keys() & decisions <= shown.keys()


def test_a_stream_with_room_for_devices_and_persons_but_not_merges(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A long catch-up reads every device and person row at once when those fit, and the merge
    records as met when all three do not (an identity-heavy log holds more of them): the same
    Changes as history shows."""
    script: list[tuple[Any, ...]] = [
        ("attributes", "d1", {"plan": 1}, {}, [], 0), ("identify", "d1", "ann", {"k": 1}, 0),
        ("attributes", "d2", {"plan": 2}, {}, [], 0), ("identify", "d2", "ann", {}, 3),
        ("identify", "d3", "bo", {"email": "b@x.io"}, 0), ("clear", "d3"),
        ("attributes", "d3", {"k": "x"}, {}, [], 0), ("identify", "d3", "bo", {}, 0),
        ("merge", "d1", "ann", "bo"), ("identify", "d4", "cy@x.io", {"plan": 3}, 0),
        ("unmerge", "d1"), ("identify", "d4", "ann", {"k": 2}, 1), ("token", "d4", "t1")]
    ws = idstitch.open("memory:", clock=FrozenClock(T0))
    run(ws, script, [])
    rows = ws._services.projector.rows
    assert rows.count(MERGE) > 0
    monkeypatch.setattr(changes, "PREFETCH_POSITIONS", 0)
    monkeypatch.setattr(changes, "STATES_LIMIT", rows.count(DEVICE) + rows.count(PERSON))
    complete: list[set[str]] = []
    prefetch = changes.ChangeStream.prefetch

    def spied(self: changes.ChangeStream) -> None:
        prefetch(self)
        complete.append(set(self._complete))

    monkeypatch.setattr(changes.ChangeStream, "prefetch", spied)
    ws.run_projection(ChangeLog)
    assert complete == [{DEVICE, PERSON}]
    folded = {p: msgspec.json.decode(c) for p, c in ws.projection_db("change_log").query(
        "SELECT position, change FROM change_log")}
    shown = reachable_history(ws)
    assert len(shown) > 10
    for position, change in shown.items():
        assert folded[position] == change, position
