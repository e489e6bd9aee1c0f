"""Query results (immutable msgspec Structs) and the reader that builds them from rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from idstitch.domain import attributes
from idstitch.domain.rules import PERSON_PREFIX, normalize_email
from idstitch.projections.device_attributes import ATTRIBUTES, DeviceAttributesRow
from idstitch.projections.identity.graph import MAX_REDIRECTS, identifier_key
from idstitch.projections.identity.rows import (
    DEVICE,
    IDENTIFIER,
    MERGE,
    PERSON,
    DeviceRow,
    IdentifierRow,
    MergeRow,
    PersonRow,
)
from idstitch.projections.store import RowSource, from_micros
from idstitch.projections.unit import RowTypes, decode_row


class Device(msgspec.Struct, frozen=True, kw_only=True):
    """A device and what it carries: token, platform, custom and collected attributes."""

    device_id: str
    person_id: str
    anonymous_id: str
    token: str | None
    platform: str | None
    attributes: dict[str, Any]
    collected: dict[str, Any]
    flat: dict[str, Any]
    """Collected and custom attributes (custom winning), nested keys joined with ``_``."""
    last_used: datetime | None
    last_status: str | None
    created_at: datetime
    updated_at: datetime
    sdk_anonymous_id: str | None = None
    """The SDK's ``anonymousId`` of the device's current session, once a message carried one
    (ingest): a new one means the SDK was reset."""
    server: bool = False
    """A server-side stream (a backend's identifies of one user), not an installation."""


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """A person as it stands: identifiers, attributes, devices, stitched anonymous ids."""

    person_id: str
    identified: bool
    identifiers: dict[str, str]
    attributes: dict[str, Any]
    devices: list[Device]
    anonymous_ids: list[str]
    created_at: datetime
    updated_at: datetime


class Merge(msgspec.Struct, frozen=True, kw_only=True):
    """A conversion, merge or switch, and the log position of the event that caused it."""

    merge_id: str
    kind: str
    source: str
    target: str
    position: int
    reason: str | None
    device_id: str | None
    timestamp: datetime


def owner_at(row: IdentifierRow, at: int) -> str | None:
    """The person an identifier named when the log ended at position ``at``."""
    owner: str | None = None
    for position, person_id in row.history:
        if position > at:
            break
        owner = person_id
    return owner


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"network": {"cellular": True}}`` -> ``{"network_cellular": True}``."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}_{key}" if prefix else key
        if isinstance(item, dict) and item:
            out.update(flatten(item, name))
        else:
            out[name] = item
    return out


class Reader:
    """Answers the identity queries from committed projection rows.

    ``row_types``: every row kind the workspace's registry holds and what its rows are
    (:attr:`idstitch.projections.base.Registry.row_types`); a kind no registered projection
    owns reads as no row."""

    def __init__(self, rows: RowSource, row_types: RowTypes) -> None:
        self._rows = rows
        self._row_types = row_types

    def _get(self, kind: str, key: str) -> Any:
        row_type = self._row_types.get(kind)
        if row_type is None:
            return None
        raw = self._rows.get(kind, key)
        return None if raw is None else decode_row(row_type, raw)

    def _get_each(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """Rows of several kinds and keys in one read, decoded (kinds no projection owns
        read as no row)."""
        known = [pair for pair in keys if pair[0] in self._row_types]
        found = self._rows.get_each(known) if known else {}
        return {pair: decode_row(self._row_types[pair[0]], raw) for pair, raw in found.items()}

    def _follow(self, person: PersonRow | None, at: int | None = None) -> PersonRow | None:
        """The person itself, or the one it was merged into (as of position ``at``)."""
        for _ in range(MAX_REDIRECTS):
            if person is None or person.retired_into is None or (
                    at is not None and (person.retired_at is None or person.retired_at > at)):
                return person
            person = self._get(PERSON, person.retired_into)
        raise LookupError("merge chain too long")

    def person(self, identifier: str, at: int | None = None, *, nameless: bool = False
               ) -> PersonRow | None:
        """The live person an identifier finds: id, email, cio_<id>, person id or anonymous id;
        with ``at``, the person it found when the log ended at that position. What remains of
        a forgotten person (nameless: identified by identifies that read erased) is found by
        nothing, unless ``nameless`` asks for it too."""
        found = self._person(identifier, at)
        return None if found is not None and found.nameless and not nameless else found

    def _person(self, identifier: str, at: int | None) -> PersonRow | None:
        return self._follow(self._named(identifier, at), at)

    def named(self, identifier: str) -> str | None:
        """The id of the person an identifier names itself (the owner of a user id, an email
        or an anonymous id, the person of a ``cio_`` or person id), not following merges."""
        found = self._named(identifier, None)
        return None if found is None else found.person_id

    def _named(self, identifier: str, at: int | None) -> PersonRow | None:
        found: PersonRow | None
        if identifier.startswith(PERSON_PREFIX):
            found = self._get(PERSON, identifier[len(PERSON_PREFIX):])
            if found is not None and (at is None or found.since <= at):
                return found
        if "@" in identifier:
            keys = [identifier_key("email", normalize_email(identifier))]
        else:
            keys = [identifier_key("id", identifier), identifier_key("anon", identifier)]
        for key in keys:
            row: IdentifierRow | None = self._get(IDENTIFIER, key)
            if row is not None:
                person_id = row.person_id if at is None else owner_at(row, at)
                if person_id is not None:
                    found = self._get(PERSON, person_id)
                    return found
        found = self._get(PERSON, identifier)
        if found is None or (at is not None and found.since > at):
            return None
        return found

    def person_row(self, person_id: str) -> PersonRow | None:
        """The raw person row (not following merges)."""
        row: PersonRow | None = self._get(PERSON, person_id)
        return row

    def merge_row(self, merge_id: str) -> MergeRow | None:
        """A merge record."""
        row: MergeRow | None = self._get(MERGE, merge_id)
        return row

    def device_row(self, device_id: str) -> DeviceRow | None:
        """The raw device row."""
        row: DeviceRow | None = self._get(DEVICE, device_id)
        return row

    def device(self, device_id: str) -> Device | None:
        """A device view."""
        row = self.device_row(device_id)
        return None if row is None else device_view(row, self._get(ATTRIBUTES, device_id))

    def profile(self, identifier: str) -> Profile | None:
        """The profile an identifier finds."""
        person = self.person(identifier)
        return None if person is None else self.profile_view(person)

    def profile_of_device(self, device_id: str) -> Profile | None:
        """The profile of a device's current person."""
        row = self.device_row(device_id)
        if row is None:
            return None
        return self.profile_view(self._follow(self._get(PERSON, row.person_id)))

    def profile_view(self, person: PersonRow | None) -> Profile | None:
        """Build the public profile of a person row."""
        if person is None:
            return None
        devices = []
        # Every device row and attribute row of the person in one read.
        found = self._get_each([(kind, device_id) for device_id in person.devices
                                for kind in (DEVICE, ATTRIBUTES)])
        for device_id in person.devices:
            row: DeviceRow | None = found.get((DEVICE, device_id))
            # A server-side stream (a backend's identifies) is not one of the person's devices.
            if row is not None and not row.server:
                devices.append(device_view(row, found.get((ATTRIBUTES, device_id))))
        identifiers = {k: v for k, v in (("id", person.user_id), ("email", person.email)) if v}
        return Profile(
            person_id=person.person_id,
            identified=person.identified,
            identifiers=identifiers,
            attributes=attributes.current(person.attrs),
            devices=devices,
            anonymous_ids=list(person.anonymous_ids),
            created_at=from_micros(person.created_at),
            updated_at=from_micros(person.updated_at),
        )

    def merges(self, identifier: str) -> list[Merge]:
        """Every conversion, merge and switch that shaped this person, in log order."""
        person = self.person(identifier)
        if person is None:
            return []
        rows: list[MergeRow] = [r for r in (self._get(MERGE, m) for m in person.merges) if r]
        return [merge_view(r) for r in sorted(rows, key=lambda r: r.position)]


def device_view(row: DeviceRow, attrs: DeviceAttributesRow | None) -> Device:
    """Build the public device view of a device row and its attribute row (if any)."""
    custom = {} if attrs is None else attributes.current(attrs.attrs)
    collected = {} if attrs is None else attributes.current(attrs.collected)
    updated_at = row.updated_at if attrs is None else max(row.updated_at, attrs.updated_at)
    return Device(
        device_id=row.device_id,
        person_id=row.person_id,
        anonymous_id=row.anonymous_id,
        token=row.token,
        platform=row.platform,
        attributes=custom,
        collected=collected,
        flat=flatten({**collected, **custom}),
        last_used=None if row.last_used is None else from_micros(row.last_used),
        last_status=row.last_status,
        created_at=from_micros(row.created_at),
        updated_at=from_micros(updated_at),
        sdk_anonymous_id=row.sdk_anonymous_id,
        server=row.server,
    )


def merge_view(row: MergeRow) -> Merge:
    """Build the public merge record."""
    return Merge(merge_id=row.merge_id, kind=row.kind, source=row.source, target=row.target,
                 position=row.position, reason=row.reason, device_id=row.device_id,
                 timestamp=from_micros(row.timestamp))
