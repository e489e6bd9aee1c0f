"""The rows of the identity projection, stored as msgpack documents keyed by (kind, key).

Kinds: ``p`` person, ``d`` device, ``i`` identifier -> person id, ``t`` token -> device id,
``m`` merge record. Rows are derived data: they can always be rebuilt from the log.

Rows hold only strings, numbers, JSON values and each other's keys (never a reference to another
row object), so no reference cycle can pass through them: they opt out of the cyclic garbage
collector (``gc=False``), which otherwise rescans the whole working set during a rebuild.
"""

from __future__ import annotations

from typing import Any

import msgspec
from idstitch.domain.attributes import Attrs

PERSON = "p"
DEVICE = "d"
IDENTIFIER = "i"
TOKEN = "t"
MERGE = "m"


class Refusal(msgspec.Struct, frozen=True, gc=False):
    """An identifier the person could not take (Customer.io's attribute update failure)."""

    kind: str
    value: str
    reason: str
    position: int
    held_by: str | None = None


class PersonRow(msgspec.Struct, kw_only=True, gc=False):
    """A person: anonymous until an identify names it; retired when merged into another."""

    person_id: str
    identified: bool = False
    user_id: str | None = None
    email: str | None = None
    attrs: Attrs = msgspec.field(default_factory=Attrs)
    anonymous_ids: list[str] = []
    devices: list[str] = []
    merges: list[str] = []
    refused: list[Refusal] = []
    created_at: int
    updated_at: int
    retired_into: str | None = None


class DeviceRow(msgspec.Struct, kw_only=True, gc=False):
    """A device as the identity projection sees it: its current person and token.

    ``updated_at``: the client time of its newest event among those this projection folds
    (the device view takes the newer of this and its attribute row's)."""

    device_id: str
    person_id: str
    anonymous_id: str
    generation: int = 0
    user_id: str | None = None
    token: str | None = None
    platform: str | None = None
    auto_track: bool = True
    sdk: dict[str, object] | None = None
    last_used: int | None = None
    last_status: str | None = None
    created_at: int
    updated_at: int


class MergeRow(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A conversion, merge or switch, with the position of the event that caused it."""

    merge_id: str
    kind: str
    source: str
    target: str
    position: int
    device_id: str | None = None
    reason: str | None = None
    timestamp: int


ROW_TYPES: dict[str, type[Any]] = {
    PERSON: PersonRow, DEVICE: DeviceRow, IDENTIFIER: str, TOKEN: str, MERGE: MergeRow,
}
"""The identity projection's row kinds and what each row is."""
