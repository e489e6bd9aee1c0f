"""The device attributes projection: each device's custom and collected attributes.

A projection of its own, beside the identity projection: a device's attributes change no
person, no stitching and no token, and nothing in the identity fold reads them. Kept apart,
the two replay the log side by side (a rebuild uses two cores), and about half of a mobile
app's events (the SDK's auto-collected device attributes) never reach the identity fold.
Last writer wins per key on the client clock, as for person attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, cast

import msgspec
from idstitch.domain import attributes
from idstitch.domain.attributes import Attrs
from idstitch.domain.events import DeviceAttributesChanged, DeviceAttributesCollected
from idstitch.projections.base import RowProjection
from idstitch.projections.store import LoggedEvent, to_micros
from idstitch.projections.unit import RowTypes, Unit

ATTRIBUTES = "a"
"""The row kind: a device's attributes, keyed by device id."""


class DeviceAttributesRow(msgspec.Struct, kw_only=True, gc=False):
    """A device's custom attributes (set by the app) and collected ones (by the SDK).

    gc=False: it holds only JSON values and stamps, never another row (see Attrs)."""

    device_id: str
    attrs: Attrs = msgspec.field(default_factory=Attrs)
    collected: Attrs = msgspec.field(default_factory=Attrs)
    updated_at: int
    """The client time of its newest attribute event."""


class DeviceAttributesProjection(RowProjection):
    """Custom (``set_device_attributes``) and collected (``collect_device_attributes``)
    attributes per device, in rows of kind ``a`` keyed by device id."""

    name = "device_attributes"
    rows_format = 4
    """4: stored beside the identity rows' format 4 (its rows have not changed since)."""
    row_types: ClassVar[RowTypes] = {ATTRIBUTES: DeviceAttributesRow}
    event_types = frozenset({DeviceAttributesChanged, DeviceAttributesCollected})
    # A device's attributes take ~2.6 KB decoded (the SDK's collected context, a stamp per
    # key), five times an identity row: fewer of them make the same memory budget.
    cache_limit = 20_000

    def apply_all(self, unit: Unit, events: Sequence[LoggedEvent]) -> None:
        """Apply events in log order (their rows read first, in one query)."""
        types = self.event_types
        if not unit.complete:
            unit.prefetch(ATTRIBUTES, {ev.device_id for _, ev in events if type(ev) in types})
        rows: dict[str, DeviceAttributesRow | None] = unit.cache[ATTRIBUTES]
        dirty, new = unit.dirty[ATTRIBUTES], unit.new[ATTRIBUTES]
        for pos, ev in events:
            if type(ev) in types:
                device_id = ev.device_id
                row = rows.get(device_id)
                if row is None and device_id in rows and device_id not in dirty:
                    new.add(device_id)  # read as absent (see Unit.fresh)
                rows[device_id] = fold(row, cast(AttributeEvent, ev), pos)
                dirty.add(device_id)


AttributeEvent = DeviceAttributesChanged | DeviceAttributesCollected


def fold(row: DeviceAttributesRow | None, ev: AttributeEvent, pos: int) -> DeviceAttributesRow:
    """One attribute event applied to a device's row (created at its first): the projection's
    fold, and the audit's refold of a device as it stood at a past position."""
    ts = to_micros(ev.timestamp)
    if row is None:
        row = DeviceAttributesRow(device_id=ev.device_id, updated_at=ts)
    elif ts > row.updated_at:
        row.updated_at = ts
    target = row.collected if type(ev) is DeviceAttributesCollected else row.attrs
    attributes.assign(target, ev.attributes, (ts, pos))
    return row
