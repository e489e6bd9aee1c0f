"""Which changed rows a unit of work knows to be new (``Unit.fresh``): a hint the stores use to
insert rows without looking for one to update, so it must never name a row that exists."""

from __future__ import annotations

from idstitch.adapters.memory import MemoryProjectionStore
from idstitch.projections.unit import Unit, new_cache

TYPES = {"t": str}


def _store_with(rows: dict[str, str]) -> MemoryProjectionStore:
    store = MemoryProjectionStore()
    with store.transaction("x") as tx:
        tx.write({("t", k): v.encode() for k, v in rows.items()}, 1, None)
    return store


def test_a_row_read_as_absent_then_put_is_fresh() -> None:
    unit = Unit(_store_with({"old": "1"}), new_cache(TYPES), TYPES)
    assert unit.get("t", "new") is None
    assert unit.get("t", "old") == "1"
    unit.put("t", "new", "2")
    unit.put("t", "old", "3")
    assert unit.fresh() == {("t", "new")}


def test_a_row_never_read_is_not_fresh() -> None:
    unit = Unit(_store_with({"old": "1"}), new_cache(TYPES), TYPES)
    unit.put("t", "old", "3")  # written without reading: whether it exists is unknown
    assert unit.fresh() == set()


def test_a_row_deleted_then_put_again_is_not_fresh() -> None:
    unit = Unit(_store_with({"old": "1"}), new_cache(TYPES), TYPES)
    assert unit.get("t", "old") == "1"
    unit.delete("t", "old")
    unit.put("t", "old", "2")  # the committed row is still there
    assert unit.fresh() == set()


def test_a_new_row_deleted_again_is_not_written_as_fresh() -> None:
    unit = Unit(_store_with({}), new_cache(TYPES), TYPES)
    assert unit.get("t", "new") is None
    unit.put("t", "new", "1")
    unit.delete("t", "new")
    assert unit.fresh() == set()
    assert unit.encoded() == {("t", "new"): None}


def test_after_a_reset_every_new_row_is_fresh() -> None:
    unit = Unit(_store_with({}), new_cache(TYPES), TYPES, complete=True)
    assert unit.get("t", "a") is None
    unit.put("t", "a", "1")
    assert unit.fresh() == {("t", "a")}


def test_a_later_unit_over_the_same_cache_knows_a_committed_row() -> None:
    store = _store_with({})
    cache = new_cache(TYPES)
    first = Unit(store, cache, TYPES)
    assert first.get("t", "a") is None
    first.put("t", "a", "1")
    assert first.fresh() == {("t", "a")}
    store.write_if("x", (1, None), first.encoded(), 2, None, first.fresh())
    second = Unit(store, cache, TYPES)  # the rows it wrote stay cached
    second.put("t", "a", "2")
    assert second.fresh() == set()


def test_a_row_put_as_new_is_fresh_without_a_read() -> None:
    unit = Unit(_store_with({"old": "1"}), new_cache(TYPES), TYPES)
    unit.put("t", "minted", "1", new=True)  # an id just minted: no row can hold it
    unit.put("t", "old", "2")
    assert unit.fresh() == {("t", "minted")}
