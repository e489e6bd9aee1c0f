"""For all command sequences: a custom projection kept current command by command holds what a
rebuild of it from position 0 holds (issue 14, section 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idstitch
from idstitch.testing import FrozenClock
from idstitch.testing_projections import ChangeLog, Counter

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
devices = st.sampled_from(["d1", "d2", "d3", "d4"])
users = st.sampled_from(["u1", "u2", "u3", "a@x.io", "b@x.io"])
keys = st.sampled_from(["plan", "email", "k"])
commands = st.lists(st.one_of(
    st.tuples(st.just("identify"), devices, users, keys, st.integers(0, 3), st.integers(-20, 20)),
    st.tuples(st.just("attrs"), devices, keys, st.integers(0, 3), st.integers(-20, 20)),
    st.tuples(st.just("clear"), devices),
    st.tuples(st.just("token"), devices, st.sampled_from(["t1", "t2", "t3"])),
    st.tuples(st.just("untoken"), devices, st.sampled_from(["t1", "t2", "t3"])),
    st.tuples(st.just("device"), devices, st.integers(0, 3)),
), min_size=1, max_size=40)


def run(ws: idstitch.Workspace, script: list[tuple[Any, ...]]) -> None:
    for n, (verb, device, *rest) in enumerate(script):
        if verb == "identify":
            user, key, value, skew = rest
            ws.identify(device, user, {key: value}, timestamp=T0 + timedelta(seconds=n + skew))
        elif verb == "attrs":
            key, value, skew = rest
            ws.set_profile_attributes(device, {key: value},
                                      timestamp=T0 + timedelta(seconds=n + skew))
        elif verb == "clear":
            ws.clear_identify(device)
        elif verb == "token":
            ws.register_device_token(device, rest[0], platform="ios")
        elif verb == "untoken":
            ws.remove_device_token(device, rest[0])
        else:
            ws.set_device_attributes(device, {"v": rest[0]})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands)
def test_rebuild_of_a_custom_projection_equals_incremental(script: list[tuple[Any, ...]]) -> None:
    ws = idstitch.open("memory:", clock=FrozenClock(T0), projections=[ChangeLog(), Counter()])
    half = len(script) // 2
    run(ws, script[:half])
    # As a new process would: the stream of Changes starts cold in the middle of the log, and
    # refolds each person's state there from its past.
    ws._services.projector.custom._streams.clear()
    run(ws, script[half:])
    incremental = ws.projection_db("change_log").query(
        "SELECT position, change FROM change_log ORDER BY position")
    counts = ws.projection_db("counter").query("SELECT event, n FROM counts ORDER BY event")
    assert [p for p, _ in incremental] == list(range(1, ws.log.head() + 1))
    ws.rebuild(["change_log", "counter"])
    assert ws.projection_db("change_log").query(
        "SELECT position, change FROM change_log ORDER BY position") == incremental
    assert ws.projection_db("counter").query("SELECT event, n FROM counts ORDER BY event") == counts
