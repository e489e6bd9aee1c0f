"""The audit: a person's history as Changes, and where an attribute's value came from.

A person's history is read, not stored: its rows say which devices were on it from when to
when (stints) and which persons were merged into it, so its events are the events of those
devices in those position ranges (:meth:`EventLog.read_spans`: an indexed read, whatever the
length of the rest of the log). Their attribute changes (old -> new) are refolded here with
the very functions the identity fold applies (:mod:`idstitch.projections.identity.local`,
:mod:`idstitch.domain.attributes`), merges applied at the position of the event that caused
them, so the refold ends exactly where the person's row is.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
from idstitch.domain import attributes
from idstitch.domain.attributes import Attrs
from idstitch.domain.events import (
    DECISIONS_STREAM,
    EVENT_TYPES,
    DeviceEvent,
    Identified,
    PersonsMerged,
    ProfileAttributesChanged,
)
from idstitch.projections.identity import local
from idstitch.projections.identity.rows import MergeRow, PersonRow, Refusal
from idstitch.projections.store import LoggedEvent, Span, to_micros
from idstitch.projections.views import Merge, Reader, merge_view

ABSORBING = frozenset({"merged", "explicit"})
"""Merge kinds after which the source's past belongs to the target's history."""
_MERGE_RULES = {"merged": attributes.merge, "explicit": attributes.merge_under}
"""How each absorbing merge joins the source's attributes: on the client clock (an anonymous
merge), or the target's values first (an explicit merge: the primary wins)."""
ATTRIBUTE_EVENTS: frozenset[type[DeviceEvent]] = frozenset({Identified, ProfileAttributesChanged})
"""The events that write person attributes."""
_OPTIONAL = (("sdk_anonymous_id", None), ("late", False), ("server", False), ("erased", False))
"""Fields a Change's data shows only when they say something (an SDK session, a late message,
a server-side stream's start, an event whose person was forgotten)."""


class Refused(msgspec.Struct, frozen=True, kw_only=True):
    """An identifier the event could not give its person (Customer.io's attribute update
    failure): an email held by another person, or a ``cio_`` id no longer live."""

    kind: str
    value: str
    reason: str
    held_by: str | None


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the log as it landed, and what it did to the person it applied to."""

    position: int
    recorded_at: datetime
    """The workspace's clock when the event was recorded."""
    timestamp: datetime
    """The client's clock (skew-corrected)."""
    device_id: str | None
    message_id: str | None
    event: str
    """The event's name: ``Identified``, ``ProfileAttributesChanged``, ..."""
    data: dict[str, Any]
    """The event's own recorded fields (e.g. ``{"token": ..., "platform": ...}``)."""
    person_id: str
    """The person it applied to: the device's current person after the event."""
    changes: list[tuple[str, Any, Any]]
    """Person attribute changes it caused, ``(key, old, new)``; None for absent."""
    merges: list[Merge]
    """Conversions, merges and switches it caused."""
    refused: list[Refused] = []
    """Identifiers it could not give the person."""


class Provenance(msgspec.Struct, frozen=True, kw_only=True):
    """Where the current value of a person attribute came from."""

    attribute: str
    value: Any
    position: int
    device_id: str | None
    timestamp: datetime
    recorded_at: datetime
    event: str
    message_id: str | None
    overridden: list[Change]
    """The Changes that wrote this attribute and lost to the winner (late arrivals with
    older timestamps, values replaced later, values of persons merged in)."""


class Family(NamedTuple):
    """A person and every person whose past became part of its history (merged into it)."""

    person: PersonRow
    members: dict[str, PersonRow]
    merges: list[MergeRow]
    """Every merge record of the members, in log order (up to the audit's position)."""


def family(reader: Reader, person: PersonRow, at: int | None = None) -> Family:
    """``person`` and those merged into it (recursively), as of position ``at``."""
    members = {person.person_id: person}
    ids = list(dict.fromkeys(person.merges))
    rows = [r for r in (reader.merge_row(m) for m in ids) if r is not None
            and (at is None or r.position <= at)]
    grown = True
    while grown:
        grown = False
        for row in rows:
            if row.kind in ABSORBING and row.target in members and row.source not in members:
                source = reader.person_row(row.source)
                if source is not None:
                    members[source.person_id] = source
                    grown = True
    return Family(person, members, sorted(rows, key=lambda r: r.position))


def spans(fam: Family, until: int, after: int = 0) -> list[Span]:
    """The (device, start, end) ranges of every member's stints, cut to the positions after
    ``after`` up to ``until``."""
    out: list[Span] = []
    for member in fam.members.values():
        for stint in member.stints:
            start = max(stint.start, after + 1)
            end = until + 1 if stint.end is None else min(stint.end, until + 1)
            if start < end:
                out.append((stint.device_id, start, end))
    # An explicit merge is an event of the decisions stream, not of a member's device.
    out.extend((DECISIONS_STREAM, r.position, r.position + 1) for r in fam.merges
               if r.kind == "explicit" and r.target in fam.members
               and after < r.position <= until)
    return out


class Owners:
    """Which member each event applied to: the one whose stint on its device covers it."""

    def __init__(self, fam: Family) -> None:
        by_device: dict[str, list[tuple[int, int, str]]] = {}
        for member in fam.members.values():
            for stint in member.stints:
                end = 2**62 if stint.end is None else stint.end
                by_device.setdefault(stint.device_id, []).append(
                    (stint.start, end, member.person_id))
        self._starts = {d: [s for s, _, _ in sorted(v)] for d, v in by_device.items()}
        self._stints = {d: sorted(v) for d, v in by_device.items()}
        self._last: dict[str, tuple[int, int, str]] = {}
        """Per device, the stint its last event fell in: the next one mostly does too."""

    def of(self, device_id: str, position: int) -> str | None:
        last = self._last.get(device_id)
        if last is not None and last[0] <= position < last[1]:
            return last[2]
        stints = self._stints.get(device_id)
        if not stints:
            return None
        i = bisect_right(self._starts[device_id], position) - 1
        if i < 0 or position >= stints[i][1]:
            return None
        self._last[device_id] = stints[i]
        return stints[i][2]


class Step(NamedTuple):
    """One event of a refold: whom it applied to and what it changed."""

    logged: LoggedEvent
    person_id: str
    changes: list[tuple[str, Any, Any]]
    merges: list[MergeRow]
    wrote: Sequence[str]
    """The attribute keys the event itself wrote (set, removed or set once)."""
    applied: int | None
    """The client time (µs) of an applied identify or attribute call (it stamps the person's
    ``updated_at``), else None."""


_STEP = tuple.__new__
"""A Step built in C (a NamedTuple's own constructor is a Python function): one per event."""


def refold(
    fam: Family, events: Sequence[LoggedEvent], ignored: AbstractSet[int],
    states: dict[str, Attrs], newest: dict[str, int],
    owner: Callable[[str, int], str | None] | None = None,
    members: Sequence[str | None] | None = None,
) -> Iterator[Step]:
    """Replay the family's events into its members' attribute states, member by member: the
    steps, one per event, in order. ``states`` and ``newest`` (each member's newest client
    time of an applied identify or attribute call) are updated in place, as the iterator is
    consumed, from where an earlier refold left them (empty: from the start).
    ``ignored``: positions of refused identifies and attribute calls (they changed nothing).
    ``owner``: which member a device's event at a position applied to, when the caller has
    that index already (it must agree with the members' stints); by default, built from them.
    ``members``: the same, looked up already, one for each event (a decision's is not read).
    ``ignored`` is only asked whether it holds an event's position."""
    if members is None:
        owner_of = owner if owner is not None else Owners(fam).of
        members = list(map(owner_of, [ev.device_id for _, ev in events],
                           [pos for pos, _ in events]))
    by_position = _begin(fam, states, newest)

    def steps() -> Iterator[Step]:
        none: list[MergeRow] = []
        step = _STEP
        for logged, member in zip(events, members, strict=True):
            pos, ev = logged
            kind = type(ev)
            caused = by_position.get(pos, none)
            if kind is PersonsMerged:
                member = _primary(fam, caused)
            if member is None:
                continue  # outside every stint (cannot happen for events read by spans)
            if caused is none and ((kind is not ProfileAttributesChanged and kind is not Identified)
                                   or pos in ignored):
                yield step(Step, (logged, member, [], caused, (), None))  # changed nothing
            else:
                changes, wrote, applied = _apply(states, newest, ignored, logged, kind, member,
                                                 caused)
                yield step(Step, (logged, member, changes, caused, wrote, applied))

    return steps()


def refold_changes(
    fam: Family, events: Sequence[LoggedEvent], ignored: AbstractSet[int],
    states: dict[str, Attrs], newest: dict[str, int], members: Sequence[str | None],
    refused: dict[int, list[Refusal]], wanted: AbstractSet[str] | None = None,
) -> tuple[list[Change], int]:
    """``[change_of(step, refused) for step in refold(fam, events, ...)]``, built without a
    Step or a generator's turn an event (the stream of Changes runs it for every position),
    and how many events applied to a member (the Changes, when every one is ``wanted``).
    ``wanted``: the only event names whose Changes are built (None: all); every event is
    folded all the same."""
    by_position = _begin(fam, states, newest)
    none: list[MergeRow] = []
    out: list[Change] = []
    add = out.append
    folded = 0
    built = {kind for kind, name in _NAMES.items() if wanted is None or name in wanted}
    for logged, member in zip(events, members, strict=True):
        pos, ev = logged
        kind = type(ev)
        caused = by_position.get(pos, none)
        if kind is PersonsMerged:
            member = _primary(fam, caused)
        if member is None:
            continue
        folded += 1
        if caused is none and ((kind is not ProfileAttributesChanged and kind is not Identified)
                               or pos in ignored):
            if kind in built:
                add(_change(pos, ev, member, [], caused, refused))
        else:
            changes = _apply(states, newest, ignored, logged, kind, member, caused)[0]
            if kind in built:
                add(_change(pos, ev, member, changes, caused, refused))
    return out, folded


def _begin(fam: Family, states: dict[str, Attrs], newest: dict[str, int]
           ) -> dict[int, list[MergeRow]]:
    """A refold's start: every member's state (new ones empty), and the family's merge records
    by the position of the event that caused them."""
    for member, person in fam.members.items():
        if member not in states:
            states[member] = Attrs()
        if member not in newest:
            newest[member] = person.created_at
    by_position: dict[int, list[MergeRow]] = {}
    for merge in fam.merges:
        by_position.setdefault(merge.position, []).append(merge)
    return by_position


def _primary(fam: Family, caused: list[MergeRow]) -> str | None:
    """The member a decision applied to: its merge's primary (the target of its record)."""
    return next((r.target for r in caused if r.kind == "explicit" and r.target in fam.members),
                None)


def _apply(states: dict[str, Attrs], newest: dict[str, int], ignored: AbstractSet[int],
           logged: LoggedEvent, kind: type[DeviceEvent], member: str, caused: list[MergeRow]
           ) -> tuple[list[tuple[str, Any, Any]], Sequence[str], int | None]:
    """One event that caused merges or is an identify or attribute call, applied to its
    member's state: the attribute changes, the keys it wrote, its client time if applied."""
    pos, ev = logged
    absorbed: list[tuple[str, Attrs]] = [
        (r.kind, states[r.source]) for r in caused
        if r.kind in ABSORBING and r.target == member and r.source in states
    ] if caused else []
    wrote: Sequence[str] = ()
    applied: int | None = None
    if (kind is ProfileAttributesChanged or kind is Identified) and pos not in ignored:
        # Every applied identify and attribute call stamps the person's updated_at,
        # whatever it wrote (as the fold does).
        applied = to_micros(ev.timestamp)
        if applied > newest[member]:
            newest[member] = applied
        wrote = (list(ev.traits) if kind is Identified  # type: ignore[attr-defined]
                 else [*ev.set, *ev.unset, *ev.set_once])  # type: ignore[attr-defined]
    if not wrote and not absorbed:
        return [], wrote, applied
    value_of = attributes.value_of
    state = states[member]
    keys = (list(dict.fromkeys([*(k for _, s in absorbed for k in _keys(s)), *wrote]))
            if absorbed or kind is not Identified else wrote)  # (traits: keys of a dict)
    before = [value_of(state, k) for k in keys]
    for merge_kind, source in absorbed:
        _MERGE_RULES[merge_kind](state, source)
    if applied is not None:
        if kind is Identified:
            local.traits(state, ev, pos, applied)  # type: ignore[arg-type]
        else:
            local.profile_attributes(state, ev, pos, applied)  # type: ignore[arg-type]
    after = [value_of(state, k) for k in keys]
    changes = [(k, old[1] if old[0] else None, new[1] if new[0] else None)
               for k, old, new in zip(keys, before, after, strict=True) if old != new]
    return changes, wrote, applied


def _keys(state: Attrs) -> list[str]:
    return [*state.stamps, *(k for k in state.once if k not in state.stamps)]


EVENT_NAMES = {kind: str(kind.__struct_config__.tag) for kind in EVENT_TYPES}
"""Each event type's name (``Change.event``)."""
_NAMES = EVENT_NAMES


_SHOWN_IF = {kind: tuple((key, default) for key, default in _OPTIONAL
                        if key in kind.__struct_fields__ and key != "erased")
             for kind in EVENT_TYPES}
"""Per event type, the fields of :data:`_OPTIONAL` it has besides ``erased`` (every event's)."""


def change_of(step: Step, refused: dict[int, list[Refusal]]) -> Change:
    """The public Change of a refold step."""
    pos, ev = step.logged
    return _change(pos, ev, step.person_id, step.changes, step.merges, refused)


def _change(pos: int, ev: DeviceEvent, person_id: str, changes: list[tuple[str, Any, Any]],
            merges: list[MergeRow], refused: dict[int, list[Refusal]]) -> Change:
    data = msgspec.structs.asdict(ev)
    del (data["device_id"], data["message_id"], data["timestamp"], data["recorded_at"],
         data["key_id"], data["sealed"])  # the envelope: Change's own fields, or none of its
    # An SDK session's tag (a keyed hash kept for the forget) is the library's, not the event's.
    data.pop("sdk_tag", None)
    if not data["erased"]:
        del data["erased"]
    for key, default in _SHOWN_IF[type(ev)]:
        if data[key] == default:
            del data[key]
    return Change(
        position=pos, recorded_at=ev.recorded_at, timestamp=ev.timestamp,
        device_id=ev.device_id, message_id=ev.message_id, event=_NAMES[type(ev)], data=data,
        person_id=person_id, changes=changes,
        merges=[merge_view(r) for r in merges] if merges else [],
        refused=[Refused(kind=r.kind, value=r.value, reason=r.reason, held_by=r.held_by)
                 for r in refused[pos]] if pos in refused else [])


def refusals(fam: Family) -> dict[int, list[Refusal]]:
    """Every member's refused identifiers, by the position of the event that was refused."""
    out: dict[int, list[Refusal]] = {}
    for member in fam.members.values():
        for refusal in member.refused:
            out.setdefault(refusal.position, []).append(refusal)
    return out


def ignored_identifies(reader: Reader, fam: Family) -> frozenset[int]:
    """Positions of the members' devices' refused identifies."""
    devices = {s.device_id for m in fam.members.values() for s in m.stints}
    out: set[int] = set()
    for device_id in devices:
        row = reader.device_row(device_id)
        if row is not None:
            out.update(row.ignored)
    return frozenset(out)
