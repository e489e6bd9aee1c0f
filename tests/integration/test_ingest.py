"""Bulk ingest of Segment-spec messages (issue 3), on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from idstitch.domain.device import anonymous_id_for, anonymous_person_id
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import IdentityProjection

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.service import background, ingest
from idstitch.testing import recorded_events
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
encode = msgspec.json.Encoder().encode


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def identify(device: str, user: str | None, traits: dict[str, Any], n: int) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "identify", "anonymousId": device, "traits": traits,
                           "messageId": f"m{n}", "timestamp": iso(n),
                           "context": {"device": {"id": device}}}
    if user is not None:
        msg["userId"] = user
    return msg


def device_updated(device: str, token: str, props: dict[str, Any], n: int) -> dict[str, Any]:
    return {"type": "track", "event": "Device Created or Updated", "anonymousId": device,
            "properties": props, "messageId": f"m{n}", "timestamp": iso(n),
            "context": {"device": {"id": device, "token": token, "type": "android"}}}


STORY: list[Any] = [
    identify("phone", None, {"plan": "trial"}, 1),
    encode(identify("phone", "u1", {"first_name": "Dana"}, 2)),
    encode(device_updated("phone", "tok-1", {"device_os": "14", "app_version": "2.0",
                                             "prefs": {"theme": "dark"}}, 3)).decode(),
    {"type": "screen", "anonymousId": "phone", "name": "Home"},
    {"type": "track", "event": "Added to cart", "anonymousId": "phone"},
    b"{not json",
    identify("tablet", "null", {}, 4),
    identify("tablet", "u1", {"bio": "x" * 2000}, 5),
    {"type": "fly", "anonymousId": "tablet"},
    identify("tablet", None, {"theme": "light"}, 6),
    encode(identify("tablet", "u1", {}, 7)),
    {"type": "track", "event": "Device Deleted", "anonymousId": "phone", "messageId": "m8",
     "timestamp": iso(8), "context": {"device": {"id": "phone", "token": "tok-1"}}},
    identify("phone", "u1", {"first_name": "Dana"}, 2),
]


def test_ingest_maps_reports_and_keeps_going(ws: Workspace) -> None:
    report = ws.ingest(STORY, batch_size=4)
    assert report.accepted == 6
    assert report.duplicates == 1
    assert report.ignored == 2
    assert [i for i, _ in report.rejected] == [5, 6, 7, 8]
    reasons = dict(report.rejected)
    assert "JSON" in reasons[5]
    assert "user_id" in reasons[6] and "placeholder" in reasons[6]
    assert "traits.bio" in reasons[7]
    assert "type" in reasons[8]
    person = ws.profile("u1")
    assert person is not None
    assert person.attributes == {"plan": "trial", "first_name": "Dana", "theme": "light"}
    devices = {d.device_id: d for d in person.devices}
    assert set(devices) == {"phone", "tablet"}
    assert devices["phone"].token is None  # Device Deleted
    assert devices["phone"].collected == {"device_os": "14", "app_version": "2.0"}
    assert devices["phone"].attributes == {"prefs": {"theme": "dark"}}
    assert devices["phone"].platform == "android"
    # A rejected message left nothing behind: no event mentions the oversized bio.
    assert all("bio" not in str(e) for _, e in recorded_events(ws))


def test_reingesting_the_same_input_adds_nothing(ws: Workspace) -> None:
    ws.ingest(STORY)
    head, rows = ws.log.head(), ws.dump()
    again = ws.ingest(STORY)
    assert again.accepted == 0
    assert again.duplicates == 7
    assert ws.log.head() == head
    assert ws.dump() == rows


def mixed_messages(seed: int) -> list[dict[str, Any]]:
    """2000 messages over 60 devices and 25 users: identifies, device updates, late traits."""
    rng = random.Random(seed)
    messages = []
    for n in range(2000):
        device = f"d{rng.randrange(60)}"
        kind = rng.random()
        if kind < 0.3:
            user = rng.choice([None, f"u{rng.randrange(25)}"])
            messages.append(identify(device, user, {"k": rng.randrange(5)}, n))
        elif kind < 0.5:
            messages.append(device_updated(device, f"tok{rng.randrange(40)}",
                                           {"device_os": str(rng.randrange(3)), "c": n}, n))
        else:
            late = n - rng.randrange(50) if rng.random() < 0.1 else n
            messages.append(identify(device, None, {f"a{rng.randrange(4)}": n}, late) | {
                "messageId": f"x{n}"})
    return messages


def test_ingest_then_rebuild_equals_incremental(ws: Workspace) -> None:
    messages = mixed_messages(7)
    report = ws.ingest(messages, batch_size=250)
    assert report.accepted + report.duplicates == 2000
    rows = ws.dump()
    ws.rebuild()
    assert ws.dump() == rows


def test_bulk_jobs_make_no_reference_cycles(ws: Workspace) -> None:
    """Ingest and rebuild pause the cyclic collector: that is only safe while they create no
    cyclic garbage, bad lines (exceptions, tracebacks) included."""
    messages: list[Any] = [*mixed_messages(11), b"{not json", {"type": "identify", "userId": "null",
                           "anonymousId": "a1", "messageId": "bad1"}]
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        report = ws.ingest(messages, batch_size=100)
        ws.rebuild()
        still_paused = not gc.isenabled()  # a bulk job restores the state it found
        found = gc.collect()
    finally:
        if was_enabled:
            gc.enable()
    assert len(report.rejected) == 2
    assert still_paused
    assert found == 0


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 9)), min_size=1,
                max_size=30),
       st.randoms(use_true_random=False))
def test_shuffled_late_messages_give_the_same_profile(
    writes: list[tuple[str, int]], rng: random.Random
) -> None:
    first = [identify("d1", "u1", {}, 0)]
    updates = [identify("d1", None, {key: value}, n + 1) for n, (key, value) in enumerate(writes)]
    in_order = idstitch.open("memory:")
    in_order.ingest(first + updates)
    shuffled = updates[:]
    rng.shuffle(shuffled)
    out_of_order = idstitch.open("memory:")
    out_of_order.ingest(first + shuffled)
    assert out_of_order.profile("u1").attributes == in_order.profile("u1").attributes  # type: ignore[union-attr]


def parallel_input() -> list[Any]:
    """Mixed traffic, and a cio_ id naming a person that only an earlier message created: the
    check needs the projection caught up to that message, whoever projects."""
    person_id = anonymous_person_id(anonymous_id_for("cio-phone", 0))
    return [identify("cio-phone", "u-cio", {}, 0), *STORY, *mixed_messages(5),
            identify("cio-tablet", f"cio_{person_id}", {"via": "cio"}, 3000)]


def test_parallel_ingest_gives_what_one_process_gives(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = make_durable_ws(None)
    there = make_durable_ws(None)
    expected = here.ingest(parallel_input(), batch_size=100, parallel=False)

    def not_here(*args: Any) -> None:
        raise AssertionError("the child was to project (it failed, and this process took over)")

    # The child is another interpreter: these patches reach only this process. A child that
    # cannot start or import the package would otherwise go unnoticed (the fallback gives the
    # same rows).
    monkeypatch.setattr(IdentityProjection, "apply_all", not_here)
    monkeypatch.setattr(DeviceAttributesProjection, "apply_all", not_here)
    report = there.ingest(parallel_input(), batch_size=100, parallel=True)
    monkeypatch.undo()
    assert report == expected
    assert not any("cio_" in reason for _, reason in report.rejected)
    # Projected up to the head by the time ingest returns (the child's work, not a query's).
    assert there.rows.position("identity") == there.log.head() == here.log.head()
    assert there.dump() == here.dump()
    assert "cio-tablet" in [d.device_id for d in there.profile("u-cio").devices]  # type: ignore[union-attr]


@pytest.mark.parametrize("child", ["print('ready', flush=True)", "pass",
                                   "print('ready', flush=True); import time; time.sleep(60)"],
                         ids=["dies after starting", "never starts", "goes silent"])
def test_parallel_ingest_projects_itself_when_the_child_fails(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch, child: str
) -> None:
    here = make_durable_ws(None)
    there = make_durable_ws(None)
    here.ingest(parallel_input(), batch_size=100, parallel=False)
    monkeypatch.setattr(background, "COMMAND", [sys.executable, "-c", child])
    monkeypatch.setattr(background, "STALL_SECONDS", 1.0)
    report = there.ingest(parallel_input(), batch_size=100, parallel=True)
    assert not any("cio_" in reason for _, reason in report.rejected)
    assert there.rows.position("identity") == there.log.head()
    assert there.dump() == here.dump()


def test_parallel_ingest_needs_a_store_another_process_can_open() -> None:
    ws = idstitch.open("memory:")
    with pytest.raises(InvalidCommand, match="parallel"):
        ws.ingest([identify("d1", "u1", {}, 1)], parallel=True)
    assert ws.log.head() == 0


def test_parallel_ingest_falls_back_when_no_interpreter_can_start(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = make_durable_ws(None)
    there = make_durable_ws(None)
    here.ingest(parallel_input(), batch_size=100, parallel=False)
    monkeypatch.setattr(background, "COMMAND", ["/nonexistent/python"])
    report = there.ingest(parallel_input(), batch_size=100, parallel=True)
    assert not any("cio_" in reason for _, reason in report.rejected)
    assert there.dump() == here.dump()


def children_started(monkeypatch: pytest.MonkeyPatch) -> list[background.BackgroundProjector]:
    """The projecting children started from now on (each is kept in the list returned)."""
    started: list[background.BackgroundProjector] = []
    real = background.BackgroundProjector

    def recording(*args: Any, **kwargs: Any) -> background.BackgroundProjector:
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(background, "BackgroundProjector", recording)
    return started


def test_no_child_outlives_an_ingest_that_fails_midway(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_durable_ws(None)
    started = children_started(monkeypatch)

    def messages() -> Iterator[dict[str, Any]]:
        yield from mixed_messages(9)[:500]
        raise RuntimeError("the input broke")

    with pytest.raises(RuntimeError, match="the input broke"):
        ws.ingest(messages(), batch_size=100, parallel=True)
    assert len(started) == 1
    assert started[0]._proc is not None and started[0]._proc.poll() is not None  # ended


def test_the_child_opens_the_same_file_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ws = idstitch.open("sqlite:///relative.db")
    try:
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")  # the child starts here, later
        report = ws.ingest(mixed_messages(4)[:300], batch_size=50, parallel=True)
        assert report.accepted > 0
        assert ws.rows.position("identity") == ws.log.head()
        assert not (tmp_path / "elsewhere" / "relative.db").exists()
    finally:
        ws.close()


def test_a_slow_stream_gets_fresh_clock_readings() -> None:
    """Messages arriving close together share a clock reading; one arriving later does not
    get an earlier one (its received time also corrects its sent_at skew)."""
    ticks = iter(range(1000))
    ws = idstitch.open("memory:", clock=lambda: T0 + timedelta(seconds=next(ticks)))

    def stream() -> Iterator[dict[str, Any]]:
        yield identify("d1", "u1", {}, 1)
        yield identify("d2", "u2", {}, 2)  # right after: same reading
        time.sleep(0.2)
        yield identify("d3", "u3", {}, 3)  # later: a reading of its own

    ws.ingest(stream(), parallel=False)
    recorded = {e.device_id: e.recorded_at for _, e in recorded_events(ws)}
    assert recorded["d1"] == recorded["d2"]
    assert recorded["d3"] > recorded["d2"]


def test_an_ingest_that_may_fork_commits_a_small_first_batch_and_starts_its_child_then(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child starts once a first, small batch is full (so that it is ready early), and
    the last batch is committed in pieces it can fold while the next is recorded."""
    here = make_durable_ws(None)
    there = make_durable_ws(None)
    expected = here.ingest(mixed_messages(6), batch_size=700, parallel=False)
    started = children_started(monkeypatch)
    monkeypatch.setattr(ingest, "CHILD_START_MESSAGES", 150)
    monkeypatch.setattr(ingest, "FINAL_CHUNK", 90)
    counts: list[int] = []
    report = there.ingest(mixed_messages(6), batch_size=700, progress=counts.append)
    assert report == expected
    assert len(started) == 1
    assert counts[0] == 150  # the first batch, not batch_size
    # Then whole batches, and the last one (read whole) committed 90 messages at a time.
    assert counts == [150, 700, 700, 90, 90, 90, 90, 90]
    assert there.rows.position("identity") == there.log.head()
    assert there.dump() == here.dump()


def test_an_ingest_that_cannot_fork_keeps_its_batches_whole() -> None:
    ws = idstitch.open("memory:")
    counts: list[int] = []
    ws.ingest(mixed_messages(2), batch_size=700, progress=counts.append)
    assert counts == [700, 700, 600]


def test_a_child_not_ready_when_the_input_ends_is_ended_and_this_process_projects(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short ingest does not wait for a child still starting: it ends it and catches up
    itself (unless the caller asked for the child with ``parallel=True``)."""
    here = make_durable_ws(None)
    there = make_durable_ws(None)
    # (No cio_ message: a read about persons waits for the child to be ready, as it must.)
    here.ingest(mixed_messages(6), batch_size=700, parallel=False)
    started = children_started(monkeypatch)
    # A child that never says it is ready (within the 60 s the parent would wait for it).
    monkeypatch.setattr(background, "COMMAND", [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(ingest, "CHILD_START_MESSAGES", 150)
    began = time.monotonic()
    there.ingest(mixed_messages(6), batch_size=700)
    assert time.monotonic() - began < background.START_SECONDS / 2
    assert len(started) == 1
    assert started[0]._proc is not None and started[0]._proc.poll() is not None  # ended
    assert there.rows.position("identity") == there.log.head()
    assert there.dump() == here.dump()
