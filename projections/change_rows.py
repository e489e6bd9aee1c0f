"""The identity rows as a stream of Changes reads them: each a slim struct decoded from the
stored row, with only the fields the stream uses (see :mod:`idstitch.projections.changes`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from idstitch.domain.device import anonymous_id_for, anonymous_person_id
from idstitch.projections.identity.rows import (
    DEVICE,
    DEVICE_NAMES,
    PERSON,
    PERSON_NAMES,
    MergeRow,
    Refusal,
    Stint,
)


class PersonFields(msgspec.Struct, kw_only=True, gc=False, rename=PERSON_NAMES):
    """The fields of a person row (:class:`PersonRow`) a stream reads, decoded from the same
    stored row: the rest (its attributes above all) is skipped. The stream keeps tens of
    thousands of these, and every container they hold is one more object the garbage collector
    traverses at each full collection: tuples (of strings, numbers and ``gc=False`` structs)
    it stops tracking, lists never (the stored lists decode as tuples; the refold only
    iterates them). Stored names are :class:`PersonRow`'s (the rows format's short ones)."""

    person_id: str
    merges: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()
    created_at: int
    retired_into: str | None = None
    since: int = 0
    stints: tuple[Stint, ...] = ()


class DeviceFields(msgspec.Struct, kw_only=True, gc=False, rename=DEVICE_NAMES):
    """The fields of a device row a stream reads (see :class:`PersonFields`), under the
    stored names of :class:`DeviceRow`."""

    device_id: str
    person_id: str
    generation: int = 0
    ignored: tuple[int, ...] = ()


SLIM: dict[str, type[Any]] = {PERSON: PersonFields, DEVICE: DeviceFields}
"""The slim type each kind of row decodes as (the others: their stored type)."""


def search_persons(device_rows: dict[str, DeviceFields],
                   per_device: dict[str, dict[str, PersonFields]],
                   rows: Callable[[str, Iterable[str]], dict[str, Any]],
                   merge_rows_of: Callable[[Iterable[PersonFields]], dict[str, MergeRow]],
                   devices_of: dict[str, tuple[str, ...]]) -> None:
    """Every person these devices were ever on, added to ``per_device`` (device -> person id
    -> row): their anonymous persons (one a session), the persons those were merged into, and
    those a device switched to (the merge records it caused); breadth first, one read of
    ``rows`` a level. ``devices_of`` keeps, per person, the devices of its stints."""
    frontier: dict[str, set[str]] = {}
    for device_id, row in device_rows.items():
        for pid in (row.person_id, *(anonymous_person_id(anonymous_id_for(device_id, g))
                                     for g in range(row.generation + 1))):
            frontier.setdefault(pid, set()).add(device_id)
    persons: dict[str, PersonFields | None] = {}
    seen: set[tuple[str, str]] = set()
    while frontier:
        found = rows(PERSON, [p for p in frontier if p not in persons])
        for pid in frontier:
            persons.setdefault(pid, found.get(pid))
        merges = merge_rows_of(p for p in (persons[q] for q in frontier) if p)
        following: dict[str, set[str]] = {}
        for pid, devices in frontier.items():
            person = persons[pid]
            if person is None:
                continue
            on = devices_of.get(pid)
            if on is None:
                on = devices_of[pid] = tuple({s.device_id: 0 for s in person.stints})
            for device_id in devices:
                if (pid, device_id) in seen:
                    continue
                seen.add((pid, device_id))
                if device_id in on:
                    per_device[device_id][pid] = person
                if person.retired_into is not None:
                    following.setdefault(person.retired_into, set()).add(device_id)
                for merge_id in person.merges:
                    merge = merges.get(merge_id)
                    if merge is not None and merge.device_id == device_id:
                        following.setdefault(merge.source, set()).add(device_id)
                        following.setdefault(merge.target, set()).add(device_id)
        frontier = {p: d for p, d in following.items()
                    if any((p, x) not in seen for x in d)}
