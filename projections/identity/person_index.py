"""Wide persons: the devices limit, and membership indexes (which devices and merges a person
row holds, and each device's open stint) that spare the fold scanning the row's lists.

A person's ``devices``, ``merges`` and ``stints`` are lists (their order is part of the row and
of the audit), and the fold asked ``device in person.devices`` at every join and leave: a
user identified on tens of thousands of devices made each of their events cost a scan, and an
ingest of their traffic quadratic. A person with at least :data:`INDEX_FROM` devices gets sets
kept beside its lists, built once from the row and then kept up to date by the functions of
:mod:`idstitch.projections.identity.persons`; smaller persons scan, which is cheaper.

An index belongs to one row object (the fold mutates cached rows in place). It is checked
before every use: the same object, and lists of the lengths it last saw; anything else
(another row object after a reload, a list changed by code that does not keep the index)
rebuilds it from the row. At most :data:`KEPT` indexes are kept, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from idstitch.projections.identity.rows import PersonRow, Stint

MAX_DEVICES = 50_000
"""The most devices a person takes (docs/reference/api.md, "Limits"): the fold records an
identify that would bring one more, does not apply it, and leaves a Refusal on the device's own
person. A person's row holds its devices, stints and merge records and is rewritten whole at
each commit; this keeps it at a few MB."""
TOO_MANY_DEVICES = (f"the person already has {MAX_DEVICES} devices, the most a person may "
                    "have; recorded, not applied")
"""The reason of that Refusal."""
INDEX_FROM = 64
"""Persons with fewer devices than this are scanned (a set would cost more than the scan)."""
KEPT = 256
"""How many wide persons' indexes are kept (each holds a reference to its row)."""


class PersonIndex:
    """Sets over one person row's lists, and its open stints by device."""

    __slots__ = ("devices", "lengths", "merges", "open", "row")

    def __init__(self, row: PersonRow) -> None:
        self.row = row
        self.devices = set(row.devices)
        self.merges = set(row.merges)
        self.open: dict[str, Stint] = {}
        for stint in row.stints:  # the last open stint of a device wins, as end_stint's scan
            if stint.end is None:
                self.open[stint.device_id] = stint
        self.lengths = self.measure(row)

    @staticmethod
    def measure(row: PersonRow) -> tuple[int, int, int]:
        """The lengths an up-to-date index last saw."""
        return len(row.devices), len(row.merges), len(row.stints)

    def seen(self) -> None:
        """The indexed functions changed the row and this index alike."""
        self.lengths = self.measure(self.row)


_indexes: OrderedDict[int, PersonIndex] = OrderedDict()
_lock = threading.Lock()


def index_of(person: PersonRow) -> PersonIndex | None:
    """The person's index (built or rebuilt if needed), or None for a narrow person."""
    if len(person.devices) < INDEX_FROM:
        return None
    key = id(person)  # the index holds the row, so the id is not reused while it is kept
    with _lock:
        found = _indexes.get(key)
        if (found is None or found.row is not person
                or found.lengths != PersonIndex.measure(person)):
            found = _indexes[key] = PersonIndex(person)
        _indexes.move_to_end(key)
        while len(_indexes) > KEPT:
            _indexes.popitem(last=False)
        return found
