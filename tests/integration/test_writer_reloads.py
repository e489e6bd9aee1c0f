"""How a writer decides again the devices another writer moved under its batch: only those
devices reloaded, from copies of them where it kept some, never a history twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from idstitch.adapters.eventlog import DeviceLog
from idstitch.domain.device import Device
from idstitch.domain.events import Identified

from idstitch.testing import recorded_events
from idstitch.workspace import Workspace

from .test_concurrent_writers import identify

WorkspaceFactory = Callable[..., Workspace]
DEVICES = [f"d{i}" for i in range(10)]


def moved_under(make_durable_ws: WorkspaceFactory) -> tuple[Workspace, Workspace]:
    """Two writers of one store: the first has every device cached, the second then moved d3
    and d7 under it."""
    first = make_durable_ws()
    second = make_durable_ws(first.url)
    first.ingest([identify(d, "u1", i) for i, d in enumerate(DEVICES)])
    second.ingest([identify("d3", "u2", 100), identify("d7", "u2", 101)])
    return first, second


class RecordingLog:
    """The real device log, recording which devices each load_many call loads."""

    def __init__(self, log: DeviceLog) -> None:
        self._log = log
        self.loaded: list[set[str]] = []

    def load_many(self, device_ids: Iterable[str]) -> dict[str, Device]:
        ids = set(device_ids)
        self.loaded.append(ids)
        return self._log.load_many(ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def test_a_batch_conflict_reruns_only_the_devices_another_writer_moved(
    make_durable_ws: WorkspaceFactory,
) -> None:
    first, _ = moved_under(make_durable_ws)
    recording = RecordingLog(first.log)
    first._services.writer.log = recording  # type: ignore[assignment]
    # d7's message m101 was recorded by the other writer: a rerun on fresh state finds it.
    batch = [identify(d, "u3", 200 + i) for i, d in enumerate(DEVICES)] + [identify("d7", "u2", 101)]
    report = first.ingest(batch)
    assert recording.loaded == [{"d3", "d7"}]  # only those reloaded; the rest kept
    assert (report.accepted, report.duplicates) == (10, 1)
    counts = Counter((e.device_id, e.message_id) for _, e in recorded_events(first))
    assert max(counts.values()) == 1
    assert first.profile("u3").devices  # type: ignore[union-attr]
    assert {d.device_id for d in first.profile("u3").devices} == set(DEVICES)  # type: ignore[union-attr]


def test_after_a_conflict_moved_devices_are_decided_again_from_copies(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a writer has met another, its batches keep a copy of each device as they took it:
    a device moved under a batch is decided again from its copy and the events appended to it
    since, not from its whole history (which a writer sharing devices reloaded again and
    again), with the same outcome."""
    first, second = moved_under(make_durable_ws)
    first.ingest([identify(d, "u3", 200 + i) for i, d in enumerate(DEVICES)])  # a conflict
    writer = first._services.writer
    assert writer.shared > 0
    recording = RecordingLog(first.log)
    monkeypatch.setattr(writer, "log", recording)
    commit = writer.commit

    def moved_meanwhile(batch: Any, **kwargs: Any) -> Any:
        # The other writer moves d3 after this batch took it, before it commits.
        second.ingest([identify("d3", "u4", 300)])
        return commit(batch, **kwargs)

    monkeypatch.setattr(writer, "commit", moved_meanwhile)
    report = first.ingest([identify(d, "u5", 400 + i) for i, d in enumerate(DEVICES)])
    assert recording.loaded == []  # d3 from its copy: no history loaded
    assert report.accepted == 10
    d3 = [(e.message_id, e.user_id) for _, e in recorded_events(first)
          if e.device_id == "d3" and isinstance(e, Identified)]
    assert d3[-2:] == [("m300", "u4"), ("m403", "u5")]  # decided after the move, on it
    u5 = first.profile("u5")
    assert u5 is not None and {d.device_id for d in u5.devices} == set(DEVICES)
    u4 = first.profile("u4")
    assert u4 is not None and u4.devices == []  # d3 switched on to u5


def test_a_device_reloaded_after_a_conflict_is_not_loaded_again_when_it_moves_again(
    make_durable_ws: WorkspaceFactory,
) -> None:
    """A batch's first conflict reloads the moved devices from their histories (no copies
    were kept before a conflict): it keeps copies of them as loaded, so when the other writer
    moves one again before the batch's append under the lock, only the events since are
    read, not its history a second time."""
    first, second = moved_under(make_durable_ws)
    recording = RecordingLog(first.log)
    first._services.writer.log = recording  # type: ignore[assignment]
    load_many = recording.load_many

    def moved_again(device_ids: Iterable[str]) -> dict[str, Device]:
        loaded = load_many(device_ids)
        if len(recording.loaded) == 1:
            second.ingest([identify("d3", "u4", 300)])  # before the append under the lock
        return loaded

    recording.load_many = moved_again  # type: ignore[method-assign]
    report = first.ingest([identify(d, "u3", 200 + i) for i, d in enumerate(DEVICES)])
    assert recording.loaded == [{"d3", "d7"}]  # d3's second move: from the copy
    assert report.accepted == 10
    d3 = [(e.message_id, e.user_id) for _, e in recorded_events(first)
          if e.device_id == "d3" and isinstance(e, Identified)]
    assert d3[-2:] == [("m300", "u4"), ("m203", "u3")]  # decided after both moves
    u4 = first.profile("u4")
    assert u4 is not None and u4.devices == []
