"""identity-model.md section 3 for one identify: whom its user id names, and what becomes of the
device's person (conversion, merge or switch by the ``anonymous_merge`` policy).

The identity fold (:mod:`idstitch.projections.identity.fold`) calls these for every identify
it folds; an identify that reads erased (its person forgotten) skips :func:`resolve` and goes
to the member of the forgotten person the forget recorded (``PersonForgotten.subjects``).
"""

from __future__ import annotations

from idstitch.domain.device import minted_person_id, new_person_id
from idstitch.domain.events import Identified
from idstitch.domain.rules import classify, normalize_email
from idstitch.projections.identity import decisions, local, persons
from idstitch.projections.identity.config import Policy
from idstitch.projections.identity.decisions import DecisionsAhead
from idstitch.projections.identity.graph import IdentityUnit, identifier_key
from idstitch.projections.identity.person_index import MAX_DEVICES, TOO_MANY_DEVICES
from idstitch.projections.identity.persons import IdScheme
from idstitch.projections.identity.rows import DeviceRow, PersonRow, Refusal


def resolve(unit: IdentityUnit, dev: DeviceRow, ev: Identified, pos: int
            ) -> tuple[PersonRow, str, str, PersonRow | None] | None:
    """(the device's current person, the user id's kind, its value, the person it names or
    None), or None when the identify is refused (recorded on the current person, visibly): a
    ``cio_`` id of a person retired since the command's check, or a person at its device
    limit."""
    current = unit.person(dev.person_id)
    kind = classify(ev.user_id)
    value = normalize_email(ev.user_id) if kind == "email" else ev.user_id
    if kind == "cio":
        target = unit.live_person(ev.user_id[len("cio_"):])
        if target is None or not target.identified:
            # The command checked it; a concurrent merge retired it since. Refuse, visibly.
            current.refused.append(Refusal("cio", ev.user_id, "not a live identified person",
                                           pos))
            dev.ignored.append(pos)
            unit.put_person(current)
            return None
    else:
        target = unit.resolve_key(identifier_key(kind, value))
    if (target is not None and target.person_id != current.person_id
            and len(target.devices) >= MAX_DEVICES):
        # A person's row holds its devices, stints and merges: past the limit, a further
        # device is refused, visibly, as an identify of a retired person is.
        current.refused.append(Refusal(
            kind, ev.user_id if kind == "cio" else value, TOO_MANY_DEVICES, pos,
            target.person_id))
        dev.ignored.append(pos)
        unit.put_person(current)
        return None
    return current, kind, value, target


def stitch(unit: IdentityUnit, dev: DeviceRow, ev: Identified, pos: int, ts: int,
           current: PersonRow, kind: str | None, value: str, target: PersonRow | None,
           policy: Policy, ids: IdScheme, ahead: DecisionsAhead | None) -> None:
    """The device's ``current`` person and the ``target`` the user id resolved to (None:
    nobody yet). ``kind`` None: an erased identify, whose target is the member it identified
    (the device's own anonymous person when it was a conversion), with no identifier to
    claim."""
    if target is not None and target.person_id == current.person_id and (
            current.identified or kind is not None):
        person = current
    elif not current.identified and (target is None or target.person_id == current.person_id):
        current.identified = True
        current.identified_at = pos
        if kind is not None:
            persons.claim(unit, current, kind, value, pos)
        if current.email is None:
            # An email given while anonymous becomes an identifier when the person is named.
            persons.claim_attribute_email(unit, current, pos)
        persons.record(unit, "converted", dev.anonymous_id, current, current, dev, pos, ts,
                       ids)
        person = current
    elif (not current.identified and target is not None and policy == "merge"
          and not decisions.undone_automatic(unit, target, current, dev, pos, ts,
                                             ids, ahead)):
        persons.merge_anonymous(unit, target, current, dev, pos, ts, ids)
        person = target
    else:
        if target is None:
            minted = (minted_person_id(dev.device_id, dev.seq) if ids == "event"
                      else new_person_id(dev.device_id, pos))
            target = PersonRow(person_id=minted, identified=True, identified_at=pos,
                               created_at=ts, updated_at=ts, since=pos)
            if kind is not None:
                persons.claim(unit, target, kind, value, pos)
        persons.leave(unit, dev, current.person_id, pos)
        persons.join(unit, dev, target, pos)
        persons.record(unit, "switched", current.person_id, current, target, dev, pos, ts,
                       ids)
        person = target

    local.traits(person.attrs, ev, pos, ts)
    persons.attributes_written(unit, person, pos, ts, "email" in ev.traits)
    local.identified(dev, ev, ts)


__all__ = ["resolve", "stitch"]
