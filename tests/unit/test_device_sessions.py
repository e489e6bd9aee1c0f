"""The Device aggregate's rule for SDK sessions (issue 13 §1), with no store: which anonymousId
starts a session, which is late, and that a replay of its events remembers the same."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from idstitch.domain.device import RECENT_SESSIONS, Device, Recorded, project_device
from idstitch.domain.events import Identified, IdentityCleared, ProfileAttributesChanged

T = datetime(2026, 1, 1, tzinfo=UTC)


def traits(device: Device, sdk: str | None, n: int) -> list[Recorded]:
    device.set_profile_attributes({"n": n}, {}, [], f"m{n}", T, T, sdk)
    return device.collect_events()


def test_the_first_anonymous_id_is_adopted_a_new_one_resets_an_old_one_is_late() -> None:
    device = Device("phone")
    (adopted,) = traits(device, "a1", 1)
    assert isinstance(adopted.event, ProfileAttributesChanged)
    assert (adopted.event.sdk_anonymous_id, adopted.event.late) == ("a1", False)
    assert traits(device, "a1", 2)[0].event.sdk_anonymous_id is None  # nothing new to record
    reset, message = traits(device, "a2", 3)
    assert isinstance(reset.event, IdentityCleared)
    assert (reset.event.generation, reset.event.sdk_anonymous_id, reset.event.message_id) == (
        1, "a2", "m3#reset")
    assert message.event.sdk_anonymous_id is None
    (late,) = traits(device, "a1", 4)
    assert (late.event.sdk_anonymous_id, late.event.late) == ("a1", True)
    assert (device.session, device.generation) == ("a2", 1)


def test_a_late_identify_does_not_identify_the_device() -> None:
    device = Device("phone")
    device.identify("u-100", {}, "m1", T, T, "a1")
    traits(device, "a2", 2)
    device.identify("u-100", {}, "m3", T, T, "a1")
    (event,) = [r.event for r in device.collect_events()]
    assert isinstance(event, Identified) and event.late
    assert device.user_id is None and not device.identified


def test_a_duplicate_message_records_no_reset() -> None:
    device = Device("phone")
    traits(device, "a1", 1)
    traits(device, "a2", 2)
    assert not device.set_profile_attributes({"n": 2}, {}, [], "m2", T, T, "a2")
    assert device.collect_events() == []


def test_an_explicit_clear_ends_the_session() -> None:
    device = Device("phone")
    traits(device, "a1", 1)
    device.clear_identify("c", T, T)
    device.collect_events()
    assert traits(device, "a1", 2)[0].event.late  # late, after the clear
    assert traits(device, "a2", 3)[0].event.sdk_anonymous_id == "a2"  # adopted, no reset


def test_the_memory_of_ended_sessions_is_bounded() -> None:
    device = Device("phone")
    for n in range(RECENT_SESSIONS + 2):
        traits(device, f"a{n}", n)
    assert len(device.ended) == RECENT_SESSIONS
    assert traits(device, "a1", 1000)[0].event.late
    # Older than remembered: taken for a new session (a reset).
    assert isinstance(traits(device, "a0", 1001)[0].event, IdentityCleared)


@given(st.lists(st.tuples(st.sampled_from(["a1", "a2", "a3", None]), st.booleans()),
                max_size=30))
def test_a_replay_remembers_what_recording_decided(steps: list[tuple[str | None, bool]]) -> None:
    device = Device("phone")
    events: list[Recorded] = []
    for n, (sdk, login) in enumerate(steps):
        if login:
            device.identify(f"u{n % 3}", {}, f"m{n}", T, T, sdk)
        else:
            device.set_profile_attributes({"n": n}, {}, [], f"m{n}", T, T, sdk)
        events.extend(device.collect_events())
    replayed = project_device(None, events)
    if not events:
        return
    assert replayed is not None
    assert (replayed.session, list(replayed.ended), replayed.user_id, replayed.generation) == (
        device.session, list(device.ended), device.user_id, device.generation)
