"""In-process projection store: dicts guarded by a lock. A product feature, not a test double."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager

from idstitch.adapters.crypto import codec_for
from idstitch.adapters.eventlog import DeviceLog
from idstitch.adapters.keys import MemoryKeyStore
from idstitch.adapters.stores import Stores
from idstitch.projections.store import write_if_in_transaction


def connect() -> Stores:
    """An in-process workspace store: eventsourcing's in-memory recorder (read and appended
    through :class:`~idstitch.adapters.memory_log.MemoryLog`) and dict rows."""
    codec, cipher = codec_for(MemoryKeyStore())
    return Stores("memory:", DeviceLog({"PERSISTENCE_MODULE": "eventsourcing.popo"}, codec),
                  MemoryProjectionStore(), cipher=cipher)


class MemoryTransaction:
    """Buffers writes; they become visible together when the transaction commits."""

    def __init__(self, store: MemoryProjectionStore, name: str) -> None:
        self._store = store
        self.position, self.meta = store.tracking.get(name, (0, None))
        self.rows: dict[tuple[str, str], bytes | None] = {}
        self.new_tracking: tuple[int, str | None] | None = None

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Committed rows among ``keys``."""
        return self._store.get_many(kind, keys)

    def write(
        self, rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None
    ) -> None:
        """Stage rows and the new position."""
        self.rows.update(rows)
        self.new_tracking = (position, meta)


class MemoryProjectionStore:
    """Projection rows in dicts (kind -> key -> bytes)."""

    uses_fresh = False
    """:meth:`write_if` ignores its ``fresh`` hint (a new key costs a dict no more)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.rows: dict[str, dict[str, bytes]] = {}
        self.tracking: dict[str, tuple[int, str | None]] = {}

    @contextmanager
    def transaction(self, name: str) -> Iterator[MemoryTransaction]:
        """Hold the store while a batch is applied; commit its writes at the end."""
        with self._lock:
            tx = MemoryTransaction(self, name)
            yield tx
            for (kind, key), doc in tx.rows.items():
                table = self.rows.setdefault(kind, {})
                if doc is None:
                    table.pop(key, None)
                else:
                    table[key] = doc
            if tx.new_tracking is not None:
                self.tracking[name] = tx.new_tracking

    def write_if(
        self, name: str, expected: tuple[int, str | None],
        rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None,
        fresh: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> tuple[int, str | None] | None:
        """Write rows and the position if the tracking still holds ``expected`` (``fresh``
        is no help here: setting a new key in a dict costs no more)."""
        return write_if_in_transaction(self, name, expected, rows, position, meta)

    @contextmanager
    def snapshot(self) -> Iterator[MemoryProjectionStore]:
        """Reads under the store's lock: no transaction can commit in between."""
        with self._lock:
            yield self

    def get_each(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """The rows among these (kind, key) pairs."""
        found = {pair: self.get(*pair) for pair in keys}
        return {pair: doc for pair, doc in found.items() if doc is not None}

    def get(self, kind: str, key: str) -> bytes | None:
        """One row."""
        return self.rows.get(kind, {}).get(key)

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Rows among ``keys``."""
        table = self.rows.get(kind, {})
        return {k: table[k] for k in keys if k in table}

    def scan(self, kind: str) -> Iterator[tuple[str, bytes]]:
        """Every row of a kind, by key."""
        with self._lock:
            items = sorted(self.rows.get(kind, {}).items())
        yield from items

    def count(self, kind: str) -> int:
        """How many rows of a kind there are."""
        with self._lock:
            return len(self.rows.get(kind, {}))

    def scan_without(self, kind: str, needle: bytes) -> Iterator[tuple[str, bytes]]:
        """Every row of a kind whose bytes do not contain ``needle``, by key."""
        return iter([(k, v) for k, v in self.scan(kind) if needle not in v])

    def tracked(self, name: str) -> tuple[int, str | None]:
        """Committed tracking position and meta."""
        return self.tracking.get(name, (0, None))

    def raise_mark(self, name: str, value: int) -> int | None:
        """Raise a tracking row to at least ``value`` (one process: the workspace's lock keeps
        appends out meanwhile, and no other process appends: None)."""
        with self._lock:
            position, meta = self.tracking.get(name, (0, None))
            self.tracking[name] = (max(position, value), meta)
        return None

    def tracked_many(self, names: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """Committed tracking position and meta of each named projection."""
        return {name: self.tracked(name) for name in names}

    def tracked_at_head(
        self, names: Sequence[str]
    ) -> tuple[int, dict[str, tuple[int, str | None]]] | None:
        """None: the log is another object (no round trip to share)."""
        return None

    def position(self, name: str) -> int:
        """Committed tracking position."""
        return self.tracking.get(name, (0, None))[0]

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        """Committed tracking positions of the named projections."""
        return {name: self.position(name) for name in names}

    def meta(self, name: str) -> str | None:
        """Committed tracking meta."""
        return self.tracking.get(name, (0, None))[1]

    def reset(self, names: str | Sequence[str], kinds: Sequence[str],
              metas: Mapping[str, str] | None = None) -> None:
        """Drop rows and tracking (``metas``: tracking left at position 0 with these)."""
        with self._lock:
            for kind in kinds:
                self.rows.pop(kind, None)
            for name in [names] if isinstance(names, str) else names:
                self.tracking.pop(name, None)
            for name, meta in (metas or {}).items():
                self.tracking[name] = (0, meta)

    def close(self) -> None:
        """Nothing to release."""
