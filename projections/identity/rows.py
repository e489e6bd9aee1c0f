"""The rows of the identity projection, stored as msgpack documents keyed by (kind, key).

Kinds: ``p`` person, ``d`` device, ``i`` identifier, ``t`` token -> device id, ``m`` merge
record. Rows are derived data: they can always be rebuilt from the log.

Besides the present, the rows keep the few facts an audit needs to answer "as the log stood at
position p" without replaying the rest of the log (see :mod:`idstitch.projections.audit`):
when each device joined and left each person (``stints``), when a person was created,
identified and retired, which email it held from when, and which person an identifier named
from when. Everything else about a person at a past position is refolded from its own events.

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

# The names the rows' fields are stored under (rows format 5): a person row's field names were
# a fifth of its bytes, a device row's a third, and every row repeats them. Two fields keep
# their names: the purge finds the rows to check by the bytes of ``"refused": []`` and
# ``"token_lost": []`` (see projections/identity/purge.py).
PERSON_NAMES = {
    "person_id": "p", "identified": "i", "user_id": "u", "email": "e", "attrs": "a",
    "anonymous_ids": "n", "anonymous_since": "ns", "devices": "d", "merges": "m",
    "created_at": "c", "updated_at": "up", "retired_into": "r", "since": "s",
    "identified_at": "ia", "retired_at": "ra", "stints": "st", "emails": "es",
}
DEVICE_NAMES = {
    "device_id": "d", "person_id": "p", "anonymous_id": "n", "generation": "g", "user_id": "u",
    "token": "t", "platform": "pl", "auto_track": "at", "sdk": "sdk", "last_used": "lu",
    "last_status": "ls", "created_at": "c", "updated_at": "up", "seq": "q", "ignored": "ig",
    "server": "sv", "sdk_anonymous_id": "sa",
}
MERGE_NAMES = {
    "merge_id": "id", "kind": "k", "source": "s", "target": "t", "position": "p",
    "device_id": "d", "reason": "r", "timestamp": "ts",
}


class Refusal(msgspec.Struct, frozen=True, gc=False,
              rename={"kind": "k", "value": "v", "reason": "r", "position": "p", "held_by": "h"}):
    """An identifier the person could not take (Customer.io's attribute update failure)."""

    kind: str
    value: str
    reason: str
    position: int
    held_by: str | None = None


class Stint(msgspec.Struct, array_like=True, gc=False):
    """A device on a person from position ``start`` (the event that brought it) until ``end``
    (the event that took it away; None while it stays). Every event of the device in
    ``start <= position < end`` applied to this person."""

    device_id: str
    start: int
    end: int | None = None


class PersonRow(msgspec.Struct, kw_only=True, gc=False, rename=PERSON_NAMES):
    """A person: anonymous until an identify names it; retired when merged into another."""

    person_id: str
    identified: bool = False
    user_id: str | None = None
    email: str | None = None
    attrs: Attrs = msgspec.field(default_factory=Attrs)
    anonymous_ids: list[str] = []
    anonymous_since: list[int] = []
    """The position from which each of ``anonymous_ids`` belonged to the person."""
    devices: list[str] = []
    merges: list[str] = []
    refused: list[Refusal] = []
    created_at: int
    updated_at: int
    retired_into: str | None = None
    since: int = 0
    """The position of the event that created the person."""
    identified_at: int | None = None
    """The position from which the person was identified."""
    retired_at: int | None = None
    """The position of the merge that retired it into ``retired_into``."""
    stints: list[Stint] = []
    emails: list[tuple[int, str]] = []
    """Each email the person held, with the position it was claimed at."""

    @property
    def nameless(self) -> bool:
        """Identified, and holding no identifier: identified only by identifies that read
        erased (a forgotten person, once its rows were purged or rebuilt)."""
        return self.identified and self.user_id is None and self.email is None and not self.emails


class DeviceRow(msgspec.Struct, kw_only=True, gc=False, rename=DEVICE_NAMES):
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
    seq: int = 0
    """How many of the device's events this projection folded: ids minted at the n-th derive
    from (device, n), the same on every store whatever the log's positions."""
    token_lost: list[int] = []
    """Positions at which another device took this device's token (registered it)."""
    ignored: list[int] = []
    """Positions of identifies and attribute calls that were refused (a ``cio_`` id no longer
    live, a message of an ended SDK session): they changed nothing."""
    server: bool = False
    """A server-side stream (a backend's identifies of one user): not one of its devices."""
    sdk_anonymous_id: str | None = None
    """The SDK's ``anonymousId`` of the device's current session, once a message carried one."""


class IdentifierRow(msgspec.Struct, array_like=True, gc=False):
    """Which person an identifier (``id:``, ``email:``, ``anon:`` key) names, and since when."""

    person_id: str | None
    """The person it names now (None: released, e.g. an email the person no longer has)."""
    history: list[tuple[int, str | None]]
    """(position, person) each time it was claimed or released, oldest first."""


class MergeRow(msgspec.Struct, kw_only=True, frozen=True, gc=False, rename=MERGE_NAMES):
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
    PERSON: PersonRow, DEVICE: DeviceRow, IDENTIFIER: IdentifierRow, TOKEN: str, MERGE: MergeRow,
}
"""The identity projection's row kinds and what each row is."""
