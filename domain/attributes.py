"""Per-key last-writer-wins on the client timestamp (identity-model.md §5).

Every write carries a stamp ``(client timestamp in µs, log position)``; the position breaks
timestamp ties. The outcome does not depend on the order late events arrive in:

- a plain write replaces a key's write only when its stamp is not older;
- ``set_once`` sets a key only while it has no value at that time: the earliest such write after
  the latest removal wins, and it never displaces a plain value;
- a removal is a write too: an older value arriving late does not resurrect the key;
- within one call, ``set`` then ``unset`` then ``set_once`` apply in that order (they share one
  stamp), so ``unset`` of a key beats its ``set``, and neither yields to a ``set_once`` of it.

The state is kept flat, as the values themselves plus a stamp per key, because applying events
is the hot path of every rebuild: an event newer than everything a person or device holds (the
common case: traffic mostly arrives in order) is applied with two ``dict.update`` calls, in C,
whatever its number of keys. Only late events compare key by key.
"""

from __future__ import annotations

from typing import Any

import msgspec

Stamp = tuple[int, int]
"""(client timestamp in microseconds since the epoch, log position)."""

OLDEST: Stamp = (-(2**63), -1)
"""Older than any write."""


class Attrs(msgspec.Struct, array_like=True, gc=False):
    """The attributes of one person or device, with what is needed to apply late writes.

    gc=False: it holds only JSON values and stamps, which cannot refer back to it, so no
    reference cycle passes through it; a rebuild holds tens of thousands of them.
    """

    values: dict[str, Any] = {}
    """Keys whose latest plain write is a value (not a removal): key -> that value."""
    stamps: dict[str, Stamp] = {}
    """Every key ever written plainly (set or removed) -> the stamp of its latest plain write."""
    top: Stamp = OLDEST
    """The newest stamp in ``stamps``: a write newer than it wins for every key at once."""
    once: dict[str, list[tuple[int, int, Any]]] = {}
    """``set_once`` writes newer than their key's latest plain write, oldest first."""


def current(attrs: Attrs) -> dict[str, Any]:
    """The present attributes: every key that has a value now."""
    if not attrs.once:
        return dict(attrs.values)
    out = dict(attrs.values)
    for key, writes in attrs.once.items():
        if key not in out:
            out[key] = writes[0][2]
    return out


_ABSENT: Any = object()


def value_of(attrs: Attrs, key: str) -> tuple[bool, Any]:
    """(present, value) of one key now."""
    # No KeyError caught: an absent key is common (an identify's new traits, in every refold)
    # and raising cost twice the lookup.
    value = attrs.values.get(key, _ABSENT)
    if value is not _ABSENT:
        return True, value
    writes = attrs.once.get(key)
    return (True, writes[0][2]) if writes else (False, None)


def assign(attrs: Attrs, changes: dict[str, Any], stamp: Stamp) -> None:
    """Plain writes of several keys at one stamp; a value of None removes the key."""
    if not changes:
        return
    if stamp >= attrs.top:
        # Newer than every plain write held: each key takes its new value, no compare needed.
        attrs.top = stamp
        values = attrs.values
        values.update(changes)
        attrs.stamps.update(dict.fromkeys(changes, stamp))
        if None in changes.values():
            for key, value in changes.items():
                if value is None:
                    del values[key]
        if attrs.once:
            for key in changes:
                if key in attrs.once:
                    _prune(attrs, key, stamp)
        return
    stamps = attrs.stamps
    for key, value in changes.items():
        old = stamps.get(key)
        if old is not None and stamp < old:
            continue  # a late write: the newer one stays
        stamps[key] = stamp
        if value is None:
            attrs.values.pop(key, None)
        else:
            attrs.values[key] = value
        if key in attrs.once:
            _prune(attrs, key, stamp)


def assign_once(attrs: Attrs, changes: dict[str, Any], stamp: Stamp) -> None:
    """``set_once`` writes: each key takes its value only while it has none at that time."""
    for key, value in changes.items():
        if value is None:
            continue
        old = attrs.stamps.get(key)
        if old is not None and not stamp > old:
            continue  # a plain write at or after this time decides the key
        writes = attrs.once.get(key)
        write = (stamp[0], stamp[1], value)
        if writes is None:
            attrs.once[key] = [write]
        else:
            writes.append(write)
            writes.sort(key=_write_stamp)


def merge(into: Attrs, other: Attrs) -> None:
    """Fold ``other``'s writes into ``into`` (an anonymous person's into its survivor's).

    Where both wrote a key at the same client time, ``into`` (the survivor) wins the tie,
    whatever the kinds of the writes and their log positions: ``other``'s plain writes (sets
    and removals) at that time count as made before all of ``into``'s, and its ``set_once``
    writes at that time do not count. So the survivor's plain write beats theirs; the
    survivor's removal keeps out their ``set_once``; the survivor's ``set_once`` takes a key
    their removal freed, and beats their ``set_once``; a plain value, theirs or the survivor's,
    is never displaced by a ``set_once``. Otherwise the newer plain write wins and the
    ``set_once`` writes of both are pooled (the earliest after the winning plain write wins).

    Afterwards no two kept ``set_once`` writes of a key share a client time unless they are
    the same person's, so the list stays in (time, position) order whatever is sorted into it
    later. A survivor's ``set_once`` write may then be older by position than the plain write
    of ``other`` it follows (same client time): it still counts; later writes have higher
    positions, so that never reverses a later comparison.
    """
    stamps, once = into.stamps, into.once
    taken: set[str] = set()
    for key, theirs in other.stamps.items():
        mine = stamps.get(key)
        if mine is not None and theirs[0] <= mine[0]:
            continue  # the survivor's plain write is as new or newer: it stands
        stamps[key] = theirs
        taken.add(key)
        if key in other.values:
            into.values[key] = other.values[key]
        else:
            into.values.pop(key, None)
        if theirs > into.top:
            into.top = theirs
        writes = once.get(key)
        if writes:
            # Their newer plain write decides; the survivor's set_once writes of its very
            # time follow it (a tie the survivor wins), the older ones no longer matter.
            kept = [w for w in writes if w[0] >= theirs[0]]
            if kept:
                once[key] = kept
            else:
                del once[key]
    for key, theirs_once in other.once.items():
        mine = stamps.get(key)
        if mine is not None and key not in taken:
            # The survivor's plain write stands: theirs at its time or before do not count.
            theirs_once = [w for w in theirs_once if w[0] > mine[0]]
        writes = once.get(key)
        if writes:
            times = {w[0] for w in writes}
            theirs_once = [w for w in theirs_once if w[0] not in times]  # the survivor's win
        if theirs_once:
            once[key] = (sorted([*writes, *theirs_once], key=_write_stamp) if writes
                         else list(theirs_once))


def merge_under(into: Attrs, other: Attrs) -> None:
    """Fold ``other``'s keys into ``into`` where ``into`` holds no value (an explicit merge:
    the primary ``into`` wins on every key both hold, whatever the timestamps)."""
    for key in [*other.stamps, *other.once]:
        if value_of(into, key)[0] or not value_of(other, key)[0]:
            continue
        into.once.pop(key, None)
        if key in other.stamps:
            into.stamps[key] = stamp = other.stamps[key]
            if key in other.values:
                into.values[key] = other.values[key]
            into.top = max(into.top, stamp)
        else:
            # The key is the secondary's now, all of it: a removal of the primary's must not
            # outlast it and decide later writes against the value it took (that depended on
            # whether the secondary had ever made a plain write of the key, even a no-op).
            into.stamps.pop(key, None)
        if key in other.once:
            into.once[key] = list(other.once[key])


def _prune(attrs: Attrs, key: str, stamp: Stamp) -> None:
    # set_once writes at or before a plain write no longer matter: that write decides the key.
    kept = [w for w in attrs.once[key] if (w[0], w[1]) > stamp]
    if kept:
        attrs.once[key] = kept
    else:
        del attrs.once[key]


def _write_stamp(write: tuple[int, int, Any]) -> Stamp:
    return write[0], write[1]
