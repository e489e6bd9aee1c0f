"""The identity rows as a stream of Changes reads them: each a slim struct decoded from the
stored row, with only the fields the stream uses (see :mod:`idstitch.projections.changes`)."""

from __future__ import annotations

from typing import Any

import msgspec
from idstitch.projections.identity.rows import (
    DEVICE,
    DEVICE_NAMES,
    PERSON,
    PERSON_NAMES,
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
