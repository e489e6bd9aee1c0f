"""A device as it stood at a past position, refolded from its own events.

``profile_as_of`` (:mod:`idstitch.projections.auditor`) resolves the identifier as it did then
(identifier rows keep who they named from when; a person's row says when it was created and
when it was merged away), takes the person's attributes from its refolded history, and its
devices, those whose stints covered the position, from here: each refolded from its own
events up to it with the identity fold's own device functions
(:mod:`idstitch.projections.identity.local`) and the device attributes fold, plus the two
things other devices did to it (took its token, named a person no longer live), which its row
records. The result equals the profile of a workspace fed only the log up to that position.
"""

from __future__ import annotations

from typing import cast

from idstitch.domain.device import anonymous_id_for
from idstitch.domain.events import (
    DeviceActivated,
    DeviceTokenRegistered,
    DeviceTokenRemoved,
    Identified,
    IdentityCleared,
    ProfileAttributesChanged,
    PushStatusRecorded,
)
from idstitch.projections.device_attributes import AttributeEvent, DeviceAttributesRow, fold
from idstitch.projections.identity import local
from idstitch.projections.identity.rows import DeviceRow
from idstitch.projections.store import LoggedEvent, to_micros

_ATTRIBUTE_TYPES = frozenset(AttributeEvent.__args__)


def device_as_of(now: DeviceRow, events: list[LoggedEvent], at: int
                 ) -> tuple[DeviceRow, DeviceAttributesRow | None]:
    """A device's identity row and attribute row at position ``at``, refolded from its own
    events (``events``: all of them up to ``at``, in log order) and what its row ``now`` says
    other devices did to it."""
    losses = [p for p in now.token_lost if p <= at]
    ignored = set(now.ignored)
    first_pos, first = events[0]
    ts = to_micros(first.timestamp)
    row = local.new_device(now.device_id, ts)
    row.anonymous_id = anonymous_id_for(now.device_id, 0)
    row.server = now.server  # fixed by its first event
    attrs: DeviceAttributesRow | None = None
    lost = 0
    for pos, ev in events:
        while lost < len(losses) and losses[lost] < pos:
            row.token = None
            lost += 1
        kind = type(ev)
        if kind in _ATTRIBUTE_TYPES:
            attrs = fold(attrs, cast(AttributeEvent, ev), pos)
            continue
        ts = to_micros(ev.timestamp)
        if pos != first_pos and ts > row.updated_at:
            row.updated_at = ts
        if kind is Identified:
            local.session(row, cast(Identified, ev))
            if pos not in ignored:
                local.identified(row, cast(Identified, ev), ts)
        elif kind is ProfileAttributesChanged:
            local.session(row, cast(ProfileAttributesChanged, ev))
        elif kind is DeviceTokenRegistered:
            # Read erased, as the fold reads it: the device holds no token.
            (local.token_erased if ev.erased else local.token_registered)(
                row, cast(DeviceTokenRegistered, ev))
        elif kind is DeviceTokenRemoved:
            local.token_removed(row, cast(DeviceTokenRemoved, ev))
        elif kind is PushStatusRecorded:
            local.push_status(row, cast(PushStatusRecorded, ev))
        elif kind is IdentityCleared:
            local.cleared(row, cast(IdentityCleared, ev))
        elif kind is DeviceActivated:
            local.activated(row, cast(DeviceActivated, ev))
    if lost < len(losses):
        row.token = None
    return row, attrs
