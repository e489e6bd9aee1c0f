"""The data subject keys of a person: what forgetting it must destroy.

Every event carries, in plaintext, the id of the key its personal values are sealed under (one
key per stint of a device with one person: :func:`idstitch.domain.ids.subject_key_id`). The
keys of a person are those of the events the identity projection attributes to it: its own
stints and those of every person merged into it, read by indexed spans as the audit reads them.
"""

from __future__ import annotations

from idstitch.projections.audit import family, spans
from idstitch.projections.identity.rows import PersonRow
from idstitch.projections.store import EventLog
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
