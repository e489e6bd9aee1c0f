"""The data subject keys of a person: what forgetting it must destroy.

Every event carries, in plaintext, the id of the key its personal values are sealed under (one
key per stint of a device with one person: :func:`idstitch.domain.ids.subject_key_id`). The
keys of a person are those of the events the identity projection attributes to it: its own
stints and those of every person merged into it, read by indexed spans as the audit reads them.
"""

from __future__ import annotations

from collections.abc import Iterable

from idstitch.domain.events import Identified
from idstitch.projections.audit import Family, Owners, family, ignored_identifies, spans
from idstitch.projections.identity.rows import PersonRow
from idstitch.projections.store import EventLog, LoggedEvent
from idstitch.projections.views import Reader


def person_key_ids(reader: Reader, log: EventLog, person: PersonRow, head: int) -> set[str]:
    """The key ids of every event attributed to ``person`` (and those merged into it) up to
    position ``head``; events written before encryption have none and add nothing."""
    fam = family(reader, person)
    return {ev.key_id for _, ev in log.read_spans(spans(fam, head))
            if ev.key_id is not None}


def person_identifiers(reader: Reader, person: PersonRow) -> set[str]:
    """The identifiers a forgotten person is suppressed by: the user ids and emails of it and
    of the persons merged into it."""
    out: set[str] = set()
    for member in family(reader, person).members.values():
        if member.user_id is not None:
            out.add(member.user_id)
        if member.email is not None:
            out.add(member.email)
        out.update(email for _, email in member.emails)
    return out


def held_emails(fam: Family) -> list[tuple[str, str, int, int | None]]:
    """(email, member, claimed at, let go at or None) of each email a member of ``fam`` held:
    a person's next email lets its last one go."""
    out: list[tuple[str, str, int, int | None]] = []
    for member in fam.members.values():
        # By position only, in the order claimed within one (a stable sort): one event may
        # claim two (an identify by one email with another in its traits), and the second
        # lets the first go; sorted by the emails too, the first looked held for ever.
        claims = sorted(member.emails, key=lambda claim: claim[0])
        for i, (position, email) in enumerate(claims):
            until = claims[i + 1][0] if i + 1 < len(claims) else None
            out.append((email, member.person_id, position, until))
    return out


def identified_subjects(reader: Reader, fam: Family,
                        events: Iterable[LoggedEvent]) -> dict[str, str]:
    """The key id of each stint in which an identify put a device on a member of ``fam`` ->
    that member's person id (``events``: the family's, readable still). Once the keys are
    destroyed those identifies read erased; with this, the fold still puts each device on the
    person it put it on (a conversion, a merge into the person, a switch to it), so that
    nobody else's person id, devices or merges change. Refused identifies (which moved
    nothing) are left out; a stint identified more than once keeps its first member (a merged
    member's identifies lead to the person it was merged into)."""
    owners = Owners(fam)
    refused = ignored_identifies(reader, fam)
    out: dict[str, str] = {}
    for pos, ev in sorted(events, key=lambda logged: logged.position):
        if type(ev) is Identified and ev.key_id is not None and pos not in refused:
            member = owners.of(ev.device_id, pos)
            if member is not None:
                out.setdefault(ev.key_id, member)
    return out
