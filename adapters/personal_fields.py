"""Each event type's personal fields, as sealing and unsealing take and set them.

The fields are :data:`idstitch.domain.events.PERSONAL`'s (with the erased markers a stored copy
holds in their place). Sealing takes an event's values as one tuple (:data:`VALUES`), unsealing
sets them back on an event just decoded (:data:`SETTERS`): both run for every event an ingest
records or a replay reads, so each is a function built once per type, not a loop per event.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

import msgspec
from idstitch.domain.events import PERSONAL, DeviceEvent

FIELDS = {kind: tuple(blanks) for kind, blanks in PERSONAL.items()}
"""Per event type, the names of its personal fields, in the order they are sealed."""


def _getter(fields: tuple[str, ...]) -> Callable[[DeviceEvent], Any]:
    if len(fields) > 1:
        return attrgetter(*fields)  # a tuple, in C
    field = fields[0]
    return lambda event: (getattr(event, field),)


VALUES = {kind: _getter(fields) for kind, fields in FIELDS.items()}
"""Per event type, a function giving the tuple of its personal values (sealed together)."""


def _setter(fields: tuple[str, ...]) -> Callable[[Any, Any], None]:
    """A function setting an event's personal fields from the list they were sealed as, in
    place, one unpacking for all of them (a loop over ``zip`` per event was a sixth of
    unsealing a page). A list of another length raises, as ``zip(strict=True)`` did."""
    force = msgspec.structs.force_setattr
    if len(fields) == 1:
        (a,) = fields

        def one(event: Any, values: Any) -> None:
            (x,) = values
            force(event, a, x)
        return one
    if len(fields) == 3:
        a, b, c = fields

        def three(event: Any, values: Any) -> None:
            x, y, z = values
            force(event, a, x)
            force(event, b, y)
            force(event, c, z)
        return three
    if len(fields) == 4:
        a, b, c, d = fields

        def four(event: Any, values: Any) -> None:
            w, x, y, z = values
            force(event, a, w)
            force(event, b, x)
            force(event, c, y)
            force(event, d, z)
        return four

    def each(event: Any, values: Any) -> None:
        for name, value in zip(fields, values, strict=True):
            force(event, name, value)
    return each


SETTERS = {kind: _setter(fields) for kind, fields in FIELDS.items()}
"""Per event type, the function :meth:`~idstitch.adapters.crypto.SubjectCipher.unseal_all`
sets its values with."""
SPECS = {kind: (VALUES[kind], PERSONAL[kind]) for kind in FIELDS}
"""Per event type, its values' function and the erased markers its stored copy holds."""
