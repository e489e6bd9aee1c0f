"""Shredding a person (the right to erasure): destroy its keys, suppress its identifiers,
rebuild the projections from the log, whose events of that person then read erased.

``ws.forget`` runs :func:`forget`: :func:`shred`, the decision recorded, a rebuild of every
projection, :func:`scrub`. The order is chosen for a crash in between: destroying the keys is
the irreversible step and comes first (after every check, so an error changes nothing); the
``PersonForgotten`` decision then records that it happened; the rebuild removes the values
from the rows. A process that stops after the keys were destroyed leaves the person erased in
the log and refused at ingest; once the decision is recorded, the next open of the workspace
sees rows newer than none of it (the person still identified in them) and finishes the rebuild
(:func:`finish_forgets`); stopped before the decision, ``ws.rebuild()`` finishes the rows.
"""

from __future__ import annotations

from typing import Any

import msgspec

from idstitch.domain import rules
from idstitch.domain.commands import ForgetPerson
from idstitch.domain.errors import InvalidCommand, Suppressed, UnknownPerson
from idstitch.domain.events import DECISIONS_STREAM, PERSONAL, PersonForgotten
from idstitch.projections.audit import family, spans
from idstitch.projections.subject_keys import person_identifiers
from idstitch.projections.views import Reader
from idstitch.service.bus import MessageBus
from idstitch.service.projecting import Projector
from idstitch.service.queries import Queries


class ShredReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a shred did."""

    person_id: str
    keys_destroyed: int
    identifiers_suppressed: int


def shred(stores: Any, queries: Queries, identifier: str) -> ShredReport:
    """Forget the person ``identifier`` finds: destroy every key of its events, record its
    identifiers as suppressed (keyed hashes only), and rebuild the projections so that no row
    holds its values any more. The caller rebuilds (``ws.rebuild()``) after this returns.

    ``stores``: the workspace's :class:`idstitch.adapters.stores.Stores` (typed loosely: the
    service layer does not import the adapters)."""
    cipher = stores.cipher
    if cipher is None:
        raise InvalidCommand("identifier", "encryption is switched off "
                             "(IDSTITCH_ENCRYPTION=off): nothing can be shredded")
    if cipher.is_suppressed(identifier):
        raise Suppressed(f"identifier {identifier!r}: already forgotten")
    queries.settle()
    head = stores.log.head()
    with stores.rows.snapshot() as rows:
        reader = Reader(rows, queries.projector.registry.row_types)
        person = reader.person(identifier)
        if person is None:
            raise UnknownPerson("identifier", identifier, "has no person")
        events = stores.log.read_spans(spans(family(reader, person), head))
        key_ids = {ev.key_id for _, ev in events if ev.key_id is not None}
        identifiers = person_identifiers(reader, person)
        unsealed = sum(1 for _, ev in events if ev.key_id is None and type(ev) in PERSONAL)
    if unsealed:
        # Shredding the rest would leave these values readable, and a rebuild would put them
        # back into the rows: refuse, with nothing changed.
        raise InvalidCommand("identifier", f"{unsealed} events of this person were recorded "
                             "unencrypted (before encryption, or with IDSTITCH_ENCRYPTION=off) "
                             "and cannot be shredded: migrate the store first (docs/explanation/"
                             "erasure-and-keys.md)")
    cipher.keys.destroy(sorted(key_ids))
    cipher.forget(sorted(key_ids))
    cipher.suppress(sorted(identifiers))
    return ShredReport(person_id=person.person_id, keys_destroyed=len(key_ids),
                       identifiers_suppressed=len(identifiers))


def scrub(stores: Any) -> None:
    """After the rebuild that follows :func:`shred`: on SQLite, checkpoint and truncate the
    WAL, so the old pages of the purged rows stay in no file (freed pages are zeroed by
    ``secure_delete``)."""
    if stores.cipher is not None:
        checkpoint = getattr(stores.cipher.keys, "checkpoint", None)
        if checkpoint is not None:
            checkpoint()


def forget(stores: Any, bus: MessageBus, projector: Projector, identifier: object,
           reason: object) -> ShredReport:
    """``ws.forget``: check, shred, record the decision, rebuild every projection (custom
    ones too), scrub. Nothing is changed or recorded when a check fails."""
    checked_reason = rules.check_text("reason", reason)
    checked = rules.check_id("identifier", identifier)
    report = shred(stores, bus.queries, checked)
    # The person id names it too (``cio_<id>``, a merge naming it by id): refused from now on.
    stores.cipher.suppress([report.person_id, rules.PERSON_PREFIX + report.person_id])
    bus.handle(ForgetPerson(person_id=report.person_id, reason=checked_reason))
    # A cached device still holds the destroyed key of its stint; loaded from the log it
    # starts anew: every device then behaves the same, cached or not.
    bus.writer.drop_cache()
    projector.rebuild()
    scrub(stores)
    return report


_FORGOTTEN = frozenset({PersonForgotten})


def finish_forgets(stores: Any, projector: Projector) -> bool:
    """On open: if a recorded forget's person is still identified in the rows (the process
    that forgot it stopped before its rebuild), rebuild every projection and scrub. One indexed
    read of the decisions stream and a row per forget; True if it rebuilt."""
    if stores.cipher is None:
        return False
    decided = stores.log.read_spans([(DECISIONS_STREAM, 1, None)], _FORGOTTEN)
    if not decided:
        return False
    with stores.rows.snapshot() as rows:
        reader = Reader(rows, projector.registry.row_types)
        stale = False
        for _, ev in decided:
            assert isinstance(ev, PersonForgotten)
            row = reader.person(ev.person_id)
            if row is not None and row.identified:
                stale = True
                break
    if stale:
        projector.rebuild()
        scrub(stores)
    return stale
