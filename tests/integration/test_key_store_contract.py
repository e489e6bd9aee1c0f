"""The key store's contract on the three stores: ``create_many`` makes each new id's key once
and gives every writer that same key; ``get_many`` leaves out ids never created; a destroyed
id reads as None and never gets a key again. Batches larger than a statement's IN list
(SQLite reads 500 ids a statement; PostgreSQL binds a batch as one array) give the same."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from idstitch.adapters.stores import Stores
from idstitch.domain.ports import KeyStore

from idstitch.bootstrap import open_stores
from idstitch.testing import TemporaryPostgres


@pytest.fixture
def url(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of the kind (PostgreSQL: a schema of its own on the tests' server)."""
    if store_kind == "memory":
        return "memory:"
    if store_kind == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    server: TemporaryPostgres = request.getfixturevalue("postgres")
    return server.url("idstitch_tests") + f"?schema=keys{uuid.uuid4().hex[:12]}"


@pytest.fixture
def stores(url: str) -> Iterator[Stores]:
    s = open_stores(url)
    yield s
    s.close()


def keys_of(stores: Stores) -> KeyStore:
    assert stores.cipher is not None
    return stores.cipher.keys


def test_a_batch_of_new_ids_gets_one_key_each_kept_for_good(stores: Stores) -> None:
    keys = keys_of(stores)
    ids = [f"subject-{i:04d}" for i in range(1200)]
    made = keys.create_many(ids[::-1])  # any order in, every id out
    assert sorted(made) == ids
    assert all(isinstance(k, bytes) and len(k) == 32 for k in made.values())
    assert len(set(made.values())) == len(ids)
    again = keys.create_many([*ids[:10], "subject-new"])
    assert {k: again[k] for k in ids[:10]} == {k: made[k] for k in ids[:10]}
    assert len(again) == 11 and again["subject-new"] not in made.values()
    read = keys.get_many([*ids, "never-made"])  # type: ignore[attr-defined]
    assert read == made  # "never-made" left out
    assert keys.get("never-made") is None
    assert keys.get(ids[7]) == made[ids[7]]
    assert keys.create_many([]) == {} and keys.get_many([]) == {}  # type: ignore[attr-defined]


def test_a_destroyed_id_reads_none_and_never_gets_a_key_again(stores: Stores) -> None:
    keys = keys_of(stores)
    made = keys.create_many(["a", "b", "c"])
    keys.destroy(["b"])
    assert keys.is_destroyed("b") and not keys.is_destroyed("a")
    assert keys.create_many(["a", "b", "d"]) == {"a": made["a"], "b": None,
                                                 "d": keys.get("d")}
    assert keys.get_many(["b", "c"]) == {"b": None, "c": made["c"]}  # type: ignore[attr-defined]
    assert keys.get("b") is None and keys.create("b") is None


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
def test_writers_creating_the_same_ids_at_once_get_the_same_keys(url: str) -> None:
    # Each writer its own stores (connections); overlapping batches, created at once.
    ids = [f"shared-{i:04d}" for i in range(600)]
    batches = [ids[:400], ids[200:], ids[::-1]]
    opened = [open_stores(url) for _ in batches]
    got: list[dict[str, bytes | None]] = [{} for _ in batches]
    start = threading.Barrier(len(batches))

    def create(i: int) -> None:
        start.wait()
        got[i] = keys_of(opened[i]).create_many(batches[i])

    try:
        threads = [threading.Thread(target=create, args=(i,)) for i in range(len(batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = keys_of(opened[0]).get_many(ids)  # type: ignore[attr-defined]
    finally:
        for s in opened:
            s.close()
    assert sorted(final) == ids and None not in final.values()
    for batch, keys in zip(batches, got, strict=True):
        assert keys == {k: final[k] for k in batch}
