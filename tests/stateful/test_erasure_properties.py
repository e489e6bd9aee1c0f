"""Forgetting one person leaves every other person exactly as it was (hypothesis).

The statement: for random traffic of several users, each on devices of its own and with an
email of its own (no device, id or email shared with another user), ``ws.forget`` of one user
leaves the profile of every other user equal to its profile before the forget.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idstitch
from idstitch.workspace import Workspace

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
USERS = ("ann", "bob", "cyd")

step = st.tuples(
    st.sampled_from(USERS),
    st.integers(0, 1),  # which of the user's two devices
    st.sampled_from(("identify", "set", "anon_set", "token", "device", "clear")),
    st.sampled_from(("plan", "city", "email_alt")),
    st.sampled_from(("a", "b", "c")),
)


def play(ws: Workspace, script: list[tuple[str, int, str, str, str]]) -> None:
    for i, (user, n, op, key, value) in enumerate(script):
        device = f"{user}-dev{n}"
        ts = T0 + timedelta(seconds=i)
        if op == "identify":
            ws.identify(device, user, {"email": f"{user}@example.com", key: value}, timestamp=ts)
        elif op in ("set", "anon_set"):
            ws.set_profile_attributes(device, {key: value}, timestamp=ts)
        elif op == "token":
            ws.register_device_token(device, f"tok-{user}-{n}-{value}", timestamp=ts)
        elif op == "device":
            ws.set_device_attributes(device, {key: value}, timestamp=ts)
        else:
            ws.clear_identify(device, timestamp=ts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(step, min_size=1, max_size=25), victim=st.sampled_from(USERS))
def test_forgetting_one_user_leaves_the_others_untouched(
        script: list[tuple[str, int, str, str, str]], victim: str) -> None:
    ws = idstitch.open("memory:")
    try:
        play(ws, script)
        others = [u for u in USERS if u != victim]
        before = {u: ws.profile(u) for u in others}
        devices_before = {f"{u}-dev{n}": ws.device(f"{u}-dev{n}")
                          for u in others for n in (0, 1)}
        if ws.profile(victim) is None:
            return  # never identified: nothing to forget by that id
        ws.forget(victim, reason="erasure request")
        assert ws.profile(victim) is None
        assert ws.profile(f"{victim}@example.com") is None
        assert {u: ws.profile(u) for u in others} == before
        assert {d: ws.device(d) for d in devices_before} == devices_before
    finally:
        ws.close()
