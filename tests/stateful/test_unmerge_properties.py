"""An unmerge is exact, for all call sequences (hypothesis), on every store.

- **explicit**: calls, ``merge_persons(alice, bob)``, more calls, ``unmerge``, more calls: every
  profile (person id, identifiers, attributes, devices, anonymous ids) equals that of a
  workspace fed the same calls without the merge, and ``merges()`` differs by the merge's own
  record only (kind ``unmerged``); the same after a rebuild of either. Explicit merges of
  other pairs among the calls after it go, once it is undone, to the side of the identifiers
  they were given (one naming bob while bob was merged into alice joins bob's side).
- **automatic**: an anonymous device identified as an existing user is merged into it; undone,
  every profile equals that of a workspace where that identify was a switch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idstitch
from idstitch.errors import IdstitchError
from idstitch.testing import FrozenClock
from idstitch.workspace import Workspace

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEVICES = ["d1", "d2", "d3"]
USERS = ["alice", "bob", "carol@example.com"]
KEYS = ["plan", "color", "email"]

device = st.sampled_from(DEVICES)
offset = st.integers(0, 50)
value = st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["x", "a@example.com"]))
traits = st.dictionaries(st.sampled_from(KEYS), value, max_size=2)


def calls(devices: st.SearchStrategy[str], *, clear: bool = True, merges: bool = False
          ) -> st.SearchStrategy[Any]:
    """Device calls (no cio_ ids: whether one names a live person depends on the merge), and
    with ``merges``, explicit merges of two users."""
    options = [
        st.tuples(st.just("identify"), devices, st.sampled_from(USERS), traits, offset),
        st.tuples(st.just("attributes"), devices, traits, offset),
        st.tuples(st.just("token"), devices, st.sampled_from(["t1", "t2"])),
    ]
    if clear:
        options.append(st.tuples(st.just("clear"), devices))
    if merges:
        options.append(st.tuples(st.just("merge"), st.sampled_from(USERS),
                                 st.sampled_from(USERS)))
    return st.lists(st.one_of(*options), max_size=8)


def play(ws: Workspace, clock: FrozenClock, script: list[tuple[Any, ...]], start: int
         ) -> list[tuple[Any, ...]]:
    """Run the calls; the ones recorded (an explicit merge of two users who are one person,
    or not both identified, is refused)."""
    recorded: list[tuple[Any, ...]] = []
    for name, dev, *args in script:
        # Client times count the recorded calls only: a merge refused here is left out of the
        # script the other workspace plays, and must not shift the calls after it.
        step = start + len(recorded)
        clock.advance(seconds=1)
        ts = T0 + timedelta(seconds=step)
        recorded.append((name, dev, *args))
        if name == "merge":
            try:
                ws.merge_persons(dev, args[0], reason="later merge")
            except IdstitchError:
                recorded.pop()
        elif name == "identify":
            ws.identify(dev, args[0], args[1], timestamp=ts - timedelta(seconds=args[2]))
        elif name == "attributes":
            ws.set_profile_attributes(dev, args[0], timestamp=ts - timedelta(seconds=args[1]))
        elif name == "token":
            ws.register_device_token(dev, args[0], platform="ios", timestamp=ts)
        else:
            ws.clear_identify(dev, timestamp=ts)
    return recorded


def state(ws: Workspace, devices: list[str], undone: str) -> dict[str, Any]:
    """Every profile a user or device finds, and its merges but the undone one's record."""
    out: dict[str, Any] = {}
    found = [(u, ws.profile(u)) for u in USERS] + [(d, ws.profile_of_device(d)) for d in devices]
    for key, profile in found:
        if profile is None:
            out[key] = None
            continue
        # An explicit merge's id counts the decisions before it, the undone one too (a later
        # merge can take the undone one's id where it was never recorded): told apart by what
        # it joined instead.
        out[key] = (profile.person_id, profile.identifiers, profile.attributes,
                    sorted(d.device_id for d in profile.devices), sorted(profile.anonymous_ids),
                    [(m.kind, m.source, m.target) if m.kind == "explicit" else (m.merge_id, m.kind)
                     for m in ws.merges(key)
                     if not (m.merge_id == undone and m.kind == "unmerged")])
    return out


SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
START = [("identify", "d1", "alice", {"plan": "a"}, 0), ("identify", "d2", "bob", {"plan": "b"}, 0)]


@SETTINGS
@given(before=calls(device), during=calls(device, merges=True),
       after=calls(device, merges=True))
def test_an_unmerged_explicit_merge_leaves_what_no_merge_leaves(
    url_factory: Any, before: list[Any], during: list[Any], after: list[Any],
) -> None:
    merged_clock, plain_clock = FrozenClock(T0), FrozenClock(T0)
    with (idstitch.open(url_factory(), clock=merged_clock) as ws,
          idstitch.open(url_factory(), clock=plain_clock) as plain):
        first = [*START, *before]
        play(ws, merged_clock, first, 0)
        play(plain, plain_clock, first, 0)
        try:
            merge_id = ws.merge_persons("alice", "bob", reason="looked alike")
        except IdstitchError:
            return  # alice and bob are one person already, or one is not identified now
        during = play(ws, merged_clock, during, len(first))
        ws.unmerge(merge_id, reason="they are not")
        after = play(ws, merged_clock, after, len(first) + len(during))
        # The calls the merged workspace recorded, without the merge: every one of them is
        # recorded here too (a merge it could make, this one can).
        assert play(plain, plain_clock, [*during, *after], len(first)) == [*during, *after]

        expected = state(plain, DEVICES, merge_id)
        assert state(ws, DEVICES, merge_id) == expected
        for side in ("alice", "bob"):
            assert merge_id in {m.merge_id for m in ws.merges(side)
                                if m.kind == "unmerged" and m.reason == "they are not"} or (
                ws.profile(side) is None)
        ws.rebuild()
        plain.rebuild()
        assert state(ws, DEVICES, merge_id) == state(plain, DEVICES, merge_id) == expected


@SETTINGS
@given(before=calls(device, clear=False), anonymous=st.lists(traits, min_size=1, max_size=3),
       after=calls(st.sampled_from([*DEVICES, "d9"]), clear=False))
def test_an_unmerged_anonymous_merge_leaves_what_a_switch_leaves(
    url_factory: Any, before: list[Any], anonymous: list[dict[str, Any]], after: list[Any],
) -> None:
    merged_clock, plain_clock = FrozenClock(T0), FrozenClock(T0)
    with (idstitch.open(url_factory(), clock=merged_clock) as ws,
          idstitch.open(url_factory(), anonymous_merge="switch", clock=plain_clock) as plain):
        # Every device is identified before d9 identifies (no clear): the identify of d9 is
        # the only one that merges under the merge policy.
        script = [*START, ("identify", "d3", "carol@example.com", {}, 0), *before,
                  *[("attributes", "d9", t, 0) for t in anonymous],
                  ("identify", "d9", "alice", {"color": 1}, 0)]
        play(ws, merged_clock, script, 0)
        play(plain, plain_clock, script, 0)
        [automatic] = [m for m in ws.merges("alice") if m.kind == "merged"]
        ws.unmerge(automatic.merge_id, reason="a shared tablet")
        play(ws, merged_clock, after, len(script))
        play(plain, plain_clock, after, len(script))

        devices = [*DEVICES, "d9"]
        undone = automatic.merge_id
        assert state(ws, devices, undone) == state(plain, devices, undone)
        [record] = [m for m in ws.merges("alice") if m.merge_id == undone]
        assert (record.kind, record.reason) == ("unmerged", "a shared tablet")
        ws.rebuild()
        assert state(ws, devices, undone) == state(plain, devices, undone)
