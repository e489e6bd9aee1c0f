"""The storage ports' contracts: one abstract class, one subclass per store (after eventsourcing).

Memory, SQLite and PostgreSQL must prove the same behaviour: rows and tracking position commit
together or not at all, and the event log appends, reads back and refuses a stale version.
"""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from idstitch.adapters.postgres import PostgresProjectionStore
from idstitch.adapters.stores import Stores
from idstitch.domain.commands import (
    ClearIdentify,
    CollectDeviceAttributes,
    DeviceCommand,
    Identify,
    RegisterDeviceToken,
    SetDeviceAttributes,
)
from idstitch.domain.device import Device
from idstitch.domain.events import DeviceAttributesChanged, DeviceTokenRegistered, Identified
from idstitch.domain.ports import WriteConflict

import idstitch
from idstitch.bootstrap import open_stores
from idstitch.errors import PolicyMismatch
from idstitch.testing import TemporaryPostgres, recorded_events

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_n = itertools.count()


def common(message_id: str | None = None) -> dict[str, object]:
    return {"message_id": message_id, "timestamp": T0, "recorded_at": T0}


def run(device: Device, command: type[DeviceCommand], **fields: Any) -> None:
    """The device takes a (valid) command, recorded at T0."""
    device.handle(command(device_id=device.device_id, timestamp=T0, **fields), T0)


class StoreContract:
    """Subclasses provide ``stores``: a fresh, empty store."""

    @pytest.fixture
    def stores(self) -> Iterator[Stores]:
        raise NotImplementedError

    # The projection store port.

    def test_a_new_projection_starts_at_zero(self, stores: Stores) -> None:
        assert stores.rows.position("x") == 0
        assert stores.rows.get("p", "nobody") is None

    def test_rows_and_position_commit_together(self, stores: Stores) -> None:
        with stores.rows.transaction("x") as tx:
            assert tx.position == 0
            tx.write({("p", "a"): b"1", ("p", "b"): b"2", ("d", "a"): b"3"}, 7, "m=1")
        assert stores.rows.position("x") == 7
        assert stores.rows.meta("x") == "m=1"
        assert list(stores.rows.scan("p")) == [("a", b"1"), ("b", b"2")]
        assert stores.rows.get_many("d", ["a", "zz"]) == {"a": b"3"}
        with stores.rows.transaction("x") as tx:
            assert tx.position == 7
            assert tx.get_many("p", ["a"]) == {"a": b"1"}
            tx.write({("p", "a"): None, ("p", "b"): b"22"}, 9, "m=1")
        assert list(stores.rows.scan("p")) == [("b", b"22")]
        # (How many rows of a kind: a long catch-up counts them before it scans them.)
        assert (stores.rows.count("p"), stores.rows.count("d"), stores.rows.count("zz")) == (
            1, 1, 0)

    def test_an_error_rolls_back_rows_and_position(self, stores: Stores) -> None:
        with stores.rows.transaction("x") as tx:
            tx.write({("p", "a"): b"1"}, 1, None)
        with pytest.raises(RuntimeError), stores.rows.transaction("x") as tx:
            tx.write({("p", "a"): b"changed", ("p", "new"): b"n"}, 2, None)
            raise RuntimeError("crash before commit")
        assert stores.rows.position("x") == 1
        assert list(stores.rows.scan("p")) == [("a", b"1")]

    def test_write_if_writes_only_over_the_expected_tracking(self, stores: Stores) -> None:
        rows = stores.rows
        assert rows.write_if("x", (0, None), {("p", "a"): b"1", ("p", "b"): b"2"}, 3,
                             "m=1 epoch=e1") is None
        # Somebody committed since the writer began at (0, None): nothing written, and the
        # tracking found is given back (the meta too: a rebuild elsewhere changes it).
        assert rows.write_if("x", (0, None), {("p", "a"): b"stale"}, 4, "m=1") == (
            3, "m=1 epoch=e1")
        assert rows.write_if("x", (3, "m=1 epoch=e2"), {("p", "a"): b"stale"}, 4, "m=1") == (
            3, "m=1 epoch=e1")
        assert list(rows.scan("p")) == [("a", b"1"), ("b", b"2")]
        assert rows.tracked("x") == (3, "m=1 epoch=e1")
        # Over the expected tracking: upserts, deletes and the position in one commit.
        assert rows.write_if("x", (3, "m=1 epoch=e1"), {("p", "a"): None, ("p", "b"): b"22",
                                                          ("p", "c"): b"3"}, 8, "m=1 epoch=e1") is None
        assert list(rows.scan("p")) == [("b", b"22"), ("c", b"3")]
        assert rows.tracked("x") == (8, "m=1 epoch=e1")
        assert rows.position("y") == 0  # another projection's tracking is its own

    def test_write_if_inserts_fresh_rows_and_upserts_when_the_caller_was_wrong(
            self, stores: Stores) -> None:
        """Rows the caller believes new (``fresh``) are written like the others; one that
        exists after all (a caller's stale belief) is updated, not refused."""
        rows = stores.rows
        assert rows.write_if("x", (0, None), {("p", "a"): b"1"}, 1, "m") is None
        assert rows.write_if("x", (1, "m"), {("p", "b"): b"2", ("p", "c"): b"3",
                                             ("p", "a"): b"11"}, 2, "m",
                             frozenset({("p", "b"), ("p", "c")})) is None
        assert list(rows.scan("p")) == [("a", b"11"), ("b", b"2"), ("c", b"3")]
        assert rows.write_if("x", (2, "m"), {("p", "a"): b"111", ("p", "d"): b"4",
                                             ("p", "b"): None}, 3, "m",
                             frozenset({("p", "a"), ("p", "d")})) is None
        assert list(rows.scan("p")) == [("a", b"111"), ("c", b"3"), ("d", b"4")]
        assert rows.tracked("x") == (3, "m")
        # Over another tracking, fresh rows are not written either.
        assert rows.write_if("x", (2, "m"), {("p", "e"): b"5"}, 4, "m",
                             frozenset({("p", "e")})) == (3, "m")
        assert rows.get("p", "e") is None

    def test_many_keys_in_one_read(self, stores: Stores) -> None:
        rows: dict[tuple[str, str], bytes | None] = {("i", f"k{i}"): b"v" for i in range(1200)}
        with stores.rows.transaction("x") as tx:
            tx.write(rows, 1, None)
        assert len(stores.rows.get_many("i", [f"k{i}" for i in range(1300)])) == 1200

    def test_reset_drops_rows_and_tracking(self, stores: Stores) -> None:
        with stores.rows.transaction("x") as tx:
            tx.write({("p", "a"): b"1", ("t", "a"): b"2"}, 5, None)
        stores.rows.reset("x", ["p"])
        assert stores.rows.position("x") == 0
        assert list(stores.rows.scan("p")) == []
        assert list(stores.rows.scan("t")) == [("a", b"2")]

    def test_a_first_commit_over_rows_that_exist_after_all(self, stores: Stores) -> None:
        """A projection at position 0 with no meta has no rows, unless somebody wrote them
        by hand at position 0: the first commit (a bulk insert on PostgreSQL) still upserts."""
        with stores.rows.transaction("x") as tx:
            tx.write({("p", "a"): b"1"}, 0, None)
        with stores.rows.transaction("x") as tx:
            assert (tx.position, tx.meta) == (0, None)
            tx.write({("p", "a"): b"2", ("p", "b"): b"3", ("p", "gone"): None}, 4, None)
        assert list(stores.rows.scan("p")) == [("a", b"2"), ("b", b"3")]
        assert stores.rows.position("x") == 4

    def test_reset_of_several_projections_at_once(self, stores: Stores) -> None:
        for name, kind in (("x", "p"), ("y", "a"), ("z", "t")):
            with stores.rows.transaction(name) as tx:
                tx.write({(kind, "k"): b"1"}, 5, None)
        stores.rows.reset(["x", "y"], ["p", "a"])
        assert [stores.rows.position(n) for n in ("x", "y", "z")] == [0, 0, 5]
        assert [list(stores.rows.scan(k)) for k in ("p", "a", "t")] == [[], [], [("k", b"1")]]

    # The event log port.

    def test_selected_reads_filter_by_type_first_event_and_bounds(self, stores: Stores) -> None:
        """A replay reads only its projection's events (and, if it asks, every device's first
        event), between two positions, a page at a time."""
        for name in ("a", "b", "c"):
            device = Device(name)
            if name != "b":
                run(device, CollectDeviceAttributes, context={"os": name})
            run(device, Identify, user_id=f"user-{name}")
            run(device, SetDeviceAttributes, attributes={"n": 1})
            run(device, RegisterDeviceToken, token=f"tok-{name}")
            stores.log.append(device.collect_events())
        log = stores.log.read(0, 100)
        seen: set[str] = set()
        firsts = set()
        for logged in log:
            if logged.event.device_id not in seen:
                seen.add(logged.event.device_id)
                firsts.add(logged.position)
        types = {DeviceAttributesChanged, DeviceTokenRegistered}
        for first in (False, True):
            expected = [e.position for e in log
                        if type(e.event) in types or (first and e.position in firsts)]
            assert len(expected) >= 6
            got = stores.log.read_selected(0, log[-1].position, 100, types, first=first)
            assert [e.position for e in got] == expected
            assert [e.event for e in got] == [e.event for e in log if e.position in expected]
            after, until = expected[1], expected[-2]
            inside = [p for p in expected if after < p <= until]
            assert [e.position for e in stores.log.read_selected(
                after, until, 100, types, first=first)] == inside
            assert [e.position for e in stores.log.read_selected(
                after, until, 2, types, first=first)] == inside[:2]

    def test_append_read_and_load(self, stores: Stores) -> None:
        device = Device("d1")
        run(device, Identify, user_id="u1", traits={"a": [1, {"b": None}]}, message_id="m1")
        run(device, Identify, user_id="u2", message_id="m2")
        positions = [e.position for e in stores.log.append(device.collect_events())]
        assert len(positions) == 2 and positions[0] < positions[1]
        assert stores.log.head() == positions[1]
        events = stores.log.read(0, 10)
        assert [e.position for e in events] == positions
        first = events[0].event
        assert isinstance(first, Identified)
        # The key id its personal values were sealed under comes back with it (plaintext).
        assert first.key_id is not None
        assert first == Identified(device_id="d1", user_id="u1", traits={"a": [1, {"b": None}]},
                                   key_id=first.key_id,
                                   **common("m1"))  # type: ignore[arg-type]
        assert stores.log.read(positions[0], 10)[0].position == positions[1]
        loaded = stores.log.load("d1")
        assert loaded is not None
        assert (loaded.version, loaded.user_id, loaded.is_duplicate("m1")) == (2, "u2", True)
        assert stores.log.load("never") is None

    def test_load_many_gives_what_load_gives(self, stores: Stores) -> None:
        for name in ("a", "b", "c"):
            device = Device(name)
            run(device, Identify, user_id=f"user-{name}", message_id=f"{name}1")
            run(device, ClearIdentify, message_id=f"{name}2")
            if name == "b":
                run(device, RegisterDeviceToken, token="tok", message_id="b3")
            stores.log.append(device.collect_events())
        many = stores.log.load_many(["a", "b", "c", "never"])
        assert sorted(many) == ["a", "b", "c", "never"]
        # A device with no events comes new, as Device(name) would.
        never = many.pop("never")
        assert (never.version, never.id, never.user_id) == (0, Device("never").id, None)
        assert stores.log.load("never") is None
        for name, device in many.items():
            one = stores.log.load(name)
            assert one is not None
            assert (device.version, device.generation, device.user_id, device.token,
                    sorted(device.recent)) == (one.version, one.generation, one.user_id,
                                               one.token, sorted(one.recent))
        assert many["b"].token == "tok" and many["a"].generation == 1

    def test_the_head_with_the_tracking_is_what_each_read_gives(self, stores: Stores) -> None:
        names = ["x", "y", "none"]
        empty = stores.rows.tracked_at_head(names)
        assert empty is None or empty == (0, dict.fromkeys(names, (0, None)))
        device = Device("d1")
        run(device, Identify, user_id="u1")
        run(device, Identify, user_id="u2")
        stores.log.append(device.collect_events())
        assert stores.rows.write_if("x", (0, None), {("p", "a"): b"1"}, 1, "m=1") is None
        assert stores.rows.write_if("y", (0, None), {}, 2, None) is None
        both = stores.rows.tracked_at_head(names)
        assert both is None or both == (stores.log.head(), stores.rows.tracked_many(names))
        assert both is None or both[1]["x"] == (1, "m=1")

    def test_an_append_check_that_refuses_appends_nothing(self, stores: Stores) -> None:
        rows = stores.rows
        assert rows.write_if("x", (0, None), {}, 0, "built=A") is None

        class Check:
            inline = False

            def __init__(self) -> None:
                self.names = ["x", "none"]
                self.seen: list[dict[str, tuple[int, str | None]]] = []

            def found(self, tracked: Mapping[str, tuple[int, str | None]]) -> None:
                self.seen.append(dict(tracked))
                if tracked["x"][1] != "built=A":
                    raise PolicyMismatch("x was built otherwise")

            def run(self) -> None:
                self.found(rows.tracked_many(self.names))

        device = Device("d1")
        run(device, Identify, user_id="u1")
        check = Check()
        assert len(stores.log.write(device.collect_events(), check)) == 1
        assert check.seen == [{"x": (0, "built=A"), "none": (0, None)}]
        assert rows.write_if("x", (0, "built=A"), {}, 1, "built=B") is None
        again = Device("d2")
        run(again, Identify, user_id="u2")
        with pytest.raises(PolicyMismatch):
            stores.log.write(again.collect_events(), check)
        assert stores.log.head() == 1 and len(stores.log.read(0, 10)) == 1

    def test_a_stale_version_is_refused(self, stores: Stores) -> None:
        device = Device("d1")
        run(device, Identify, user_id="u1")
        stores.log.append(device.collect_events())
        assert stores.log.versions(["d1", "d2"]) == {"d1": device.version}
        stale = Device("d1")  # never saw the stored event: loaded at version 0
        run(stale, Identify, user_id="u2")
        with pytest.raises(WriteConflict):
            stores.log.append(stale.collect_events())
        assert [e.event.user_id for e in stores.log.read(0, 10)] == ["u1"]  # type: ignore[attr-defined]


class TestMemory(StoreContract):
    @pytest.fixture
    def stores(self) -> Iterator[Stores]:
        s = open_stores("memory:")
        yield s
        s.close()


class TestSqlite(StoreContract):
    @pytest.fixture
    def stores(self, tmp_path: object) -> Iterator[Stores]:
        s = open_stores(f"sqlite:///{tmp_path}/contract.db")
        yield s
        s.close()


class TestPostgres(StoreContract):
    @pytest.fixture
    def stores(self, postgres: TemporaryPostgres) -> Iterator[Stores]:
        s = open_stores(postgres.url("idstitch_tests") + f"?schema=contract{next(_n)}")
        yield s
        s.close()

    def test_a_first_commit_inserts_without_upserting(
        self, stores: Stores, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A projection's first commit (a rebuild's) writes its rows with COPY; later ones
        upsert (with the position, in one statement: PostgresTransaction)."""
        upserts: list[int] = []
        fresh: list[int] = []
        real_upsert = PostgresProjectionStore._upsert
        real_fresh = PostgresProjectionStore._insert_fresh

        def counting(store: Any, cur: Any, rows: list[tuple[str, str, bytes]]) -> None:
            upserts.append(len(rows))
            real_upsert(store, cur, rows)

        def counting_fresh(store: Any, cur: Any, rows: list[tuple[str, str, bytes]]) -> None:
            fresh.append(len(rows))
            real_fresh(store, cur, rows)

        monkeypatch.setattr(PostgresProjectionStore, "_upsert", counting)
        monkeypatch.setattr(PostgresProjectionStore, "_insert_fresh", counting_fresh)
        with stores.rows.transaction("x") as tx:
            tx.write({("p", f"k{i}"): b"v" for i in range(50)}, 3, "m=1")
        assert (fresh, upserts) == ([50], [])
        assert len(list(stores.rows.scan("p"))) == 50
        with stores.rows.transaction("x") as tx:
            tx.write({("p", "k1"): b"w", ("p", "k2"): None}, 4, "m=1")
        assert fresh == [50]
        assert stores.rows.get("p", "k1") == b"w"
        assert stores.rows.get("p", "k2") is None  # deleted in the same statement
        assert stores.rows.tracked("x") == (4, "m=1")


def test_an_interrupted_sqlite_append_leaves_the_store_usable(tmp_path: Path) -> None:
    """Anything but a SQLite error (Ctrl-C, say) in the middle of an append: rolled back, the
    write lock released, the original exception kept."""
    ws = idstitch.open(f"sqlite:///{tmp_path}/x.db")
    ws.identify("d0", "u0")

    class Interrupted(list[tuple[str, int, str, bytes]]):
        def __iter__(self) -> Iterator[tuple[str, int, str, bytes]]:
            yield from list(super().__iter__())[:1]
            raise KeyboardInterrupt

    rows = Interrupted([(uuid.uuid4().hex, 1, "x", b"{}"), (uuid.uuid4().hex, 1, "x", b"{}")])
    with pytest.raises(KeyboardInterrupt):
        ws.rows.append_events(rows)  # type: ignore[attr-defined]
    other = sqlite3.connect(f"{tmp_path}/x.db", timeout=1)
    other.execute("BEGIN IMMEDIATE")  # the lock is free
    other.rollback()
    other.close()
    assert ws.identify("d1", "u1") is not None
    assert [e.device_id for _, e in recorded_events(ws)] == ["d0", "d1"]
    ws.close()
