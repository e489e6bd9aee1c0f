"""The rows one catch-up batch reads and changes: decoded once, written once per batch."""

from __future__ import annotations

from typing import Any

import msgspec
from idstitch.projections.rows import (
    DEVICE,
    IDENTIFIER,
    MERGE,
    PERSON,
    TOKEN,
    DeviceRow,
    MergeRow,
    PersonRow,
)
from idstitch.projections.store import ProjectionTransaction

_encode = msgspec.msgpack.Encoder().encode
_DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    PERSON: msgspec.msgpack.Decoder(PersonRow),
    DEVICE: msgspec.msgpack.Decoder(DeviceRow),
    MERGE: msgspec.msgpack.Decoder(MergeRow),
}
_MAX_REDIRECTS = 64


def identifier_key(kind: str, value: str) -> str:
    """The row key of an identifier: ``id``, ``email`` (lower-cased) or ``anon``."""
    return f"{kind}:{value}"


def decode_row(kind: str, raw: bytes) -> Any:
    """Decode a stored row of any kind (identifier and token rows are plain strings)."""
    decoder = _DECODERS.get(kind)
    return raw.decode() if decoder is None else decoder.decode(raw)


def encode_row(row: object) -> bytes:
    """Encode a row for storage."""
    return row.encode() if isinstance(row, str) else _encode(row)


class Unit:
    """A cache-through view of the projection rows with a set of changed rows."""

    def __init__(self, tx: ProjectionTransaction, cache: dict[tuple[str, str], object]) -> None:
        self._tx = tx
        self._cache = cache
        self._dirty: dict[tuple[str, str], object] = {}

    def get(self, kind: str, key: str) -> Any:
        """A row, or None."""
        k = (kind, key)
        try:
            return self._cache[k]
        except KeyError:
            raw = self._tx.get_many(kind, [key]).get(key)
            row = None if raw is None else decode_row(kind, raw)
            self._cache[k] = row
            return row

    def prefetch(self, kind: str, keys: set[str]) -> None:
        """Load the rows among ``keys`` that are not cached yet, in one read per kind."""
        cache = self._cache
        missing = [k for k in keys if (kind, k) not in cache]
        if not missing:
            return
        found = self._tx.get_many(kind, missing)
        for key in missing:
            raw = found.get(key)
            cache[(kind, key)] = None if raw is None else decode_row(kind, raw)

    def put(self, kind: str, key: str, row: object) -> None:
        """Mark a row changed (rows are mutated in place, then put)."""
        self._cache[(kind, key)] = row
        self._dirty[(kind, key)] = row

    def delete(self, kind: str, key: str) -> None:
        """Remove a row."""
        self._cache[(kind, key)] = None
        self._dirty[(kind, key)] = None

    def encoded(self) -> dict[tuple[str, str], bytes | None]:
        """The changed rows, encoded for the store."""
        return {k: None if row is None else encode_row(row) for k, row in self._dirty.items()}

    # Typed helpers.

    def device(self, device_id: str) -> DeviceRow | None:
        """A device row."""
        row: DeviceRow | None = self.get(DEVICE, device_id)
        return row

    def person(self, person_id: str) -> PersonRow:
        """A person row that must exist (every known device has a current person)."""
        row: PersonRow | None = self.get(PERSON, person_id)
        if row is None:
            raise LookupError(f"projection rows are inconsistent: no person {person_id}")
        return row

    def put_person(self, person: PersonRow) -> None:
        """Mark a person changed."""
        self.put(PERSON, person.person_id, person)

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
