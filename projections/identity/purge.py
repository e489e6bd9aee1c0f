"""A forget's purge of the identity rows in place: what a rebuild would give, for the cost of
the forgotten person's own events, not of the log.

After a forget, the person's events read erased, and a rebuild from position 0 gives rows in
which none of its values remain. Only the rows the person's devices ever touched can differ
from the rows before the forget, so they are refolded alone: the *component* of the person
(its devices, every person those devices were ever on, every device of those persons, and so
on) is replayed from each device's first event, in log order, in a sandbox where the
component's rows start absent, and the result replaces those rows.

That is exact only if nothing outside the component ever read or wrote a row of it, and the
sandbox proves it before anything is destroyed (:func:`plan`): replaying the component's events
as they still read (the keys not destroyed yet) must reproduce every stored row it writes, byte
for byte, and read no row that exists outside it (a read of one grows the component, up to
:data:`MAX_ROUNDS` times). What a replay cannot see is checked on the rows: a refusal an outside
person got because a member held an identifier, a token an outside device lost to a member's
device. Whenever a check fails, :class:`Fallback` says why and the caller rebuilds every
projection instead, as a forget always did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
from idstitch.domain.events import DECISIONS_STREAM, DeviceTokenRegistered, PersonsMerged
from idstitch.projections.identity.fold import IdentityProjection
from idstitch.projections.identity.graph import IdentityUnit
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
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore
from idstitch.projections.unit import decode_row, new_cache

MAX_ROUNDS = 16
"""Times the component may grow (a read of an outside row) before the purge gives up."""
MAX_EVENTS = 1_000_000
"""Events of the component replayed at most (beyond, a rebuild is as cheap)."""

Rows = dict[tuple[str, str], bytes | None]
"""Encoded rows by (kind, key); None: no row."""

_EMPTY = msgspec.msgpack.encode([])
_NO_REFUSAL = msgspec.msgpack.encode("refused") + _EMPTY
_NO_TOKEN_LOST = msgspec.msgpack.encode("token_lost") + _EMPTY
"""How a row with an empty list of these reads in its bytes (rows are msgpack maps): rows
without it are the few worth decoding."""
_MERGED = frozenset({PersonsMerged})


class Fallback(Exception):
    """The purge in place cannot prove its result equals a rebuild's: rebuild instead."""


class _Grow(Exception):
    """The replay read a row outside the component: these persons and devices join it."""

    def __init__(self, persons: set[str], devices: set[str]) -> None:
        super().__init__()
        self.persons, self.devices = persons, devices


class Component(msgspec.Struct, kw_only=True):
    """The rows a forget may change, as :func:`plan` proved them self-contained."""

    persons: set[str]
    devices: set[str]
    until: int
    """The identity projection's position the rows were replayed to."""
    original: Rows
    """The component's stored rows (reproduced by the replay), to delete or replace."""
    positions: set[int]
    """Positions of the component's events up to ``until``."""


class _Sandbox:
    """The row source of a replay: the component's rows are absent (the replay makes them
    again); a row of anyone else that exists stops the replay and grows the component."""

    def __init__(self, store: ProjectionStore, persons: set[str], devices: set[str]) -> None:
        self._store, self._persons, self._devices = store, persons, devices

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        found = self._store.get_many(kind, keys)
        persons: set[str] = set()
        devices: set[str] = set()
        for key, raw in found.items():
            if kind == PERSON:
                if key not in self._persons:
                    persons.add(key)
            elif kind == DEVICE:
                if key not in self._devices:
                    devices.add(key)
            elif kind == IDENTIFIER:
                ident: IdentifierRow = decode_row(IdentifierRow, raw)
                named = {p for _, p in ident.history if p is not None}
                persons |= named - self._persons
            elif kind == TOKEN:
                if raw.decode() not in self._devices:
                    devices.add(raw.decode())
            elif kind == MERGE:
                merge: MergeRow = decode_row(MergeRow, raw)
                persons |= {merge.source, merge.target} - self._persons
            else:  # a kind of another projection: never read by the identity fold
                raise Fallback(f"the identity fold read a row of kind {kind!r}")
        if persons or devices:
            raise _Grow(persons, devices)
        return {}


def _replay(store: ProjectionStore, projection: IdentityProjection, persons: set[str],
            devices: set[str], events: Sequence[LoggedEvent]) -> IdentityUnit:
    """The component's events folded from nothing, in a sandbox (raises _Grow)."""
    unit = IdentityUnit(_Sandbox(store, persons, devices), new_cache(projection.row_types),
                        projection.row_types)
    projection.apply_all(unit, events)
    return unit


class _Events:
    """The component's events up to ``until``, read once per device, in log order."""

    def __init__(self, log: EventLog, until: int) -> None:
        self._log, self._until = log, until
        self._by_device: dict[str, list[LoggedEvent]] = {}

    def of(self, devices: Iterable[str]) -> list[LoggedEvent]:
        missing = sorted(d for d in devices if d not in self._by_device)
        if missing:
            read = self._log.read_spans([(d, 1, self._until + 1) for d in missing])
            for d in missing:
                self._by_device[d] = []
            for logged in read:
                self._by_device[logged.event.device_id].append(logged)
        out = [e for d in devices for e in self._by_device[d]]
        if len(out) > MAX_EVENTS:
            raise Fallback(f"the component holds {len(out)} events")
        out.sort(key=lambda e: e.position)
        return out


def _grow(store: ProjectionStore, persons: set[str], devices: set[str],
          new_persons: Iterable[str], new_devices: Iterable[str]) -> None:
    """Add persons with the devices of their stints, devices with their current person."""
    todo_p, todo_d = set(new_persons), set(new_devices)
    while todo_p or todo_d:
        todo_p -= persons
        todo_d -= devices
        persons |= todo_p
        devices |= todo_d
        found_d: set[str] = set()
        found_p: set[str] = set()
        for raw in store.get_many(PERSON, sorted(todo_p)).values():
            row: PersonRow = decode_row(PersonRow, raw)
            found_d.update(s.device_id for s in row.stints)
            if row.retired_into is not None:
                found_p.add(row.retired_into)
        for raw in store.get_many(DEVICE, sorted(todo_d)).values():
            dev: DeviceRow = decode_row(DeviceRow, raw)
            found_p.add(dev.person_id)
        todo_p, todo_d = found_p - persons, found_d - devices


def plan(store: ProjectionStore, log: EventLog, projection: IdentityProjection,
         members: Iterable[str], until: int) -> Component:
    """Find the forgotten family's component and prove a replay of it reproduces the stored
    rows (call it while the person's events still read, before any key is destroyed, with the
    identity rows caught up to ``until``). Fallback when it cannot be proved."""
    persons: set[str] = set()
    devices: set[str] = set()
    _grow(store, persons, devices, members, ())
    events = _Events(log, until)
    for _ in range(MAX_ROUNDS):
        replayed = events.of(sorted(devices))
        try:
            unit = _replay(store, projection, persons, devices, replayed)
            break
        except _Grow as grown:
            _grow(store, persons, devices, grown.persons, grown.devices)
    else:
        raise Fallback(f"the component kept growing ({len(devices)} devices)")
    written = unit.encoded()
    original = _stored(store, written)
    if written != original:
        raise Fallback("rows of the component were also written by events outside it")
    # Every row the component holds must be one the replay made.
    for kind, keys in ((PERSON, persons), (DEVICE, devices)):
        missing = set(store.get_many(kind, sorted(keys))) - {k for (c, k) in written if c == kind}
        if missing:
            raise Fallback(f"{kind} rows of the component made outside it: {sorted(missing)[:3]}")
    for key in devices:
        dev = unit.devices.get(key)
        if dev is not None and dev.token is not None and (TOKEN, dev.token) not in written:
            raise Fallback("a token of the component is held outside it")
    positions = {e.position for e in replayed}
    tokens = any(type(e.event) is DeviceTokenRegistered for e in replayed)
    _check_outside(store, log, persons, devices, positions, tokens=tokens)
    return Component(persons=persons, devices=devices, until=until, original=original,
                     positions=positions)


def _stored(store: ProjectionStore, keys: Iterable[tuple[str, str]]) -> Rows:
    """The stored bytes of these rows (None where none is stored)."""
    by_kind: dict[str, list[str]] = {}
    for kind, key in keys:
        by_kind.setdefault(kind, []).append(key)
    out: Rows = {}
    for kind, wanted in by_kind.items():
        found = store.get_many(kind, wanted)
        out.update({(kind, k): found.get(k) for k in wanted})
    return out


def _check_outside(store: ProjectionStore, log: EventLog, persons: set[str],
                   devices: set[str], positions: set[int], *, tokens: bool) -> None:
    """What outside rows keep of the component that a replay of it cannot see: a refusal
    because a member held an identifier (after the forget it may hold it no more), a token
    lost to a member's device (only if one registered a token: ``tokens``); and an explicit
    merge naming a member. Fallback if any."""
    for _, raw in store.scan_without(PERSON, _NO_REFUSAL):
        row: PersonRow = decode_row(PersonRow, raw)
        if row.person_id not in persons and any(
                r.held_by in persons or r.position in positions for r in row.refused):
            raise Fallback("a person outside the component was refused an identifier of it")
    if tokens and any(d not in devices for _, d in token_losses(store, positions)):
        raise Fallback("a device outside the component lost a token to it")
    for _, ev in log.read_spans([(DECISIONS_STREAM, 1, None)], _MERGED):
        assert isinstance(ev, PersonsMerged)
        if ev.primary in persons or ev.secondary in persons:
            raise Fallback("an explicit merge names a person of the component")


def token_losses(store: ProjectionStore, positions: set[int]) -> list[tuple[int, str]]:
    """(position, device) of each device that lost its token at one of ``positions``: to the
    device whose registration is there, which took it (one pass over the device rows that
    lost any, filtered by the store)."""
    out: list[tuple[int, str]] = []
    for _, raw in store.scan_without(DEVICE, _NO_TOKEN_LOST):
        dev: DeviceRow = decode_row(DeviceRow, raw)
        out.extend((p, dev.device_id) for p in dev.token_lost if p in positions)
    return sorted(out)


def purged(store: ProjectionStore, log: EventLog, projection: IdentityProjection,
           component: Component) -> Rows:
    """The component's rows as a rebuild gives them now (its events read as they do after the
    keys were destroyed): every row to write, None for a row to delete."""
    events = _Events(log, component.until).of(sorted(component.devices))
    try:
        unit = _replay(store, projection, component.persons, component.devices, events)
    except _Grow as grown:
        raise Fallback("the erased events reach outside the component") from grown
    rows: Rows = dict.fromkeys(component.original)
    rows.update(unit.encoded())
    return {k: v for k, v in rows.items() if v != component.original.get(k)}

