"""Per-key last-writer-wins on the client timestamp (identity-model.md §5).

Each attribute key keeps a :class:`Slot`: the newest plain write (a value or a removal) and the
``set_once`` writes that came after it. Writes are ordered by (client timestamp, log position),
so the outcome does not depend on the order late events arrive in:

- a plain write replaces the slot's write only when it is newer;
- ``set_once`` sets a key only while it has no value at that time: the earliest such write after
  the latest removal wins, and it never displaces a plain value;
- a removal is a write too: an older value arriving late does not resurrect the key;
- within one call, ``set`` then ``unset`` then ``set_once`` apply in that order, so ``unset`` of a
  key beats its ``set``, and neither is displaced by a ``set_once`` of the same key.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Write(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One write to one key. Projection rows are rebuildable, so array_like is safe here.

    gc=False: a write holds a JSON value, which cannot refer back to it, so no reference
    cycle can pass through it; there are hundreds of thousands of them in a rebuild and the
    cyclic collector need not scan them."""

    value: Any
    ts: int
    """Client time in microseconds since the epoch."""
    pos: int
    """Log position: breaks timestamp ties."""
    deleted: bool = False


class Slot(msgspec.Struct, array_like=True, gc=False):
    """The state of one attribute key (gc=False: it holds only writes, see Write)."""

    reg: Write | None = None
    once: list[Write] = []

    def value(self) -> tuple[bool, Any]:
        """(present, value) of the key now."""
        reg = self.reg
        if reg is not None and not reg.deleted:
            return True, reg.value
        if self.once:
            return True, self.once[0].value
        return False, None

    def _prune(self) -> None:
        reg = self.reg
        if reg is not None and self.once:
            self.once = [w for w in self.once if (w.ts, w.pos) > (reg.ts, reg.pos)]


def _newer(a: Write, b: Write) -> bool:
    return (a.ts, a.pos) > (b.ts, b.pos)


def put(slots: dict[str, Slot], key: str, write: Write) -> None:
    """A plain set (or, with ``deleted``, a removal) of one key."""
    slot = slots.get(key)
    if slot is None:
        slots[key] = Slot(reg=write)
        return
    # Equal (timestamp, position) only happens within one call: its later operation wins,
    # so `unset` beats a `set` of the same key in the same call.
    reg = slot.reg
    if reg is None or reg.ts < write.ts or (reg.ts == write.ts and reg.pos <= write.pos):
        slot.reg = write
        if slot.once:
            slot._prune()


def put_once(slots: dict[str, Slot], key: str, write: Write) -> None:
    """A ``set_once`` of one key."""
    slot = slots.get(key)
    if slot is None:
        slots[key] = Slot(once=[write])
        return
    if slot.reg is not None and not _newer(write, slot.reg):
        return
    slot.once = sorted([*slot.once, write], key=lambda w: (w.ts, w.pos))


def apply(
    slots: dict[str, Slot],
    *,
    set_: dict[str, Any],
    set_once: dict[str, Any] | None = None,
    unset: list[str] | None = None,
    ts: int,
    pos: int,
) -> None:
    """Apply one event's attribute operations: None in ``set_`` removes the key."""
    for key, value in set_.items():
        write = Write(value, ts, pos, value is None)
        slot = slots.get(key)
        if slot is None:
            # The common case, inlined: a key this person or device never had.
            slots[key] = Slot(reg=write)
        else:
            put(slots, key, write)
    for key in unset or ():
        put(slots, key, Write(None, ts, pos, True))
    for key, value in (set_once or {}).items():
        if value is not None:
            put_once(slots, key, Write(value, ts, pos))


def merge(into: dict[str, Slot], other: dict[str, Slot]) -> None:
    """Fold ``other``'s writes into ``into``; on equal timestamps ``into`` (the survivor) wins."""
    for key, theirs in other.items():
        mine = into.get(key)
        if mine is None:
            into[key] = Slot(reg=theirs.reg, once=list(theirs.once))
            continue
        if theirs.reg is not None and (mine.reg is None or theirs.reg.ts > mine.reg.ts):
            mine.reg = theirs.reg
        if theirs.once:
            mine.once = sorted([*mine.once, *theirs.once], key=lambda w: (w.ts, w.pos))
        mine._prune()


def current(slots: dict[str, Slot]) -> dict[str, Any]:
    """The present attributes: every key that has a value now."""
    out: dict[str, Any] = {}
    for key, slot in slots.items():
        present, value = slot.value()
        if present:
            out[key] = value
    return out
