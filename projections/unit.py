"""The rows one catch-up transaction reads and changes: decoded once, written once.

The working set is a cache of decoded rows per kind that outlives transactions (the projection
drops it whenever another writer may have moved the rows). Within a transaction, changed rows
are remembered by key and encoded once, at commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from idstitch.projections.rows import (
    ATTRIBUTES,
    DEVICE,
    IDENTIFIER,
    KINDS,
    MERGE,
    PERSON,
    TOKEN,
    DeviceAttributesRow,
    DeviceRow,
    MergeRow,
    PersonRow,
)
from idstitch.projections.store import RowReader

_encode = msgspec.msgpack.Encoder().encode
_DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    PERSON: msgspec.msgpack.Decoder(PersonRow),
    DEVICE: msgspec.msgpack.Decoder(DeviceRow),
    MERGE: msgspec.msgpack.Decoder(MergeRow),
    ATTRIBUTES: msgspec.msgpack.Decoder(DeviceAttributesRow),
}
_MAX_REDIRECTS = 64

Cache = dict[str, dict[str, Any]]
"""Decoded rows per kind; a key mapped to None is known to have no row."""


def new_cache() -> Cache:
    """An empty working set."""
    return {kind: {} for kind in KINDS}


def cache_size(cache: Cache) -> int:
    """Rows held."""
    return sum(len(rows) for rows in cache.values())


def identifier_key(kind: str, value: str) -> str:
    """The row key of an identifier: ``id``, ``email`` (lower-cased) or ``anon``."""
    return f"{kind}:{value}"


def decode_row(kind: str, raw: bytes) -> Any:
    """Decode a stored row of any kind (identifier and token rows are plain strings)."""
    decoder = _DECODERS.get(kind)
    return raw.decode() if decoder is None else decoder.decode(raw)


class Unit:
    """A cache-through view of the projection rows and the keys changed since the last commit.

    ``complete``: the cache holds every row that exists (true after a reset, until anything is
    evicted), so a key it does not hold has no row and nothing needs reading.
    """

    def __init__(self, source: RowReader, cache: Cache, *, complete: bool = False) -> None:
        self._source = source
        self.cache = cache
        self.complete = complete
        self.devices: dict[str, DeviceRow | None] = cache[DEVICE]
        self.persons: dict[str, PersonRow | None] = cache[PERSON]
        self.dirty: dict[str, set[str]] = {kind: set() for kind in KINDS}
        self.dirty_devices = self.dirty[DEVICE]
        self.dirty_persons = self.dirty[PERSON]

    def get(self, kind: str, key: str) -> Any:
        """A row, or None."""
        rows = self.cache[kind]
        try:
            return rows[key]
        except KeyError:
            self.prefetch(kind, (key,))
            return rows[key]

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
        for key in missing:
            raw = found.get(key)
            rows[key] = None if raw is None else decode_row(kind, raw)

    def put(self, kind: str, key: str, row: object) -> None:
        """Mark a row changed (rows are mutated in place, then put)."""
        self.cache[kind][key] = row
        self.dirty[kind].add(key)

    def delete(self, kind: str, key: str) -> None:
        """Remove a row."""
        self.cache[kind][key] = None
        self.dirty[kind].add(key)

    def encoded(self) -> dict[tuple[str, str], bytes | None]:
        """The changed rows, encoded for the store (None: delete)."""
        out: dict[tuple[str, str], bytes | None] = {}
        for kind, keys in self.dirty.items():
            rows = self.cache[kind]
            if kind in _DECODERS:
                for key in keys:
                    row = rows[key]
                    out[(kind, key)] = None if row is None else _encode(row)
            else:
                for key in keys:
                    row = rows[key]
                    out[(kind, key)] = None if row is None else row.encode()
        return out

    # Typed helpers.

    def device(self, device_id: str) -> DeviceRow | None:
        """A device row."""
        row: DeviceRow | None = self.get(DEVICE, device_id)
        return row

    def person(self, person_id: str) -> PersonRow:
        """A person row that must exist (every known device has a current person)."""
        row = self.persons.get(person_id)
        if row is None:
            row = self.get(PERSON, person_id)
            if row is None:
                raise LookupError(f"projection rows are inconsistent: no person {person_id}")
        return row

    def put_person(self, person: PersonRow) -> None:
        """Mark a person changed."""
        self.persons[person.person_id] = person
        self.dirty_persons.add(person.person_id)

    def put_device(self, device: DeviceRow) -> None:
        """Mark a device changed."""
        self.devices[device.device_id] = device
        self.dirty_devices.add(device.device_id)

    def live_person(self, person_id: str) -> PersonRow | None:
        """The person itself, if it exists and was not merged into another."""
        row: PersonRow | None = self.get(PERSON, person_id)
        return row if row is not None and row.retired_into is None else None

    def resolve_key(self, key: str) -> PersonRow | None:
        """The live person an identifier row points at, following merges."""
        person_id: str | None = self.get(IDENTIFIER, key)
        if person_id is None:
            return None
        row: PersonRow | None = self.get(PERSON, person_id)
        for _ in range(_MAX_REDIRECTS):
            if row is None or row.retired_into is None:
                return row
            row = self.get(PERSON, row.retired_into)
        raise LookupError(f"merge chain too long from {key}")

    def put_identifier(self, kind: str, value: str, person_id: str) -> None:
        """Point an identifier at a person."""
        self.put(IDENTIFIER, identifier_key(kind, value), person_id)

    def delete_identifier(self, kind: str, value: str) -> None:
        """Release an identifier."""
        self.delete(IDENTIFIER, identifier_key(kind, value))

    def token_owner(self, token: str) -> str | None:
        """The device that holds a push token."""
        owner: str | None = self.get(TOKEN, token)
        return owner

    def put_token(self, token: str, device_id: str) -> None:
        """A token now belongs to a device."""
        self.put(TOKEN, token, device_id)

    def put_merge(self, row: MergeRow) -> None:
        """Record a conversion, merge or switch."""
        self.put(MERGE, row.merge_id, row)
