"""A profile as the log stood at a past position, without replaying the rest of the log.

The identifier resolves as it did then (identifier rows keep who they named from when; a
person's row says when it was created and when it was merged away). The person's attributes
are refolded from its own events and those of the persons merged into it by then
(:mod:`idstitch.projections.audit`); its devices are those whose stints covered the position,
each refolded from its own events up to it with the identity fold's own device functions
(:mod:`idstitch.projections.identity.local`) and the device attributes fold, plus the two
things other devices did to it (took its token, named a person no longer live), which its row
records. The result equals the profile of a workspace fed only the log up to that position.
"""

from __future__ import annotations

from typing import cast

from idstitch.domain import attributes
from idstitch.domain.device import anonymous_id_for
from idstitch.domain.events import (
    DeviceActivated,
    DeviceTokenRegistered,
    DeviceTokenRemoved,
    Identified,
    IdentityCleared,
    PushStatusRecorded,
)
from idstitch.projections.audit import ATTRIBUTE_EVENTS, family, ignored_identifies, refold, spans
from idstitch.projections.device_attributes import AttributeEvent, DeviceAttributesRow, fold
from idstitch.projections.identity import local
from idstitch.projections.identity.rows import DeviceRow, PersonRow
from idstitch.projections.store import EventLog, LoggedEvent, from_micros, to_micros
from idstitch.projections.views import Device, Profile, Reader, device_view

_ATTRIBUTE_TYPES = frozenset(AttributeEvent.__args__)


def profile_as_of(reader: Reader, log: EventLog, identifier: str, at: int) -> Profile | None:
    """The profile ``identifier`` found when the log ended at position ``at``."""
    person = reader.person(identifier, at)
    if person is None:
        return None
    fam = family(reader, person, at)
    events = log.read_spans(spans(fam, at), ATTRIBUTE_EVENTS)
    states, newest, steps = refold(fam, events, ignored_identifies(reader, fam))
    for _ in steps:
        pass  # the states fill as the refold runs
    devices = [s.device_id for s in person.stints
               if s.start <= at and (s.end is None or s.end > at)]
    email = None
    for position, claimed in person.emails:
        if position <= at:
            email = claimed
    identified = person.identified_at is not None and person.identified_at <= at
    identifiers = {k: v for k, v in (("id", person.user_id if identified else None),
                                     ("email", email)) if v}
    return Profile(
        person_id=person.person_id,
        identified=identified,
        identifiers=identifiers,
        attributes=attributes.current(states[person.person_id]),
        devices=_devices(reader, log, person, devices, at),
        anonymous_ids=[a for a, since in zip(person.anonymous_ids, person.anonymous_since,
                                             strict=True) if since <= at],
        created_at=from_micros(person.created_at),
        updated_at=from_micros(newest[person.person_id]),
    )


def _devices(reader: Reader, log: EventLog, person: PersonRow, device_ids: list[str], at: int
             ) -> list[Device]:
    events = log.read_spans([(d, 0, at + 1) for d in device_ids])
    by_device: dict[str, list[LoggedEvent]] = {d: [] for d in device_ids}
    for logged in events:
        by_device[logged.event.device_id].append(logged)
    out: list[Device] = []
    for device_id in device_ids:
        now = reader.device_row(device_id)
        if now is None or not by_device[device_id]:
            continue
        row, attrs = device_as_of(now, by_device[device_id], at)
        row.person_id = person.person_id
        out.append(device_view(row, attrs))
    return out


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
            if pos not in ignored:
                local.identified(row, cast(Identified, ev), ts)
        elif kind is DeviceTokenRegistered:
            local.token_registered(row, cast(DeviceTokenRegistered, ev))
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
