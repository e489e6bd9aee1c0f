"""Rules the first review found broken or untested (most of these fail on the code before the fix)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from idstitch.domain.device import anonymous_id_for, anonymous_person_id

import idstitch
from idstitch.errors import InvalidCommand, UnknownPerson
from idstitch.testing import recorded_events
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def iso(n: int) -> str:
    return (T0 + timedelta(seconds=n)).isoformat()


def identify(device: str, user: str | None, traits: dict[str, Any], n: int) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "identify", "anonymousId": device, "traits": traits,
                           "messageId": f"m{n}", "timestamp": iso(n)}
    if user is not None:
        msg["userId"] = user
    return msg


def token(device: str, tok: str, n: int, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "track", "event": "Device Created or Updated", "anonymousId": device,
            "messageId": f"m{n}", "timestamp": iso(n), "properties": props or {},
            "context": {"device": {"id": device, "token": tok, "type": "ios"}}}


def workload(seed: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        device, user = f"d{rng.randrange(12)}", rng.choice([None, f"u{rng.randrange(5)}"])
        if rng.random() < 0.4:
            out.append(token(device, f"t{rng.randrange(6)}", i))
        else:
            out.append(identify(device, user, {f"k{rng.randrange(3)}": i}, i))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_batch_size_does_not_change_the_outcome(seed: int) -> None:
    messages = workload(seed, 300)
    dumps = []
    for batch_size in (1, 7, 1000):
        ws = idstitch.open("memory:")
        ws.ingest(messages, batch_size=batch_size)
        dumps.append(ws.dump())
    assert dumps[0] == dumps[1] == dumps[2]


def test_a_token_moves_to_the_last_device_within_one_batch(ws: Workspace) -> None:
    ws.ingest([token("A", "T", 0), identify("B", None, {}, 1), token("B", "T", 2),
               identify("A", None, {}, 3)], batch_size=1000)
    assert ws.device("A").token is None  # type: ignore[union-attr]
    assert ws.device("B").token == "T"  # type: ignore[union-attr]


def test_a_callers_later_change_cannot_reach_the_record(ws: Workspace) -> None:
    traits: dict[str, Any] = {"address": {"zip": "0150"}}
    ws.identify("d1", "u1", traits)
    traits["address"]["zip"] = "NEVER-LOGGED"
    ws.set_profile_attributes("d1", {"plan": "pro"})
    assert ws.profile("u1").attributes == {"address": {"zip": "0150"}, "plan": "pro"}  # type: ignore[union-attr]
    rows = ws.dump()
    ws.rebuild()
    assert ws.dump() == rows


@pytest.mark.parametrize(("value", "why"), [(2**64, "too large"), (-(2**63) - 1, "too large"),
                                            ("\ud800", "not valid text")])
def test_values_the_codec_cannot_store_are_invalid(ws: Workspace, value: object, why: str) -> None:
    with pytest.raises(InvalidCommand, match=why):
        ws.set_profile_attributes("d1", {"x": {"deep": value}})
    report = ws.ingest([identify("d1", None, {"x": value}, 1), identify("d2", "u2", {}, 2)])
    assert [i for i, _ in report.rejected] == [0] and report.accepted == 1
    assert ws.profile("u2") is not None


def test_a_surrogate_in_an_id_is_invalid(ws: Workspace) -> None:
    with pytest.raises(InvalidCommand, match="device_id"):
        ws.identify("d\ud800", "u1")


def test_a_rejected_multi_part_message_leaves_nothing(ws: Workspace) -> None:
    bad = token("phone", "tok-1", 1, {"device_os": "18", "bio": "x" * 2000})
    report = ws.ingest([bad])
    assert [i for i, _ in report.rejected] == [0]
    assert ws.device("phone") is None
    assert recorded_events(ws) == []


def test_cio_of_a_person_retired_earlier_in_the_same_batch_is_rejected(ws: Workspace) -> None:
    retired = anonymous_person_id(anonymous_id_for("tab", 0))
    messages = [identify("tab", None, {"x": 1}, 0), identify("phone", "u1", {}, 1),
                identify("tab", "u1", {}, 2), identify("d3", f"cio_{retired}", {}, 3)]
    report = ws.ingest(messages, batch_size=1000)
    assert [i for i, _ in report.rejected] == [3]
    assert "merged into" in report.rejected[0][1]


def test_cio_of_an_anonymous_person_is_rejected(ws: Workspace) -> None:
    ws.set_profile_attributes("tab", {"x": 1})
    anonymous = ws.profile_of_device("tab").person_id  # type: ignore[union-attr]
    with pytest.raises(UnknownPerson, match="anonymous"):
        ws.identify("d3", f"cio_{anonymous}")


def test_a_stale_cache_does_not_refuse_a_logout(make_durable_ws: WorkspaceFactory) -> None:
    first = make_durable_ws()
    second = make_durable_ws(first.url)
    first.activate("phone")  # `first` caches the device anonymous
    second.identify("phone", "u1")
    assert first.logout("phone") is not None
    assert not first.profile_of_device("phone").identified  # type: ignore[union-attr]


def test_a_stale_cache_does_not_drop_collected_attributes(make_durable_ws: WorkspaceFactory) -> None:
    first = make_durable_ws()
    second = make_durable_ws(first.url)
    first.activate("tablet", auto_track_device_attributes=False)
    second.activate("tablet", auto_track_device_attributes=True)
    assert first.collect_device_attributes("tablet", {"device_os": "18"}) is not None
    assert first.device("tablet").collected == {"device_os": "18"}  # type: ignore[union-attr]


def test_a_batch_refused_by_another_writer_is_written_message_by_message(
    make_durable_ws: WorkspaceFactory,
) -> None:
    first = make_durable_ws()
    second = make_durable_ws(first.url)
    first.ingest([identify("D", "u1", {"a": 1}, 0)])  # `first` caches D
    second.set_profile_attributes("D", {"b": 2})  # ... which is now stale
    report = first.ingest([identify("E", "u2", {"e": 1}, 1), identify("D", None, {"c": 3}, 2),
                           identify("D", None, {"c": 3}, 2)])
    assert (report.accepted, report.duplicates, report.rejected) == (2, 1, [])
    assert first.profile("u1").attributes == {"a": 1, "b": 2, "c": 3}  # type: ignore[union-attr]
    assert first.profile("u2").attributes == {"e": 1}  # type: ignore[union-attr]


def test_odd_nested_values_are_rejected_not_a_crash(ws: Workspace) -> None:
    import types

    good = identify("d1", "u1", {"plan": "pro"}, 1)
    for bad in ({"a": {"\ud800": 1}}, {"a": types.MappingProxyType({"b": 1})}):
        with pytest.raises(InvalidCommand, match="traits"):
            ws.set_profile_attributes("d0", bad)
        report = ws.ingest([identify("d2", "u2", bad, 0), good])
        assert [i for i, _ in report.rejected] == [0]
    assert ws.profile("u1") is not None and ws.profile("u2") is None


@pytest.mark.parametrize("field", ["device_id", "user_id"])
def test_a_nul_in_an_id_is_invalid_on_every_store(ws: Workspace, field: str) -> None:
    args = {"device_id": "d1", "user_id": "u1"} | {field: "a\x00b"}
    with pytest.raises(InvalidCommand, match="NUL"):
        ws.identify(args["device_id"], args["user_id"])
    report = ws.ingest([identify("d2", "a\x00b", {}, 0), identify("d3", "u3", {}, 1)])
    assert [i for i, _ in report.rejected] == [0]
    assert ws.profile("u3") is not None  # the workspace still works


def test_rows_of_the_other_policy_are_never_served(make_durable_ws: WorkspaceFactory) -> None:
    from idstitch.errors import PolicyMismatch

    switching = make_durable_ws(anonymous_merge="switch")
    switching.identify("phone", "alice")
    merging = make_durable_ws(switching.url, anonymous_merge="merge")  # rebuilds under merge
    assert merging.profile("alice") is not None
    with pytest.raises(PolicyMismatch):
        switching.profile("alice")  # up to date, but built under the other policy
    head = switching.log.head()
    with pytest.raises(PolicyMismatch):
        switching.ingest([identify("tablet", "alice", {}, 5)])
    assert switching.log.head() == head  # refused before anything was recorded


def test_the_fallback_counts_a_concurrent_duplicate_as_a_duplicate(
    make_durable_ws: WorkspaceFactory,
) -> None:
    first = make_durable_ws()
    second = make_durable_ws(first.url)
    first.ingest([identify("D", "u1", {}, 1)])  # `first` caches D
    second.ingest([identify("D", None, {"x": 1}, 2)])  # m2 recorded by the other process
    report = first.ingest([identify("D", None, {"x": 1}, 2)])
    assert (report.accepted, report.duplicates, report.rejected) == (0, 1, [])
