"""The device's rule for a message's context (``changes_only``), with no store: it records the
attributes whose value or type differs from what it holds, and nothing when none does; and the
checks settle the times of a message's commands alike, whichever command comes first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from idstitch.domain.commands import CollectDeviceAttributes, Identify
from idstitch.domain.device import Device
from idstitch.domain.events import DeviceAttributesCollected

from idstitch.service.checks import Entry, check

T = datetime(2026, 1, 1, tzinfo=UTC)

# Values that compare equal across types (1, 1.0, True) are where a rule by == alone would
# record too little.
VALUES = st.one_of(st.sampled_from([0, 1, 1.0, True, False, None, "", "1", 0.0]),
                   st.dictionaries(st.sampled_from("xy"), st.sampled_from([1, 1.0, True]),
                                   max_size=2))
ATTRS = st.dictionaries(st.sampled_from("abcd"), VALUES, max_size=4)


def collect(device: Device, attributes: dict[str, Any], n: int, *, context: bool = True
            ) -> dict[str, Any] | None:
    """What one collection records (None: nothing); ``context``: a message's context (only
    its changes are recorded), else a device message's properties."""
    device.handle(CollectDeviceAttributes(device_id=device.device_id, context=attributes,
                                          message_id=f"m{n}", timestamp=T,
                                          changes_only=context), T)
    events = device.collect_events()
    if not events:
        return None
    (recorded,) = events
    assert isinstance(recorded.event, DeviceAttributesCollected)
    return recorded.event.attributes


@given(ATTRS, ATTRS)
def test_a_context_records_exactly_the_values_that_changed_in_value_or_type(
    held: dict[str, Any], context: dict[str, Any],
) -> None:
    device = Device("phone")
    collect(device, dict(held), 1)
    changed = {k: v for k, v in context.items()
               if k not in held or held[k] != v or type(held[k]) is not type(v)}
    assert collect(device, dict(context), 2) == (changed or None)
    # What it now holds, each value of the type last sent: the same context again is nothing.
    assert collect(device, dict(context), 3) is None


class Drifting(tzinfo):
    """A zone whose offset moves an hour every time it is asked: only its own code knows it."""

    def __init__(self) -> None:
        self.hours = 0

    def utcoffset(self, dt: datetime | None) -> timedelta:
        self.hours += 1
        return timedelta(hours=self.hours)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


def test_the_commands_of_a_message_settle_the_same_times_alike() -> None:
    entry = Entry(T, owned=True)
    sent, stamp = T - timedelta(seconds=30), T - timedelta(seconds=40)
    checked = []
    for n in range(2):
        checked.append(check(Identify(device_id="phone", user_id="u1", message_id=f"m{n}",
                                      timestamp=stamp, sent_at=sent), entry))
        checked.append(check(CollectDeviceAttributes(
            device_id="phone", context={"a": 1}, message_id=f"m{n}#context", timestamp=stamp,
            sent_at=sent, changes_only=True), entry))
    # Corrected for the skew (received now, sent 30 s earlier): 10 s before now, each.
    assert {c.timestamp for c in checked} == {T - timedelta(seconds=10)}  # type: ignore[union-attr]
    # The same time objects received at another moment correct to another time.
    later = check(Identify(device_id="phone", user_id="u1", message_id="m9", timestamp=stamp,
                           sent_at=sent), Entry(T + timedelta(seconds=5), owned=True))
    assert later.timestamp == T - timedelta(seconds=5)  # type: ignore[union-attr]


def test_a_time_in_a_zone_of_its_own_is_converted_for_every_command() -> None:
    entry = Entry(T, owned=True)
    stamp = datetime(2026, 1, 1, 12, tzinfo=Drifting())
    first, second = (check(Identify(device_id="phone", user_id="u1", message_id=f"m{n}",
                                    timestamp=stamp), entry).timestamp  # type: ignore[union-attr]
                     for n in range(2))
    # The zone's offset moved between the two: each command asked it (neither took the
    # other's answer).
    assert first != second


# A device settles the very context dict it last found holding nothing new without comparing
# again (ingest shares one dict per distinct context text), but only while what it collected
# has not changed since: a context it held, changed by another collection, is recorded back.
MEMO_ATTRS = st.dictionaries(st.sampled_from("abc"), st.sampled_from([0, 1, 1.0, True, False, "", "1"]),
                             max_size=3)


def test_the_same_context_again_is_nothing_until_what_it_holds_changes() -> None:
    device = Device("phone")
    shared = {"os": "18.0", "wifi": True}
    assert collect(device, shared, 1) == shared
    assert collect(device, shared, 2) is None  # compared: holds nothing new (remembered)
    assert collect(device, shared, 3) is None  # the very dict: settled without comparing
    # Another collection (the properties of a device message) changes a value it held.
    assert collect(device, {"wifi": 1}, 4, context=False) == {"wifi": 1}
    # The remembered dict is news again: its value (of its type) is recorded back.
    assert collect(device, shared, 5) == {"wifi": True}
    assert collect(device, shared, 6) is None


@given(MEMO_ATTRS, st.lists(MEMO_ATTRS, max_size=4))
def test_a_shared_context_records_what_a_fresh_copy_would(shared: dict[str, Any],
                                                          between: list[dict[str, Any]]) -> None:
    """With collections in between, the shared dict records exactly what an equal fresh
    dict records on a device fed the same."""
    memo, fresh = Device("a"), Device("b")
    n = 0
    for other in [shared, *between, shared]:
        for attributes in (other, shared):
            n += 1
            assert (collect(memo, attributes, n)
                    == collect(fresh, dict(attributes), n))
    assert memo.collected == fresh.collected
