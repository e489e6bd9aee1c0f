"""The PostgreSQL batch append (binary COPY with ids reserved under the table lock).

The ids come from one ``setval`` on the table's sequence rather than from the column default, so
these check what the default used to give for free: positions consecutive and in the order
given, no collision with ids the stock recorder hands out, and a duplicate version refused as a
WriteConflict with nothing of the batch written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import StoredEvent
from idstitch.adapters.codec import topic_of
from idstitch.adapters.stores import Stores
from idstitch.domain.commands import Identify
from idstitch.domain.device import Device, Recorded
from idstitch.domain.ports import WriteConflict

from idstitch.bootstrap import open_stores
from idstitch.testing import TemporaryPostgres

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_n = itertools.count()


@pytest.fixture
def stores(postgres: TemporaryPostgres) -> Iterator[Stores]:
    s = open_stores(postgres.url("idstitch_tests") + f"?schema=append{next(_n)}")
    yield s
    s.close()


def recorded(device: Device, *user_ids: str) -> list[Recorded]:
    for user_id in user_ids:
        device.handle(Identify(device_id=device.device_id, user_id=user_id, timestamp=T0), T0)
    return device.collect_events()


def interleaved(*batches: list[Recorded]) -> list[Recorded]:
    """One event of each device in turn: the log order is not grouped by device."""
    return [r for group in itertools.zip_longest(*batches) for r in group if r is not None]


def test_positions_are_consecutive_in_the_order_given(stores: Stores) -> None:
    first = stores.log.append(interleaved(recorded(Device("a"), "u1", "u2", "u3"),
                                          recorded(Device("b"), "v1", "v2")))
    assert [e.position for e in first] == [1, 2, 3, 4, 5]
    assert [e.event.user_id for e in first] == ["u1", "v1", "u2", "v2", "u3"]  # type: ignore[attr-defined]
    second = stores.log.append(recorded(Device("c"), "w1", "w2"))
    assert [e.position for e in second] == [6, 7]
    read = stores.log.read(0, 100)
    assert [(e.position, e.event) for e in read] == [(e.position, e.event) for e in first + second]
    assert stores.log.head() == 7
    # The ids written as raw bytes are the devices' UUIDs: the stock recorder finds them.
    stock = stores.log.recorder.select_events(Device.create_id("a"))
    assert [e.originator_version for e in stock] == [1, 2, 3]


def test_ids_from_the_stock_recorder_and_the_batch_path_never_collide(stores: Stores) -> None:
    stores.log.append(recorded(Device("a"), "u1"))
    stock = recorded(Device("b"), "v1", "v2")
    ids = stores.log.recorder.insert_events([
        StoredEvent(originator_id=r.originator_id, originator_version=r.originator_version,
                    topic=topic_of(r.event), state=stores.log.codec.encode(r.event))
        for r in stock])
    assert list(ids or []) == [2, 3]
    assert [e.position for e in stores.log.append(recorded(Device("c"), "w1"))] == [4]
    assert [e.position for e in stores.log.read(0, 100)] == [1, 2, 3, 4]


def test_a_duplicate_version_is_a_write_conflict_and_writes_nothing(stores: Stores) -> None:
    stores.log.append(recorded(Device("a"), "u1"))
    stale = Device("a")  # version 0: its first event collides with the stored one
    batch = interleaved(recorded(Device("b"), "v1"), recorded(stale, "u2"))
    with pytest.raises(WriteConflict):
        stores.log.append(batch)
    assert [e.event.device_id for e in stores.log.read(0, 100)] == ["a"]
    # The ids reserved for the refused batch are skipped, never reused out of order.
    after = stores.log.append(recorded(Device("c"), "w1"))
    assert after[0].position > 1
    assert [e.position for e in stores.log.read(0, 100)] == [1, after[0].position]


def test_a_duplicate_within_one_batch_is_a_write_conflict(stores: Stores) -> None:
    events = recorded(Device("a"), "u1")
    with pytest.raises(WriteConflict):
        stores.log.append(events + recorded(Device("a"), "u2"))
    assert stores.log.read(0, 100) == []


def test_an_empty_batch_takes_no_position(stores: Stores) -> None:
    assert stores.rows.append_events([]) == []  # type: ignore[attr-defined]
    assert [e.position for e in stores.log.append(recorded(Device("a"), "u1"))] == [1]
