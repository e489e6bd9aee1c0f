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
    row_types: ClassVar[RowTypes] = {ATTRIBUTES: DeviceAttributesRow}
    event_types = frozenset({DeviceAttributesChanged, DeviceAttributesCollected})
    # A device's attributes take ~2.6 KB decoded (the SDK's collected context, a stamp per
    # key), five times an identity row: fewer of them make the same memory budget.
    cache_limit = 20_000

    def apply_all(self, unit: Unit, events: Sequence[LoggedEvent]) -> None:
        """Apply events in log order (their rows read first, in one query)."""
        if not unit.complete:
            unit.prefetch(ATTRIBUTES, {ev.device_id for _, ev in events
                                       if type(ev) in self.event_types})
        rows: dict[str, DeviceAttributesRow | None] = unit.cache[ATTRIBUTES]
        dirty = unit.dirty[ATTRIBUTES]
        assign = attributes.assign
        for pos, ev in events:
            kind = type(ev)
            if kind is DeviceAttributesCollected:
                collected = True
            elif kind is DeviceAttributesChanged:
                collected = False
            else:
                continue
            ts = to_micros(ev.timestamp)
            device_id = ev.device_id
            row = rows.get(device_id)
            if row is None:
                row = rows[device_id] = DeviceAttributesRow(device_id=device_id, updated_at=ts)
            elif ts > row.updated_at:
                row.updated_at = ts
            changed = cast(DeviceAttributesChanged | DeviceAttributesCollected, ev)
            assign(row.collected if collected else row.attrs, changed.attributes, (ts, pos))
            dirty.add(device_id)
