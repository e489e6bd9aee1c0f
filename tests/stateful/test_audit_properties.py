"""The audit's rules for all inputs (hypothesis), on every store.

- **as-of equals a replay of the prefix**: ``profile_as_of(x, p)`` is, for every identifier
  x and every position p, the profile a fresh workspace fed only the log up to p gives for x
  (also across merges and their undos: an undo recorded after p changes no answer at p);
  and an aware datetime of recorded time means the last position recorded by then.
- **explain agrees with the profile and the history**: every current attribute has a
  provenance with the current value, at the position of a Change in the person's history.
- **history is the person's own**: every Change applied to the person or to one merged into
  it, in log order, and the device of each was on that person then.
- **rebuild changes no answer**: history, explain and as-of are the same after a rebuild.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from idstitch.domain.device import Recorded, device_aggregate_id

import idstitch
from idstitch.errors import IdstitchError
from idstitch.testing import FrozenClock, recorded_events
from idstitch.workspace import Workspace

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEVICES = ["d1", "d2", "d3"]
USERS = ["alice", "bob", "carol@example.com"]
EMAILS = ["a@example.com", "b@example.com"]
KEYS = ["plan", "color", "email"]

device = st.sampled_from(DEVICES)
offset = st.integers(0, 50)
value = st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["x", *EMAILS]))
traits = st.dictionaries(st.sampled_from(KEYS), value, max_size=2)
commands = st.lists(st.one_of(
    st.tuples(st.just("identify"), device, st.sampled_from(USERS), traits, offset),
    st.tuples(st.just("attributes"), device, traits,
              st.dictionaries(st.sampled_from(KEYS), st.integers(0, 3), max_size=1),
              st.lists(st.sampled_from(KEYS), max_size=1, unique=True), offset),
    st.tuples(st.just("clear"), device),
    st.tuples(st.just("token"), device, st.sampled_from(["t1", "t2"])),
    st.tuples(st.just("untoken"), device, st.sampled_from(["t1", "t2"])),
    st.tuples(st.just("status"), device, st.sampled_from(["sent", "bounced"])),
    st.tuples(st.just("device"), device, st.dictionaries(st.sampled_from(["os", "tier"]),
                                                         value, max_size=2), st.booleans()),
    st.tuples(st.just("cio"), device, st.sampled_from(USERS)),
    st.tuples(st.just("merge"), device, st.sampled_from(USERS), st.sampled_from(USERS)),
    st.tuples(st.just("unmerge"), device, st.integers(0, 3)),
), min_size=1, max_size=18)


def run(ws: Workspace, clock: FrozenClock, script: list[tuple[Any, ...]]) -> None:
    """Play a script; refused commands (a cio_ id of an anonymous person) are skipped."""
    for step, (name, dev, *args) in enumerate(script):
        clock.advance(seconds=1)
        ts = T0 + timedelta(seconds=step)
        try:
            if name == "identify":
                user, traits_, late = args
                ws.identify(dev, user, traits_, timestamp=ts - timedelta(seconds=late))
            elif name == "attributes":
                set_, once, unset, late = args
                ws.set_profile_attributes(dev, set_, set_once=once, unset=unset,
                                          timestamp=ts - timedelta(seconds=late))
            elif name == "clear":
                ws.clear_identify(dev, timestamp=ts)
            elif name == "token":
                ws.register_device_token(dev, args[0], platform="ios", timestamp=ts)
            elif name == "untoken":
                ws.remove_device_token(dev, args[0], timestamp=ts)
            elif name == "status":
                ws.record_push_status(dev, args[0], timestamp=ts)
            elif name == "device":
                attrs, collected = args
                if collected:
                    ws.collect_device_attributes(dev, attrs, timestamp=ts)
                else:
                    ws.set_device_attributes(dev, attrs, timestamp=ts)
            elif name == "cio":
                found = ws.profile(args[0])
                if found is not None:
                    ws.identify(dev, f"cio_{found.person_id}", timestamp=ts)
            elif name == "merge":
                ws.merge_persons(args[0], args[1], reason="same person")
            elif name == "unmerge":
                # One of the merges made so far (explicit, or an anonymous person's).
                undoable = sorted({m.merge_id for u in USERS for m in ws.merges(u)
                                   if m.kind in ("merged", "explicit")})
                if undoable:
                    ws.unmerge(undoable[args[0] % len(undoable)], reason="wrong merge")
        except IdstitchError:
            continue


def identifiers(ws: Workspace) -> list[str]:
    """Every identifier the script could have made: users, emails, devices' persons and
    anonymous ids, and every person id ever seen in the log's merges."""
    out = [*USERS, *EMAILS]
    for d in DEVICES:
        profile = ws.profile_of_device(d)
        if profile is not None:
            out += [profile.person_id, f"cio_{profile.person_id}", *profile.anonymous_ids]
        for m in ws.merges(profile.person_id) if profile else []:
            out += [m.source, m.target]
    return list(dict.fromkeys(out))


def prefix(ws: Workspace, position: int, policy: str) -> Workspace:
    """A fresh in-memory workspace fed only the log up to ``position``."""
    fresh = idstitch.open("memory:", anonymous_merge=policy)  # type: ignore[arg-type]
    versions: Counter[str] = Counter()
    for at, event in recorded_events(ws):
        if at > position:
            break
        versions[event.device_id] += 1
        fresh.log.append([Recorded(device_aggregate_id(event.device_id),
                                   versions[event.device_id], event)])
    fresh.catch_up()
    return fresh


SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("policy", ["merge", "switch"])
@SETTINGS
@given(script=commands, data=st.data())
def test_as_of_equals_a_replay_of_the_prefix(
    url_factory: Any, policy: str, script: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    clock = FrozenClock(T0)
    with idstitch.open(url_factory(), anonymous_merge=policy, clock=clock) as ws:  # type: ignore[arg-type]
        run(ws, clock, script)
        head = ws.log.head()
        if head == 0:
            return
        positions = data.draw(st.lists(st.integers(0, head + 1), min_size=1, max_size=3))
        for position in positions:
            fresh = prefix(ws, position, policy)
            for identifier in identifiers(ws):
                assert ws.profile_as_of(identifier, position) == fresh.profile(identifier), (
                    identifier, position)
        # Recorded time: the clock moved a second per command, so a moment between two
        # commands names the last position recorded before it.
        events = recorded_events(ws)
        moment = data.draw(st.sampled_from([e.recorded_at for _, e in events]))
        last = max(p for p, e in events if e.recorded_at <= moment)
        for identifier in USERS:
            assert ws.profile_as_of(identifier, moment + timedelta(milliseconds=1)) == \
                ws.profile_as_of(identifier, last)


decisions = st.lists(st.one_of(
    st.tuples(st.just("identify"), device, st.sampled_from(USERS), traits, offset),
    st.tuples(st.just("attributes"), device, traits, st.just({}), st.just([]), offset),
    st.tuples(st.just("merge"), device, st.sampled_from(USERS), st.sampled_from(USERS)),
    st.tuples(st.just("unmerge"), device, st.integers(0, 3)),
), min_size=2, max_size=12)
"""Scripts dense in merges and their undos (the general scripts above rarely undo one)."""


@SETTINGS
@given(script=decisions)
def test_as_of_before_an_undo_is_a_replay_of_the_prefix_too(
    url_factory: Any, script: list[tuple[Any, ...]]
) -> None:
    """An undo is a later event: as of any position before it, the merge it undid held."""
    clock = FrozenClock(T0)
    with idstitch.open(url_factory(), clock=clock) as ws:
        run(ws, clock, script)
        for position in range(1, ws.log.head() + 1):
            fresh = prefix(ws, position, "merge")
            for identifier in identifiers(ws):
                assert ws.profile_as_of(identifier, position) == fresh.profile(identifier), (
                    identifier, position)


@pytest.mark.parametrize("policy", ["merge", "switch"])
@SETTINGS
@given(script=commands)
def test_explain_history_and_rebuild_agree(
    url_factory: Any, policy: str, script: list[tuple[Any, ...]]
) -> None:
    clock = FrozenClock(T0)
    with idstitch.open(url_factory(), anonymous_merge=policy, clock=clock) as ws:  # type: ignore[arg-type]
        run(ws, clock, script)
        answers = {}
        for identifier in identifiers(ws):
            profile = ws.profile(identifier)
            history = ws.history(identifier)
            positions = [c.position for c in history]
            assert positions == sorted(set(positions))
            explained = {}
            for key, current in (profile.attributes.items() if profile else []):
                provenance = ws.explain(identifier, key)
                assert provenance is not None and provenance.value == current, (identifier, key)
                assert provenance.position in positions
                assert all(c.position != provenance.position for c in provenance.overridden)
                explained[key] = provenance
            assert ws.explain(identifier, "never-set") is None
            answers[identifier] = (history, explained, ws.profile_as_of(identifier, 3))
        ws.rebuild()
        for identifier, (history, explained, as_of) in answers.items():
            assert ws.history(identifier) == history
            assert {k: ws.explain(identifier, k) for k in explained} == explained
            assert ws.profile_as_of(identifier, 3) == as_of


@SETTINGS
@given(script=commands, data=st.data())
def test_answers_kept_between_calls_equal_answers_computed_afresh(
    url_factory: Any, script: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    """The auditor keeps what it refolded and extends it as the log grows (and starts over
    when a merge brings another person's past in): asked between commands, its answers at the
    end equal those of a workspace that computes them from nothing."""
    clock = FrozenClock(T0)
    url = url_factory()
    with idstitch.open(url, clock=clock) as ws:
        for command in script:
            run(ws, clock, [command])
            who = data.draw(st.sampled_from(USERS))
            ws.history(who)
            ws.explain(who, data.draw(st.sampled_from(KEYS)))
            ws.profile_as_of(who, data.draw(st.integers(0, ws.log.head() + 1)))
        kept = {i: (ws.history(i), [ws.explain(i, k) for k in KEYS],
                    [ws.profile_as_of(i, p) for p in range(ws.log.head() + 1)])
                for i in identifiers(ws)}
        ws._services.queries.auditor.clear()
        afresh = {i: (ws.history(i), [ws.explain(i, k) for k in KEYS],
                      [ws.profile_as_of(i, p) for p in range(ws.log.head() + 1)])
                  for i in identifiers(ws)}
        assert kept == afresh
