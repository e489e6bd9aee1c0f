"""The Device aggregate's rule for SDK sessions (issue 13 §1), with no store: which anonymousId
starts a session, which is late, and that a replay of its events remembers the same."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from idstitch.domain.commands import ClearIdentify, Identify, SetProfileAttributes
from idstitch.domain.device import RECENT_SESSIONS, Device, Recorded
from idstitch.domain.events import Identified, IdentityCleared, ProfileAttributesChanged

T = datetime(2026, 1, 1, tzinfo=UTC)


def traits(device: Device, sdk: str | None, n: int) -> list[Recorded]:
    device.handle(SetProfileAttributes(device_id=device.device_id, traits={"n": n},
                                       message_id=f"m{n}", timestamp=T, sdk_anonymous_id=sdk), T)
    return device.collect_events()


def identify(device: Device, user_id: str, n: int, sdk: str | None) -> None:
    device.handle(Identify(device_id=device.device_id, user_id=user_id, message_id=f"m{n}",
                           timestamp=T, sdk_anonymous_id=sdk), T)


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
    identify(device, "u-100", 1, "a1")
    traits(device, "a2", 2)
    identify(device, "u-100", 3, "a1")
    (event,) = [r.event for r in device.collect_events()]
    assert isinstance(event, Identified) and event.late
    assert device.user_id is None and not device.identified


def test_a_duplicate_message_records_no_reset() -> None:
    device = Device("phone")
    traits(device, "a1", 1)
    traits(device, "a2", 2)
    assert not device.handle(SetProfileAttributes(device_id="phone", traits={"n": 2},
                                                  message_id="m2", timestamp=T,
                                                  sdk_anonymous_id="a2"), T)
    assert device.collect_events() == []


def test_an_explicit_clear_ends_the_session() -> None:
    device = Device("phone")
    traits(device, "a1", 1)
    device.handle(ClearIdentify(device_id="phone", message_id="c", timestamp=T), T)
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
            identify(device, f"u{n % 3}", n, sdk)
            events.extend(device.collect_events())
        else:
            events.extend(traits(device, sdk, n))
    replayed = Device("phone")
    for recorded in events:
        replayed.apply(recorded.event)
    assert (replayed.session, list(replayed.ended), replayed.user_id, replayed.generation) == (
        device.session, list(device.ended), device.user_id, device.generation)


def erased(record: Recorded) -> Recorded:
    """The event as it reads once its person was forgotten: its anonymousId erased, its tag
    (plaintext) kept."""
    event = msgspec.structs.replace(record.event, sdk_anonymous_id=None, erased=True)
    return Recorded(record.originator_id, record.originator_version, event)


def tag(sdk_anonymous_id: str) -> str:
    return "t-" + sdk_anonymous_id[::-1]


def test_sessions_whose_anonymous_ids_read_erased_are_known_by_their_tags() -> None:
    """Replayed with the first session's events erased, a device still takes that session's
    messages for late once it ended, and the current session's for the current one, by their
    tags: no reset, no new session."""
    device = Device("phone")
    device.tagger = tag
    recorded = traits(device, "a1", 1) + traits(device, "a2", 2) + traits(device, "a2", 3)
    assert recorded[0].event.sdk_tag == tag("a1")
    replayed = Device("phone")
    replayed.tagger = tag
    for record in [erased(recorded[0]), *recorded[1:]]:
        replayed.apply(record.event)
        replayed.version = record.originator_version
    (late,) = traits(replayed, "a1", 4)
    assert (late.event.sdk_anonymous_id, late.event.sdk_tag, late.event.late) == (
        "a1", tag("a1"), True)
    only = Device("phone")  # its current session's adoption erased
    only.tagger = tag
    only.apply(erased(_adopted("a9")).event)
    assert traits(only, "a9", 5)[0].event.sdk_anonymous_id is None  # the same session
    assert only.generation == 0


def _adopted(sdk: str) -> Recorded:
    """A session's first message, as a device with a tagger records it."""
    device = Device("phone")
    device.tagger = tag
    return traits(device, sdk, 1)[0]
