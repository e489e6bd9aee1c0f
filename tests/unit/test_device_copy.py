"""A copy of a device (what a writer keeps while another writer shares the device, to decide
again from it instead of loading the device's history), with no store: from the moment it is
taken, the copy decides every command exactly as the device does, and what it decides leaves
the device as it was."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from idstitch.domain.commands import (
    ClearIdentify,
    CollectDeviceAttributes,
    DeviceCommand,
    Identify,
    RegisterDeviceToken,
    SetProfileAttributes,
)
from idstitch.domain.decisions import Decisions
from idstitch.domain.device import Device

T = datetime(2026, 1, 1, tzinfo=UTC)
DEVICE = "phone"


def command(kind: str, n: int, value: str, sdk: str | None) -> DeviceCommand:
    """One command of a few kinds; message ids repeat (``n`` is drawn from a few), so that
    the recent message ids decide duplicates, and SDK sessions repeat, so that ended sessions
    decide late messages."""
    message_id = f"m{n}"
    if kind == "identify":
        return Identify(device_id=DEVICE, user_id=f"user-{value}", message_id=message_id,
                        timestamp=T, sdk_anonymous_id=sdk, traits={"v": value})
    if kind == "traits":
        return SetProfileAttributes(device_id=DEVICE, traits={"v": value},
                                    message_id=message_id, timestamp=T, sdk_anonymous_id=sdk)
    if kind == "collect":
        context: dict[str, Any] = {"device_os": value, "app_version": n % 2}
        return CollectDeviceAttributes(device_id=DEVICE, context=context,
                                       message_id=message_id, timestamp=T, changes_only=True)
    if kind == "token":
        return RegisterDeviceToken(device_id=DEVICE, token=f"tok-{value}",
                                   message_id=message_id, timestamp=T)
    return ClearIdentify(device_id=DEVICE, message_id=message_id, timestamp=T)


COMMANDS = st.lists(st.builds(
    command, st.sampled_from(["identify", "traits", "collect", "token", "clear"]),
    st.integers(0, 12), st.sampled_from("abc"), st.sampled_from([None, "s1", "s2", "s3"])),
    max_size=25)


def decide(device: Device, commands: list[DeviceCommand]) -> list[tuple[int, Any]]:
    """What the device records for the commands: (version, event) of each."""
    for cmd in commands:
        device.handle(cmd, T)
    return [(r.originator_version, r.event) for r in device.collect_events()]


@given(before=COMMANDS, after=COMMANDS)
def test_a_copy_decides_as_the_device_and_leaves_it_as_it_was(
        before: list[DeviceCommand], after: list[DeviceCommand]) -> None:
    device = Device(DEVICE)
    decide(device, before)
    twin = device.copy()
    from_twin = decide(twin, after)
    # Had the copy shared a container with the device (recent message ids, ended sessions,
    # collected attributes), the device would now decide otherwise.
    assert decide(device, after) == from_twin
    assert twin.version == device.version


def test_a_copy_of_the_decisions_stream_keeps_its_undone_merges_apart() -> None:
    stream = Decisions()
    stream.undone.add("merge-1")
    stream.version = 3
    twin = stream.copy()
    twin.undone.add("merge-2")
    assert (twin.version, stream.undone) == (3, {"merge-1"})
