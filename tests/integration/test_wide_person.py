"""One user on many devices (issue 16, item 5): a person's lists are indexed once it is wide,
with the same answers as before, and a person takes at most MAX_DEVICES devices: a further
identify is recorded, not applied, and leaves a refusal the audit shows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from idstitch.projections.identity.person_index import INDEX_FROM, MAX_DEVICES

import idstitch
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def identifies(first: int, count: int, user: str = "wide") -> Iterator[dict[str, Any]]:
    for i in range(first, first + count):
        yield {"type": "identify", "anonymousId": f"device-{i}", "userId": user,
               "messageId": f"{user}-{i}", "timestamp": (T0 + timedelta(seconds=i)).isoformat()}


def test_a_wide_person_keeps_its_devices_stints_and_merges_in_order(
    make_ws: WorkspaceFactory,
) -> None:
    ws = make_ws()
    n = INDEX_FROM + 36
    ws.ingest(list(identifies(0, n)), batch_size=40)
    # Ten devices switch away, five come back (each a leave, a join, a merge record).
    for i in range(10, 20):
        ws.identify(f"device-{i}", "other")
    middle = ws.log.head()
    for i in range(10, 15):
        ws.identify(f"device-{i}", "wide")
    profile = ws.profile("wide")
    assert profile is not None
    expected = ([f"device-{i}" for i in range(10)] + [f"device-{i}" for i in range(20, n)]
                + [f"device-{i}" for i in range(10, 15)])
    assert [d.device_id for d in profile.devices] == expected
    then = ws.profile_as_of("wide", middle)
    assert then is not None
    assert {d.device_id for d in then.devices} == {f"device-{i}" for i in range(n)} - {
        f"device-{i}" for i in range(10, 20)}
    merges = ws.merges("wide")
    assert len({m.merge_id for m in merges}) == len(merges) == n + 15
    other = ws.profile("other")
    assert other is not None and {d.device_id for d in other.devices} == {
        f"device-{i}" for i in range(15, 20)}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_person_takes_at_most_max_devices(kind: str, tmp_path: Path) -> None:
    url = "memory:" if kind == "memory" else f"sqlite:///{tmp_path}/wide.db"
    with idstitch.open(url, clock=lambda: T0 + timedelta(days=1)) as ws:
        ws.ingest(list(identifies(0, MAX_DEVICES)), parallel=False)
        position = ws.identify("one-more", "wide", {"plan": "pro"})
        assert isinstance(position, int)  # recorded
        wide = ws.profile("wide")
        assert wide is not None and len(wide.devices) == MAX_DEVICES
        assert "plan" not in wide.attributes
        mine = ws.profile_of_device("one-more")
        assert mine is not None and mine.person_id != wide.person_id
        assert not mine.identified and "plan" not in mine.attributes
        refused = [r for c in ws.history(mine.person_id) if c.position == position
                   for r in c.refused]
        assert [(r.kind, r.value, r.held_by) for r in refused] == [
            ("id", "wide", wide.person_id)]
        assert f"already has {MAX_DEVICES} devices" in refused[0].reason
        # A device already on the person goes on as before.
        assert ws.identify("device-7", "wide", {"plan": "team"}) is not None
        again = ws.profile("wide")
        assert again is not None and again.attributes["plan"] == "team"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, INDEX_FROM + 15), st.sampled_from(["wide", "a", "b"])),
                max_size=40))
def test_a_wide_persons_devices_follow_the_model(moves: list[tuple[int, str]]) -> None:
    """Whatever devices switch between users, a wide person's devices (indexed) are the model's:
    each user's devices in the order they joined, a device on one user at a time."""
    model: dict[str, list[str]] = {"wide": [f"device-{i}" for i in range(INDEX_FROM)]}
    with idstitch.open("memory:", clock=lambda: T0 + timedelta(days=1)) as ws:
        ws.ingest(list(identifies(0, INDEX_FROM)), parallel=False)
        for device, user in moves:
            device_id = f"device-{device}"
            ws.identify(device_id, user)
            if device_id not in model.get(user, []):
                for devices in model.values():
                    if device_id in devices:
                        devices.remove(device_id)
                model.setdefault(user, []).append(device_id)
        for user, devices in model.items():
            profile = ws.profile(user)
            assert profile is not None
            assert [d.device_id for d in profile.devices] == devices
