"""What the identity fold does to persons: merges, devices joining and leaving, identifiers.

Functions of the identity unit, called by the fold (:mod:`idstitch.projections.identity.fold`)
in log order. Each keeps the rows' record of the past up to date as it changes the present
(stints, retirement, email claims), which is what the audit reads.
"""

from __future__ import annotations

from typing import Literal

from idstitch.domain import attributes
from idstitch.domain.ids import merge_id as minted_merge_id
from idstitch.domain.rules import normalize_email
from idstitch.projections.identity.graph import IdentityUnit, identifier_key
from idstitch.projections.identity.person_index import index_of
from idstitch.projections.identity.rows import DeviceRow, MergeRow, PersonRow, Refusal, Stint

IdScheme = Literal["event", "position"]
"""How ids minted by the fold (a person for an unknown user id, a merge record) are derived:
``event`` from what the event names (its device and the device's n-th event: the same on every
store); ``position`` from the log position (stores built before ids were event-derived keep it,
so person ids already handed out never change)."""


def merge_anonymous(
    unit: IdentityUnit, survivor: PersonRow, retired: PersonRow, dev: DeviceRow, pos: int,
    ts: int, ids: IdScheme,
) -> None:
    """The anonymous person ``retired`` merged into ``survivor``: attributes, anonymous ids,
    devices and merge records move; the retired person resolves to the survivor from now."""
    attributes.merge(survivor.attrs, retired.attrs)
    index = index_of(survivor)  # a wide survivor: its sets follow the lists below
    for anonymous_id in retired.anonymous_ids:
        survivor.anonymous_ids.append(anonymous_id)
        survivor.anonymous_since.append(pos)
        unit.put_identifier("anon", anonymous_id, survivor.person_id, pos)
    for device_id in retired.devices:
        moved = dev if device_id == dev.device_id else unit.device(device_id)
        if moved is not None:
            end_stint(retired, device_id, pos)
            moved.person_id = survivor.person_id
            stint = Stint(device_id, pos)
            survivor.devices.append(device_id)
            survivor.stints.append(stint)
            if index is not None:
                index.devices.add(device_id)
                index.open[device_id] = stint
            unit.put_device(moved)
    survivor.merges.extend(retired.merges)
    if index is not None:
        index.merges.update(retired.merges)
        index.seen()
    retired.devices = []
    retired.retired_into = survivor.person_id
    retired.retired_at = pos
    record(unit, "merged", retired.person_id, retired, survivor, dev, pos, ts, ids)


def leave(unit: IdentityUnit, dev: DeviceRow, person_id: str, pos: int) -> None:
    """The device leaves the person at ``pos``."""
    person = unit.person(person_id)
    index = index_of(person)
    if dev.device_id in (person.devices if index is None else index.devices):
        person.devices.remove(dev.device_id)  # a scan in C: order is part of the row
        if index is not None:
            index.devices.discard(dev.device_id)
            index.seen()
        end_stint(person, dev.device_id, pos)
    unit.put_person(person)


def join(unit: IdentityUnit, dev: DeviceRow, person: PersonRow, pos: int) -> None:
    """The device joins the person at ``pos``."""
    index = index_of(person)
    if dev.device_id not in (person.devices if index is None else index.devices):
        stint = Stint(dev.device_id, pos)
        person.devices.append(dev.device_id)
        person.stints.append(stint)
        if index is not None:
            index.devices.add(dev.device_id)
            index.open[dev.device_id] = stint
            index.seen()
    dev.person_id = person.person_id
    unit.put_person(person)


def record(
    unit: IdentityUnit, kind: str, source: str, source_person: PersonRow, target: PersonRow,
    dev: DeviceRow, pos: int, ts: int, ids: IdScheme,
) -> None:
    """A conversion, merge or switch record, on both persons."""
    merge_id = merge_id_of(kind, dev, pos, ids)
    unit.put_merge(MergeRow(merge_id=merge_id, kind=kind, source=source,
                            target=target.person_id, position=pos, device_id=dev.device_id,
                            timestamp=ts))
    for person in (source_person, target):
        index = index_of(person)
        if merge_id not in (person.merges if index is None else index.merges):
            person.merges.append(merge_id)
            if index is not None:
                index.merges.add(merge_id)
                index.seen()
        unit.put_person(person)


def claim(unit: IdentityUnit, person: PersonRow, kind: str, value: str, pos: int) -> None:
    """The identifier an identify named becomes the person's."""
    if kind == "id":
        person.user_id = value
        unit.put_identifier("id", value, person.person_id, pos)
    elif kind == "email":
        claim_email(unit, person, value, pos)


def attributes_written(unit: IdentityUnit, person: PersonRow, pos: int, ts: int,
                       email: bool) -> None:
    """An event wrote the person's attributes (an identify's traits, a profile update): its
    time moves ``updated_at``, the row is kept, and where it wrote ``email`` (plainly) and
    its value won, that value claims the email identifier."""
    if ts > person.updated_at:
        person.updated_at = ts
    unit.put_person(person)
    # Only the event's own value, when it is the one now held: a write that lost (a late
    # one), or a removal (which keeps the identifier), claims nothing; nor does a value that
    # set_once gave (an attribute only), which a losing write would otherwise have claimed.
    if email and person.attrs.stamps.get("email") == (ts, pos) and "email" in person.attrs.values:
        claim_attribute_email(unit, person, pos)


def claim_attribute_email(unit: IdentityUnit, person: PersonRow, pos: int) -> None:
    """The winning ``email`` attribute of an identified person claims the email identifier."""
    # The identifier follows the winning value of the `email` attribute (last writer wins on
    # the client clock), so a late event with an older email cannot move it.
    present, email = attributes.value_of(person.attrs, "email")
    # A nameless person (what a forget leaves: identified by identifies that read erased)
    # claims none: it would answer by its forgotten id again, "nobody's" no more.
    if (person.identified and present and isinstance(email, str) and "@" in email
            and not person.nameless):
        claim_email(unit, person, normalize_email(email), pos)


def claim_email(unit: IdentityUnit, person: PersonRow, email: str, pos: int) -> None:
    """Take an email identifier, unless another person holds it (then: a refusal)."""
    holder = unit.resolve_key(identifier_key("email", email))
    if holder is None and unit.forgotten_holder is not None:
        # Held by a forgotten person, whose claim reads erased: refused all the same.
        member = unit.forgotten_holder(email, pos)
        if member is not None:
            holder = unit.survivor(member)
    if holder is not None and holder.person_id != person.person_id:
        # Two identified persons are never merged implicitly: keep the attribute, refuse
        # the identifier, and leave a trace for the audit.
        person.refused.append(Refusal("email", email, "held by another person", pos,
                                      holder.person_id))
    elif holder is None:
        if person.email is not None:
            unit.put_identifier("email", person.email, None, pos)
        person.email = email
        person.emails.append((pos, email))
        unit.put_identifier("email", email, person.person_id, pos)
    unit.put_person(person)


def end_stint(person: PersonRow, device_id: str, pos: int) -> None:
    """The device's open stint on the person ends at ``pos`` (the event that took it away)."""
    index = index_of(person)
    if index is not None:
        found = index.open.pop(device_id, None)
        if found is None:
            return  # no open stint of the device on this person
        if found.end is None:
            found.end = pos
            return
        # Closed by code that does not keep the index: scan, as for a narrow person.
    for stint in reversed(person.stints):
        if stint.device_id == device_id and stint.end is None:
            stint.end = pos
            return


def merge_explicit(
    unit: IdentityUnit, primary: PersonRow, secondary: PersonRow, merge_id: str, reason: str,
    pos: int, ts: int,
) -> None:
    """An explicit merge (a decision): ``secondary`` joins ``primary``. Its devices, anonymous
    ids and merge records move, its identifiers resolve to the primary from now (they follow
    ``retired_into``), and its attributes join, the primary's value winning on a key both hold
    (not the later write: the caller chose which person is right)."""
    attributes.merge_under(primary.attrs, secondary.attrs)
    for anonymous_id in secondary.anonymous_ids:
        primary.anonymous_ids.append(anonymous_id)
        primary.anonymous_since.append(pos)
        unit.put_identifier("anon", anonymous_id, primary.person_id, pos)
    for device_id in secondary.devices:
        moved = unit.device(device_id)
        if moved is not None:
            end_stint(secondary, device_id, pos)
            moved.person_id = primary.person_id
            primary.devices.append(device_id)
            primary.stints.append(Stint(device_id, pos))
            unit.put_device(moved)
    primary.merges.extend(m for m in secondary.merges if m not in primary.merges)
    secondary.devices = []
    secondary.retired_into = primary.person_id
    secondary.retired_at = pos
    if ts > primary.updated_at:
        primary.updated_at = ts
    unit.put_merge(MergeRow(merge_id=merge_id, kind="explicit", source=secondary.person_id,
                            target=primary.person_id, position=pos, reason=reason,
                            timestamp=ts))
    for person in (secondary, primary):
        if merge_id not in person.merges:
            person.merges.append(merge_id)
        unit.put_person(person)


def merge_id_of(kind: str, dev: DeviceRow, pos: int, ids: IdScheme) -> str:
    """The id :func:`record` gives the record of kind ``kind`` the device's event at ``pos``
    causes (known before it is recorded: an undone automatic merge is not made)."""
    return minted_merge_id(f"{dev.device_id}#{dev.seq}" if ids == "event" else str(pos), kind)


def record_unmerged(
    unit: IdentityUnit, merge_id: str, source: PersonRow, target: PersonRow,
    undo: tuple[int, str], device_id: str | None, ts: int,
) -> None:
    """The record of a merge that was undone (and so never applied), on both persons: kind
    ``unmerged``, at the position of the undo, with its reason."""
    unit.put_merge(MergeRow(merge_id=merge_id, kind="unmerged", source=source.person_id,
                            target=target.person_id, position=undo[0], device_id=device_id,
                            reason=undo[1], timestamp=ts))
    for person in (source, target):
        if merge_id not in person.merges:
            person.merges.append(merge_id)
        unit.put_person(person)
