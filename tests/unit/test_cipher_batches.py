"""Sealing a batch asks the key store once, however the batch's keys sit in the bounded cache
(issue 17: on PostgreSQL each extra ask is a round trip; the cache evicted keys the very batch
being sealed needed, when its subjects outnumbered the cache)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from idstitch.adapters.crypto import SubjectCipher
from idstitch.adapters.keys import MemoryKeyStore
from idstitch.domain.events import PERSONAL, Identified

T = datetime(2026, 1, 1, tzinfo=UTC)


class CountingKeys(MemoryKeyStore):
    """The in-memory key store, counting the calls that may create keys."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def create(self, key_id: str) -> bytes | None:
        self.calls += 1
        return super().create(key_id)

    def create_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        self.calls += 1
        return {key_id: MemoryKeyStore.create(self, key_id) for key_id in key_ids}


def event(subject: int) -> Identified:
    return Identified(device_id=f"d{subject}", user_id=f"u{subject}", traits={"n": subject},
                      key_id=f"k{subject}", timestamp=T, recorded_at=T)


def test_a_batch_asks_the_key_store_once_even_past_the_cache() -> None:
    keys = CountingKeys()
    cipher = SubjectCipher(keys, cache=8)
    first = [event(i) for i in range(6)]
    cipher.prepare({e.key_id for e in first})
    sealed = [cipher.seal(e) for e in first]
    assert keys.calls == 1 and all(s.sealed for s in sealed)
    # Old subjects (cached, oldest first) beside more new ones than the cache holds: adding
    # the new keys evicts the old ones, which this batch still seals with.
    second = first + [event(i) for i in range(100, 110)]
    keys.calls = 0
    cipher.prepare({e.key_id for e in second})
    resealed = [cipher.seal(e) for e in second]
    assert keys.calls == 1
    assert [cipher.unseal(s) for s in resealed] == second



def test_a_prepared_batch_sealed_in_one_loop_is_what_sealing_each_gives() -> None:
    """``seal_all`` (ingest's loop) and ``seal`` (one event) store the same: each event's
    values under its own key, the plaintext fields as they were, a nonce never used twice."""
    cipher = SubjectCipher(CountingKeys(), cache=4)
    batch = [event(i % 6) for i in range(20)]
    cipher.prepare({e.key_id for e in batch})
    together = cipher.seal_all(batch)
    alone = [cipher.seal(e) for e in batch]
    assert [cipher.unseal(s) for s in together] == batch == [cipher.unseal(s) for s in alone]
    for a, b in zip(together, alone, strict=True):
        assert a.user_id == b.user_id == "" and a.traits == b.traits == {}
        assert a.key_id == b.key_id and a.device_id == b.device_id
    nonces = [s.sealed[:12] for s in together + alone if s.sealed]
    assert len(set(nonces)) == len(nonces) == 40


def test_a_page_whose_sealed_values_are_not_the_fields_of_its_type_fails() -> None:
    """Unsealing a page sets each type's personal fields by unpacking (one call an event, not
    a loop): a sealed list with one value too few or too many for the type is an error, as
    ``zip(strict=True)`` made it, never a silently shifted or dropped field."""
    keys = MemoryKeyStore()
    cipher = SubjectCipher(keys)
    key = keys.create("k1")
    assert key is not None
    aead = AESGCM(key)
    fields = PERSONAL[Identified]
    for count in (len(fields) - 1, len(fields) + 1):
        nonce = b"\x00" * 12
        sealed = nonce + aead.encrypt(
            nonce, msgspec.msgpack.encode(["u1", {"n": 1}, None, "x"][:count]), b"k1")
        stored = msgspec.structs.replace(event(1), sealed=sealed, **fields)
        with pytest.raises(ValueError, match=r"unpack|zip"):
            cipher.unseal_all([stored])
    good = cipher.seal(event(1))
    page = [msgspec.structs.replace(good)]
    cipher.unseal_all(page)
    assert page == [event(1)]


class ReadCountingKeys(MemoryKeyStore):
    """The in-memory key store, counting the keys read by id."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    def get_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        self.read += key_ids
        return super().get_many(key_ids)


def test_a_replay_reads_each_key_once_past_the_cache_of_ciphers() -> None:
    """A replay meets more subjects than the AESGCM objects cached, again and again: each key
    is read from the key store once, its bytes kept (a million-event catch-up read a key
    every 9 events, a tenth of its time)."""
    keys = ReadCountingKeys()
    writer = SubjectCipher(keys)
    events = [event(i % 40) for i in range(200)]
    writer.prepare({e.key_id for e in events})
    stored = writer.seal_all(events)
    reader = SubjectCipher(keys, cache=4)
    for start in range(0, 200, 10):  # pages of 10 events, 40 subjects round robin
        page = [msgspec.structs.replace(s) for s in stored[start:start + 10]]
        reader.unseal_all(page)
        assert page == events[start:start + 10]
    assert sorted(keys.read) == sorted({e.key_id for e in events if e.key_id})
    # Fewer keys kept than the subjects met: read again, never wrong.
    small = SubjectCipher(keys, cache=4, raw=8)
    keys.read = []
    for start in range(0, 200, 10):
        page = [msgspec.structs.replace(s) for s in stored[start:start + 10]]
        small.unseal_all(page)
        assert page == events[start:start + 10]
    assert len(keys.read) > 40


@pytest.mark.parametrize("how", ["forget", "drop_cache"])
def test_a_destroyed_key_is_not_read_from_the_keys_kept(how: str) -> None:
    """The bytes of a key kept for replays go with the key: after ``forget`` (this process
    destroyed it) or ``drop_cache`` (another process may have), its events read erased."""
    keys = ReadCountingKeys()
    writer = SubjectCipher(keys)
    writer.prepare({"k1", "k2"})
    stored = writer.seal_all([event(1), event(2)])
    reader = SubjectCipher(keys, cache=1)
    for _ in range(2):  # k1's cipher evicted by k2's: k1 then comes from the bytes kept
        page = [msgspec.structs.replace(s) for s in stored]
        reader.unseal_all(page)
        assert page == [event(1), event(2)]
    keys.destroy(["k1"])
    if how == "forget":
        reader.forget(["k1"])
    else:
        reader.drop_cache()
    page = [msgspec.structs.replace(s) for s in stored]
    reader.unseal_all(page)
    assert page[0].erased and page[0].user_id != "u1"
    assert page[1] == event(2)
