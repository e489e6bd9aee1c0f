"""The rows one catch-up transaction reads and changes: decoded once, written once.

The working set is a cache of decoded rows per kind that outlives transactions (the runner
drops it whenever another writer may have moved the rows). Within a transaction, changed rows
are remembered by key and encoded once, at commit. Which kinds exist and how each decodes is
the projection's to say (its ``row_types``): nothing here knows a particular projection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import msgspec
from idstitch.domain.errors import CorruptRow
from idstitch.projections.store import RowReader

RowTypes = Mapping[str, type[Any]]
"""Row kind -> what its rows are: a msgspec Struct type, or ``str`` for plain text rows."""

Cache = dict[str, dict[str, Any]]
"""Decoded rows per kind; a key mapped to None is known to have no row."""

_encode = msgspec.msgpack.Encoder().encode
ABSENT: Any = object()
"""Not in a cache at all (None there means known to have no row)."""


def new_cache(row_types: RowTypes) -> Cache:
    """An empty working set for these kinds."""
    return {kind: {} for kind in row_types}


def cache_size(cache: Cache) -> int:
    """Rows held."""
    return sum(len(rows) for rows in cache.values())


def evict(cache: Cache, keep: int) -> None:
    """Drop the rows cached longest ago until about ``keep`` remain (in place: units hold the
    per-kind dicts). Dict order is the order rows came in (a row read again after an eviction
    comes in anew), so what stays is what the latest batches touched: the users active now.
    Dropping the whole cache instead made every batch after it read its rows cold."""
    total = cache_size(cache)
    if total <= keep:
        return
    for rows in cache.values():
        drop = len(rows) * (total - keep) // total
        if drop:
            for key in list(islice(rows, drop)):
                del rows[key]


_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any] | None] = {str: None}


def decoder(row_type: type[Any]) -> msgspec.msgpack.Decoder[Any] | None:
    """The reused decoder of a row type (None for text rows)."""
    try:
        return _decoders[row_type]
    except KeyError:
        found = _decoders[row_type] = msgspec.msgpack.Decoder(row_type)
        return found


def decode_row(row_type: type[Any], raw: bytes) -> Any:
    """A stored row of this type, decoded; CorruptRow if its bytes are not one (a projection
    row is derived data: whoever meets it rebuilds the projection that owns the type)."""
    found = decoder(row_type)
    try:
        return raw.decode() if found is None else found.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        error = CorruptRow(row_type.__name__, str(e))
        error.row_class = row_type
        raise error from e


def encode_row(row: Any) -> bytes:
    """A row as stored: a Struct as msgpack, text as UTF-8."""
    return row.encode() if type(row) is str else _encode(row)


class Unit:
    """A cache-through view of a projection's rows and the keys changed since the last commit.

    ``complete``: the cache holds every row that exists (true after a reset, until anything is
    evicted), so a key it does not hold has no row and nothing needs reading.
    """

    def __init__(
        self, source: RowReader, cache: Cache, row_types: RowTypes, *, complete: bool = False
    ) -> None:
        self._source = source
        self._row_types = row_types
        self.cache = cache
        self.complete = complete
        self.dirty: dict[str, set[str]] = {kind: set() for kind in row_types}
        self.new: dict[str, set[str]] = {kind: set() for kind in row_types}
        """Per kind, keys put while known to have no committed row (see :meth:`fresh`):
        the subclasses' and projections' own put paths add to it too."""

    def get(self, kind: str, key: str) -> Any:
        """A row, or None."""
        rows = self.cache[kind]
        # A miss is common (a new identifier, after a reset): no exception raised for it.
        row = rows.get(key, ABSENT)
        if row is ABSENT:
            if self.complete:
                rows[key] = None  # no row (as prefetch would say, without its list)
                return None
            self.prefetch(kind, (key,))
            return rows[key]
        return row

    def prefetch(self, kind: str, keys: Iterable[str]) -> None:
        """Load the rows among ``keys`` that are not cached yet, in one read per kind."""
        rows = self.cache[kind]
        missing = [k for k in keys if k not in rows]
        if not missing:
            return
        if self.complete:
            rows.update(dict.fromkeys(missing))
            return
        found = self._source.get_many(kind, missing)
        row_type = self._row_types[kind]
        for key in missing:
            raw = found.get(key)
            rows[key] = None if raw is None else decode_row(row_type, raw)

    def put(self, kind: str, key: str, row: object, *, new: bool = False) -> None:
        """Mark a row changed (rows are mutated in place, then put). ``new``: the key cannot
        have a row yet (an id just minted), though it was never read."""
        rows = self.cache[kind]
        dirty = self.dirty[kind]
        # Known to have no row, and not by a delete of this unit: the committed rows lack it.
        if (new or rows.get(key, dirty) is None) and key not in dirty:
            self.new[kind].add(key)
        rows[key] = row
        dirty.add(key)

    def delete(self, kind: str, key: str) -> None:
        """Remove a row."""
        self.cache[kind][key] = None
        self.dirty[kind].add(key)

    def fresh(self) -> set[tuple[str, str]]:
        """The changed rows that the committed rows do not hold (read as absent, or absent
        since the reset that made the cache complete): a store may insert them without
        looking for a row to update. A hint only (a store that finds one updates it)."""
        return {(kind, key) for kind, keys in self.new.items() for key in keys
                if self.cache[kind].get(key) is not None}

    @property
    def changed(self) -> bool:
        """Whether any row changed since the unit began."""
        return any(self.dirty.values())

    def encoded(self) -> dict[tuple[str, str], bytes | None]:
        """The changed rows, encoded for the store (None: delete), in key order (kind, then
        key): a store that writes them in that order (SQLite's B-tree) then sorts a sorted
        list, one comparison a row; sorting each kind's keys alone compares strings, not
        tuples, and costs half as much."""
        out: dict[tuple[str, str], bytes | None] = {}
        for kind in sorted(self.dirty):
            keys = self.dirty[kind]
            if not keys:
                continue
            rows = self.cache[kind]
            encode = str.encode if self._row_types[kind] is str else _encode
            for key in sorted(keys):
                row = rows[key]
                out[(kind, key)] = None if row is None else encode(row)
        return out
