"""A device settles the very context dict it last found holding nothing new without comparing
again (ingest shares one dict per distinct context text), but only while what it collected has
not changed since: a context it held, changed by another collection, is recorded back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from idstitch.domain.commands import CollectDeviceAttributes
from idstitch.domain.device import Device
from idstitch.domain.events import DeviceAttributesCollected

T = datetime(2026, 1, 1, tzinfo=UTC)
VALUES = st.sampled_from([0, 1, 1.0, True, False, "", "1"])
ATTRS = st.dictionaries(st.sampled_from("abc"), VALUES, max_size=3)


def collect(device: Device, attributes: dict[str, Any], n: int, *, context: bool = True
            ) -> dict[str, Any] | None:
    device.handle(CollectDeviceAttributes(device_id=device.device_id, context=attributes,
                                          message_id=f"m{n}", timestamp=T,
                                          changes_only=context), T)
    events = device.collect_events()
    if not events:
        return None
    (recorded,) = events
    assert isinstance(recorded.event, DeviceAttributesCollected)
    return recorded.event.attributes


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


@given(ATTRS, st.lists(ATTRS, max_size=4))
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
