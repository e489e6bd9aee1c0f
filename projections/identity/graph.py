"""The identity graph as the fold sees it: typed access to persons, devices, identifiers, tokens.

A :class:`~idstitch.projections.unit.Unit` over the identity projection's rows, with the
lookups the stitching rules need (the live person an identifier resolves to, following merges;
the device that owns a token).
"""

from __future__ import annotations

from collections.abc import Callable

from idstitch.projections.identity.rows import (
    DEVICE,
    IDENTIFIER,
    MERGE,
    PERSON,
    TOKEN,
    DeviceRow,
    IdentifierRow,
    MergeRow,
    PersonRow,
)
from idstitch.projections.store import RowReader
from idstitch.projections.unit import ABSENT, Cache, RowTypes, Unit

MAX_REDIRECTS = 64
"""Merges followed from a retired person at most (a longer chain means corrupt rows)."""


def identifier_key(kind: str, value: str) -> str:
    """The row key of an identifier: ``id``, ``email`` (lower-cased) or ``anon``."""
    return f"{kind}:{value}"


class IdentityUnit(Unit):
    """The identity rows one catch-up reads and changes, with typed helpers."""

    def __init__(
        self, source: RowReader, cache: Cache, row_types: RowTypes, *, complete: bool = False
    ) -> None:
        super().__init__(source, cache, row_types, complete=complete)
        self.devices: dict[str, DeviceRow | None] = cache[DEVICE]
        self.persons: dict[str, PersonRow | None] = cache[PERSON]
        self.identifiers: dict[str, IdentifierRow | None] = cache[IDENTIFIER]
        self.dirty_devices = self.dirty[DEVICE]
        self.dirty_persons = self.dirty[PERSON]
        self.new_devices = self.new[DEVICE]
        self.new_persons = self.new[PERSON]
        self.forgotten_holder: Callable[[str, int], str | None] | None = None
        """The forgotten member that held an email when an event claimed it (the fold sets
        it: see DecisionsAhead.held_by); its own claim reads erased."""

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

    def put_person(self, person: PersonRow, *, new: bool = False) -> None:
        """Mark a person changed (``new``: its id was just minted; see Unit.put)."""
        person_id = person.person_id
        dirty = self.dirty_persons
        if person_id not in dirty:
            # The first put since the last commit (an event puts its person several times).
            if new or self.persons.get(person_id, dirty) is None:
                self.new_persons.add(person_id)
            dirty.add(person_id)
        self.persons[person_id] = person

    def put_device(self, device: DeviceRow) -> None:
        """Mark a device changed."""
        device_id, dirty = device.device_id, self.dirty_devices
        if self.devices.get(device_id, dirty) is None and device_id not in dirty:
            self.new_devices.add(device_id)
        self.devices[device_id] = device
        dirty.add(device_id)

    def live_person(self, person_id: str) -> PersonRow | None:
        """The person itself, if it exists and was not merged into another."""
        row: PersonRow | None = self.get(PERSON, person_id)
        return row if row is not None and row.retired_into is None else None

    def owner(self, key: str) -> str | None:
        """The person an identifier key names now (not following merges)."""
        row: IdentifierRow | None = self.identifiers.get(key, ABSENT)
        if row is ABSENT:
            row = self.get(IDENTIFIER, key)
        return None if row is None else row.person_id

    def resolve_key(self, key: str) -> PersonRow | None:
        """The live person an identifier row points at, following merges."""
        # Cached rows read without a call (this runs several times for every identify).
        found: IdentifierRow | None = self.identifiers.get(key, ABSENT)
        if found is ABSENT:
            found = self.get(IDENTIFIER, key)
        if found is None or found.person_id is None:
            return None
        row: PersonRow | None = self.persons.get(found.person_id, ABSENT)
        if row is ABSENT:
            row = self.get(PERSON, found.person_id)
        # survivor()'s walk, inlined: this runs several times for every identify.
        for _ in range(MAX_REDIRECTS):
            if row is None or row.retired_into is None:
                return row
            row = self.get(PERSON, row.retired_into)
        raise LookupError(f"merge chain too long from {key}")

    def survivor(self, person_id: str) -> PersonRow | None:
        """The live person ``person_id`` is, or was merged into (None: no such person)."""
        row: PersonRow | None = self.persons.get(person_id, ABSENT)
        if row is ABSENT:
            row = self.get(PERSON, person_id)
        for _ in range(MAX_REDIRECTS):
            if row is None or row.retired_into is None:
                return row
            row = self.get(PERSON, row.retired_into)
        raise LookupError(f"merge chain too long from {person_id}")

    def put_identifier(
        self, kind: str, value: str, person_id: str | None, pos: int, *, new: bool = False
    ) -> None:
        """Point an identifier at a person (None: release it) from position ``pos`` on.

        ``new``: the identifier cannot exist yet (an anonymous id just minted), so no row is
        read for it: a catch-up would otherwise read one row per new device."""
        key = identifier_key(kind, value)
        row: IdentifierRow | None = None if new else self.get(IDENTIFIER, key)
        if row is None:
            row = IdentifierRow(person_id, [(pos, person_id)])
        elif row.person_id != person_id:
            row.person_id = person_id
            row.history.append((pos, person_id))
        else:
            return
        self.put(IDENTIFIER, key, row, new=new)

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

