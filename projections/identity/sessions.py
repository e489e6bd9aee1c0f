"""SDK sessions and server-side streams as the identity fold sees them.

SDK sessions (docs/explanation/stitching.md, "Resets in SDK traffic"): the device
aggregate decided which session a message belongs to; the fold gives a session's
anonymousId to the person the device is on when the session starts (merges carry it on,
as they carry every anonymous id), and records a late message without applying it.
"""

from __future__ import annotations

from idstitch.domain.device import anonymous_id_for, minted_person_id, new_person_id
from idstitch.domain.events import Identified, ProfileAttributesChanged
from idstitch.domain.rules import classify, normalize_email
from idstitch.projections.identity import persons
from idstitch.projections.identity.graph import IdentityUnit, identifier_key
from idstitch.projections.identity.persons import IdScheme
from idstitch.projections.identity.rows import DeviceRow, PersonRow, Refusal

SESSION_TAG = "anontag"
"""The identifier kind of a session known by its tag only: no query looks it up."""


def tag_session(unit: IdentityUnit, dev: DeviceRow, sdk_anonymous_id: str, pos: int,
                sdk_tag: str | None = None) -> None:
    """A session's anonymousId goes to the person the device is on when the session starts.
    ``sdk_tag``: its tag, given once the log holds a forget (then a session known by its tag
    alone, a forgotten person's, may have named it first)."""
    if unit.owner(identifier_key("anon", sdk_anonymous_id)) is not None:
        return  # another device's session already named it: the first one keeps it
    if sdk_tag is not None and unit.owner(identifier_key(SESSION_TAG, sdk_tag)) is not None:
        return  # so did a forgotten person's: it keeps it, found by nothing
    person = unit.person(dev.person_id)
    person.anonymous_ids.append(sdk_anonymous_id)
    person.anonymous_since.append(pos)
    unit.put_identifier("anon", sdk_anonymous_id, person.person_id, pos)
    unit.put_person(person)


def tag_erased(unit: IdentityUnit, dev: DeviceRow, sdk_tag: str, pos: int) -> None:
    """A session whose anonymousId reads erased (its person was forgotten) is known by its tag
    (:mod:`idstitch.domain.sdk_sessions`) from then on: the person it went to, found by no
    query, still holds it for a late message of it (:func:`late`)."""
    if unit.owner(identifier_key(SESSION_TAG, sdk_tag)) is None:
        unit.put_identifier(SESSION_TAG, sdk_tag, dev.person_id, pos)


def late(unit: IdentityUnit, dev: DeviceRow, ev: Identified | ProfileAttributesChanged,
         pos: int) -> None:
    """A message of an ended session: recorded as a refusal on the device's person, not applied."""
    sdk_anonymous_id = ev.sdk_anonymous_id
    if sdk_anonymous_id is None:
        # Read erased: its person (the device's then) was forgotten, and the refusal with it.
        dev.ignored.append(pos)
        return
    session = unit.resolve_key(identifier_key("anon", sdk_anonymous_id))
    if session is None and ev.sdk_tag is not None:
        session = unit.resolve_key(identifier_key(SESSION_TAG, ev.sdk_tag))
    current = unit.person(dev.person_id)
    current.refused.append(Refusal(
        "anon", sdk_anonymous_id, "late: a message of an SDK session that ended on this "
        "device (it was reset); recorded, not applied", pos,
        None if session is None else session.person_id))
    dev.ignored.append(pos)
    unit.put_person(current)


def server_stream(unit: IdentityUnit, dev: DeviceRow, ev: Identified, pos: int, ts: int,
                  ids: IdScheme, member: str | None = None) -> bool:
    """A server-side stream starts on its user's person (created, identified, when the
    user is new, as Customer.io does): no anonymous person, so no conversion or merge.
    ``member``: the forgotten member an identify that reads erased named (nothing claimed)."""
    kind = "" if member is not None else classify(ev.user_id)
    if member is not None:
        person = unit.survivor(member)
    elif kind == "cio":
        person = unit.live_person(ev.user_id[len("cio_"):])
        if person is None or not person.identified:
            return False  # retired since the command's check: refused as on any device
    else:
        value = normalize_email(ev.user_id) if kind == "email" else ev.user_id
        person = unit.resolve_key(identifier_key(kind, value))
    if person is None:
        person = PersonRow(person_id=minted_person_id(dev.device_id, 0) if ids == "event"
                           else new_person_id(dev.device_id, pos),
                           identified=True, identified_at=pos, created_at=ts, updated_at=ts,
                           since=pos)
        if member is None:
            persons.claim(unit, person, kind, value, pos)
    dev.server = True
    dev.anonymous_id = anonymous_id_for(dev.device_id, 0)
    persons.join(unit, dev, person, pos)
    return True
