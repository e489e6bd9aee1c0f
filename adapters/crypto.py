"""Crypto-shredding: the personal values of each event sealed under its data subject's key.

An event's personal fields (:data:`PERSONAL`) are msgpack-encoded together and encrypted with
AES-256-GCM (``cryptography``) under the key of the event's ``key_id``, with the key id as
associated data; the sealed bytes replace them in the stored event, whose other fields (device
id, message id, times, type, key id) stay plaintext so the folds can order and de-duplicate
without any key. Destroying a subject's keys makes exactly its values unreadable: such an event
decodes with erased markers and ``erased=True``, never an exception.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from os import urandom
from typing import Any, TypeVar

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from idstitch.adapters.codec import EventCodec
from idstitch.adapters.personal_fields import FIELDS, SETTERS, SPECS, VALUES
from idstitch.adapters.suppressed_digests import SUPPRESSION_REFRESH, Suppression
from idstitch.domain.errors import StoreError
from idstitch.domain.events import PERSONAL, DeviceEvent
from idstitch.domain.ports import KeyStore, StaleKey

NONCE = 12
CACHE_KEYS = 4096
"""How many AESGCM objects (one per key) a process keeps (least recently used out)."""
RAW_KEYS = 65_536
"""How many keys' bytes (32 each) a process keeps besides, for the keys its AESGCM objects
evicted (see :meth:`SubjectCipher._load`)."""
_MISSING = object()

V = TypeVar("V")


def _split(kept: Mapping[str, V], keys: Iterable[str]) -> tuple[dict[str, V], set[str]]:
    """The ``keys`` found in ``kept`` (with their values, None among them) and those not."""
    found: dict[str, V] = {}
    missing: set[str] = set()
    for key in keys:
        value = kept.get(key, _MISSING)
        if value is _MISSING:
            missing.add(key)
        else:
            found[key] = value  # type: ignore[assignment]
    return found, missing
class SubjectCipher(Suppression):
    """Seals and unseals events' personal values with the keys of a :class:`KeyStore`; the
    suppressed identifiers' digests are kept beside them (:class:`Suppression`)."""

    def __init__(self, keys: KeyStore, cache: int = CACHE_KEYS, raw: int = RAW_KEYS) -> None:
        self.keys = keys
        self._cache: OrderedDict[str, AESGCM | None] = OrderedDict()
        self._size = cache
        self._raw: OrderedDict[str, bytes | None] = OrderedDict()
        """Keys read by a replay (None: destroyed), oldest first, up to ``raw`` of them: an
        AESGCM object holds a cipher context (~1 KB each), the bytes of a key ~150 bytes with
        its id, so many more keys are kept this way than as AESGCM objects."""
        self._raw_size = raw
        self._lock = threading.Lock()
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode
        self._count = itertools.count()
        self._prefix = urandom(8)
        self._block = 0
        self._batch: dict[str, AESGCM | None] = {}
        """The keys of the batch being sealed that are not cached (see :meth:`prepare`)."""
        self._start_suppression()

    def _aead(self, key_id: str, create: bool) -> AESGCM | None:
        cache = self._cache
        # The hot path: a plain dict read (atomic in CPython), no lock, no reordering: the
        # cache evicts the oldest created, which is enough to bound it.
        aead = cache.get(key_id, _MISSING)
        if aead is not _MISSING:
            return aead  # type: ignore[return-value]
        key = self.keys.create(key_id) if create else self.keys.get(key_id)
        aead = None if key is None else AESGCM(key)
        if create and not getattr(self.keys, "committed", True):
            return aead  # joined an open append: not cached (see prepare)
        if aead is None and not create and not self.keys.is_destroyed(key_id):
            raise StoreError(f"the key {key_id!r} is missing from the key store (never "
                             "created, or the key store is not this log's)")
        with self._lock:
            cache[key_id] = aead
            if len(cache) > self._size:
                cache.popitem(last=False)
        return aead

    def prepare(self, key_ids: set[str | None]) -> None:
        """Create (or load) the keys a batch will seal with, in one call to the key store, so
        a batch of new devices costs one round trip, not one per key. Keys that joined an
        open append transaction (the store says ``committed`` False) serve this batch only:
        were the append rolled back, a cached key would seal events under a key never stored.

        Every key of the batch, cached ones included, is held for the batch's sealing: adding
        its new keys to the bounded cache evicts the oldest entries, which can be keys this
        very batch needs (the cache does not reorder on a hit), and each of those then cost a
        key store call of its own while sealing (a round trip each on PostgreSQL: a fifth of
        an identity-heavy ingest there, where the subjects outnumber the cache)."""
        with self._lock:
            cache = self._cache
            batch = {k: cache[k] for k in key_ids if k is not None and k in cache}
        missing = [k for k in key_ids if k is not None and k not in batch]
        if missing:
            keys = self.keys.create_many(missing)
            made = {key_id: None if key is None else AESGCM(key) for key_id, key in keys.items()}
            batch.update(made)
            if getattr(self.keys, "committed", True):
                with self._lock:
                    self._cache.update(made)
                    while len(self._cache) > self._size:
                        self._cache.popitem(last=False)
        self._batch = batch

    def drop_cache(self) -> None:
        """Drop every cached key: another process may have destroyed some (a forget), and a
        cached key would still unseal what its destruction made unreadable. Keys are read
        from the key store again as needed."""
        with self._lock:
            self._cache.clear()
            self._raw.clear()

    def forget(self, key_ids: list[str]) -> None:
        """Drop destroyed keys from this process's cache."""
        with self._lock:
            for key_id in key_ids:
                self._cache.pop(key_id, None)
                self._cache[key_id] = None
                self._raw.pop(key_id, None)

    def _nonce(self) -> bytes:
        """A 96-bit nonce: 8 random bytes drawn per cipher (and per 2**32 nonces) then a
        32-bit counter (NIST SP 800-38D's deterministic construction): unique within the
        process without a system call per event; two processes share a prefix with odds of
        about 2**-64 per pair."""
        return self._nonce_at(next(self._count))  # next(): atomic under the GIL

    def _nonce_at(self, count: int) -> bytes:
        """The nonce of the ``count``-th draw (see :meth:`_nonce`)."""
        block, n = divmod(count, 1 << 32)
        if block != self._block:  # once per 2**32 nonces: a fresh prefix
            with self._lock:
                if block > self._block:
                    self._block, self._prefix = block, urandom(8)
        return self._prefix + n.to_bytes(4, "big")

    def _stale(self, device_id: str | None) -> StaleKey:
        """A device cached before its person was forgotten elsewhere would record under the
        destroyed key of its stint: read the suppressed identifiers again now (the writer then
        drops its cached devices and keys, and refuses what names the person), and say so."""
        self._suppressed_at = -SUPPRESSION_REFRESH - 1.0
        self._refresh()
        return StaleKey(f"the data subject of device {device_id!r} was forgotten: its key was "
                        "destroyed, nothing more is recorded under it")

    def seal(self, event: DeviceEvent) -> DeviceEvent:
        """The event as stored: its personal values encrypted into ``sealed``."""
        values_of = VALUES.get(type(event))
        key_id = event.key_id
        if values_of is None or key_id is None:
            return event
        # The usual case, a cached key, without a call (this runs for every event recorded).
        batch = self._batch
        aead = (batch[key_id] if batch and key_id in batch
                else self._cache.get(key_id, _MISSING))
        if aead is _MISSING:
            aead = self._aead(key_id, create=True)
        if aead is None:
            raise self._stale(event.device_id)
        values = self._encode(values_of(event))
        # _nonce inlined while the counter stays within its block (all but once per 2**32).
        n = next(self._count)
        nonce = (self._prefix + (n & 0xFFFFFFFF).to_bytes(4, "big") if n >> 32 == self._block
                 else self._nonce_at(n))
        # (aead is an AESGCM here: _MISSING was replaced, None refused)
        sealed = nonce + aead.encrypt(nonce, values, key_id.encode())  # type: ignore[attr-defined]
        return msgspec.structs.replace(event, sealed=sealed, **PERSONAL[type(event)])

    def seal_all(self, events: list[DeviceEvent]) -> list[DeviceEvent]:
        """:meth:`seal` for a batch whose keys :meth:`prepare` made: the events as stored, in
        order. One loop without a call per event (this runs for every event an ingest
        records): the batch's keys come from the batch, the nonces from one counter."""
        batch = self._batch
        cache = self._cache
        encode = self._encode
        specs = SPECS
        count = self._count
        replace = msgspec.structs.replace
        out: list[DeviceEvent] = []
        append = out.append
        for event in events:
            spec = specs.get(type(event))
            key_id = event.key_id
            if spec is None or key_id is None:
                append(event)
                continue
            aead = batch.get(key_id, _MISSING) if batch else _MISSING
            if aead is _MISSING:
                aead = cache.get(key_id, _MISSING)
                if aead is _MISSING:
                    aead = self._aead(key_id, create=True)
            if aead is None:
                raise self._stale(event.device_id)
            n = next(count)  # _nonce inlined (see seal)
            nonce = (self._prefix + (n & 0xFFFFFFFF).to_bytes(4, "big") if n >> 32 == self._block
                     else self._nonce_at(n))
            values = encode(spec[0](event))
            sealed = nonce + aead.encrypt(nonce, values, key_id.encode())  # type: ignore[attr-defined]
            append(replace(event, sealed=sealed, **spec[1]))
        return out

    def unseal(self, event: DeviceEvent) -> DeviceEvent:
        """The stored event with its values back, or erased if its key was destroyed."""
        sealed = event.sealed
        if sealed is None or event.key_id is None:
            return event
        return self._unsealed(event, self._aead(event.key_id, create=False))

    def unseal_all(self, events: list[Any]) -> None:
        """:meth:`unseal` every event of a page, its uncached keys read in one call.

        ``events`` must be just decoded and held by nobody else (the codec's page): they
        are unsealed in place. A replay meets tens of thousands of subjects, more than the
        cache keeps: one read of the key store per key missed was a quarter of a rebuild. The
        page's keys serve the page whatever the cache evicts meanwhile."""
        wanted = {e.key_id for e in events if e.sealed is not None}
        wanted.discard(None)
        page, missing = _split(self._cache, wanted)
        if missing:
            page.update(self._load(missing))
        # Set on the decoded events themselves rather than a copy each (structs.replace with
        # keyword arguments): nobody else holds them yet, and the copy was half of unsealing
        # (this runs for every event of a rebuild, a catch-up and the ingest's child).
        force = msgspec.structs.force_setattr
        setters, decode = SETTERS, self._decode
        for event in events:
            sealed = event.sealed
            key_id = event.key_id
            if sealed is None or key_id is None:
                continue
            aead = page[key_id]
            try:
                values = None if aead is None else decode(
                    aead.decrypt(sealed[:NONCE], sealed[NONCE:], key_id.encode()))
            except InvalidTag:
                values = None  # a key that is not this event's: unreadable, as erased
            if values is None:
                force(event, "erased", True)
            else:
                setters[type(event)](event, values)
            force(event, "sealed", None)

    def _load(self, key_ids: set[str]) -> dict[str, AESGCM | None]:
        """The AESGCM of each key (None: destroyed), from the keys' bytes kept (see
        :data:`RAW_KEYS`) or read in one call where the key store can (``get_many``), and
        cached; StoreError for a key that was never created.

        A replay of a long log meets its subjects again and again, tens of thousands of them
        between two events of one subject: more than the AESGCM objects cached, so each was
        read from the key store again and again (a key read per 9 events of a million-event
        catch-up, a tenth of its time). Their bytes are kept for many more."""
        raw = self._raw
        found, missing = _split(raw, key_ids)
        if missing:
            get_many = getattr(self.keys, "get_many", None)
            if get_many is None:  # a user's key store with the five methods only
                return {key_id: self._aead(key_id, create=False) for key_id in key_ids}
            read: dict[str, bytes | None] = get_many(sorted(missing))
            with self._lock:
                for key_id, key in read.items():
                    raw[key_id] = key
                while len(raw) > self._raw_size:
                    raw.popitem(last=False)
            found.update(read)
        loaded: dict[str, AESGCM | None] = {}
        for key_id in key_ids:
            if key_id in found:
                key = found[key_id]
                loaded[key_id] = None if key is None else AESGCM(key)
            else:
                loaded[key_id] = self._aead(key_id, create=False)  # raises: no such key
        with self._lock:
            cache = self._cache
            cache.update(loaded)
            while len(cache) > self._size:
                cache.popitem(last=False)
        return loaded

    def _unsealed(self, event: DeviceEvent, aead: AESGCM | None) -> DeviceEvent:
        """The sealed event (``sealed`` and ``key_id`` set) with its values back under
        ``aead`` (None: erased)."""
        sealed: bytes = event.sealed  # type: ignore[assignment]
        key_id: str = event.key_id  # type: ignore[assignment]
        if aead is not None:
            try:
                values = self._decode(aead.decrypt(sealed[:NONCE], sealed[NONCE:],
                                                   key_id.encode()))
            except InvalidTag:
                aead = None  # a key that is not this event's: unreadable, as erased
            else:
                return msgspec.structs.replace(
                    event, sealed=None, **dict(zip(FIELDS[type(event)], values, strict=True)))
        return msgspec.structs.replace(event, sealed=None, erased=True)


def codec_for(keys: KeyStore) -> tuple[EventCodec, SubjectCipher | None]:
    """The event codec of a store whose keys are ``keys``: sealing with them, unless the
    environment sets ``IDSTITCH_ENCRYPTION=off`` (benchmarks' A/B switch: events are then
    written in plaintext, and sealed events already stored still read)."""
    cipher = SubjectCipher(keys)
    if os.environ.get("IDSTITCH_ENCRYPTION", "on") == "off":
        return EventCodec(_ReadOnly(cipher)), None
    return EventCodec(cipher), cipher


class _ReadOnly:
    """Unseals, never seals: encryption switched off."""

    def __init__(self, cipher: SubjectCipher) -> None:
        self.unseal = cipher.unseal
        self.drop_cache = cipher.drop_cache

    def prepare(self, key_ids: set[str | None]) -> None:
        """Nothing to create."""

    def seal(self, event: DeviceEvent) -> DeviceEvent:
        """Plaintext, without a key id: an event with personal values and no key id is one
        that was never sealed (shred refuses a person who has such events)."""
        return event if event.key_id is None else msgspec.structs.replace(event, key_id=None)

    def seal_all(self, events: list[DeviceEvent]) -> list[DeviceEvent]:
        """:meth:`seal` of each."""
        return list(map(self.seal, events))
