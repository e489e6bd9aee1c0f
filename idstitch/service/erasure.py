"""Shredding a person (the right to erasure): destroy its keys, suppress its identifiers,
purge its rows from the projections, whose events of that person then read erased.

``ws.forget`` runs :func:`forget`: the checks and the plan of the purge (while the person's
events still read), the keys destroyed, the decision recorded, the rows purged in place
(:mod:`idstitch.projections.purge`; every projection rebuilt from the log when the purge cannot
be proved to give what a rebuild gives), :func:`scrub`. The order is chosen for a crash in
between: destroying the keys is the irreversible step and comes first (after every check, so
an error changes nothing); the ``PersonForgotten`` decision then records that it happened; the
purge removes the values from the rows, the identity rows last. A process that stops after the
keys were destroyed leaves the person erased in the log and refused at ingest; once the
decision is recorded, the next open of the workspace finds the person still identified in the
identity rows (by an event that now reads erased) and rebuilds every projection
(:func:`finish_forgets`); stopped before the decision, ``ws.rebuild()`` finishes the rows.
Meanwhile every process keeping custom projections keeps them right before the decision
(:mod:`idstitch.projections.custom_forgets`). :func:`finish_unmerges` does the same for an
unmerge whose process stopped between its decision and its replay of the persons.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from idstitch.domain import rules
from idstitch.domain.commands import ForgetPerson
from idstitch.domain.errors import (
    IdstitchError,
    InvalidCommand,
    ProjectionFailed,
    Suppressed,
    UnknownPerson,
)
from idstitch.domain.events import PERSONAL, DeviceTokenRegistered
from idstitch.domain.ports import SUPPRESSION_MARK
from idstitch.projections import purge
from idstitch.projections.audit import family, spans
from idstitch.projections.custom_forgets import first_pending
from idstitch.projections.custom_unmerges import UNDONE
from idstitch.projections.identity.purge import token_losses
from idstitch.projections.subject_keys import (
    held_emails,
    identified_subjects,
    person_identifiers,
)
from idstitch.projections.views import Reader
from idstitch.service import following
from idstitch.service.bus import MessageBus
from idstitch.service.projecting import Projector
from idstitch.service.queries import Queries
from idstitch.service.unkept import drop_unkept


class ShredReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a shred did."""

    person_id: str
    keys_destroyed: int
    identifiers_suppressed: int
    purged_in_place: bool = False
    """Whether the rows were purged in place (else every projection was rebuilt, or, for
    :func:`shred` alone, nothing was done to them yet)."""
    marked_at: int | None = None
    """The log's head when the forget's mark was raised (None where no other process
    appends): what another process appended up to it had not seen the forget."""
    dropped: list[str] = msgspec.field(default_factory=list)
    """The custom projections in the database that no open process keeps: their versions
    behind the forget were dropped, tables and tracking, and they are built afresh from the
    log when a process registers them again (see :mod:`idstitch.service.unkept`)."""
    scrubbed: bool = True
    """Whether the database files hold no old page of the purged rows and destroyed keys
    (SQLite: the WAL checkpoint ran to the end). False when another connection's read
    snapshot (a backup, a replication tool, a long query) held it back for the whole wait:
    the workspace tries again after its later commits and when it closes."""


class _Prepared(msgspec.Struct, frozen=True, kw_only=True):
    """What the checks of a forget found: the person, its family, its keys and identifiers."""

    person_id: str
    members: list[str]
    """The person and those merged into it."""
    devices: list[str]
    """Every device that had a stint on one of them."""
    key_ids: list[str]
    identifiers: list[str]
    subjects: dict[str, str]
    """The stints that identified one of them -> that member (see PersonForgotten)."""
    held: list[tuple[str, str, int, int | None]]
    """The emails they held, by keyed hash (see PersonForgotten)."""
    took: list[tuple[int, str]]
    """Their token registrations that took a token from another device (see PersonForgotten)."""
    head: int
    """The log's head the checks read the person's events up to."""


def _prepare(stores: Any, queries: Queries, identifier: str, *,
             until: int | None = None) -> _Prepared:
    """Every check of a forget, and what it will destroy; nothing is changed. ``until``: the
    person again, by its id, once its identifiers are suppressed, from its events up to that
    position (see :func:`_window`)."""
    cipher = stores.cipher
    if cipher is None:
        raise InvalidCommand("identifier", "encryption is switched off "
                             "(IDSTITCH_ENCRYPTION=off): nothing can be shredded")
    # The workspace's secret for the keyed hashes, created now if it is the first forget (a
    # write): inside the snapshot below, SQLite could not upgrade the read to a write once
    # another process had committed, and would fail at once rather than wait for the lock.
    cipher.secret_ready()
    if until is None and cipher.is_suppressed(identifier):
        raise Suppressed(f"identifier {identifier!r}: already forgotten")
    # The person as the whole log has it, whoever keeps the rows: a device identified as the
    # person in events not folded yet has keys of its own, which the rows would not name
    # (left undestroyed, the next fold would bring the person back).
    following.settled(queries.projector, queries.settings)()
    head = stores.log.head() if until is None else until
    with stores.rows.snapshot() as rows:
        reader = Reader(rows, queries.projector.registry.row_types)
        person = reader.person(identifier, nameless=True)
        if person is None:
            raise UnknownPerson("identifier", identifier, message=_nobody(identifier))
        if person.nameless:  # found by an anonymous id of a forgotten person's session
            raise Suppressed(f"identifier {identifier!r}: already forgotten")
        if not person.identified and any(s.end is None for s in person.stints):
            # A device is still in its session: its next event would go to the person under
            # a destroyed key, and an identify would convert it, bringing the forgotten
            # person id back with a new name. (One left behind by a switch or the undo of
            # its merge has no device: it is forgotten as any person.)
            raise InvalidCommand("identifier", f"{identifier!r} names an anonymous person "
                                 "whose device is still in its session: forget the person "
                                 "it is identified as, or clear_identify the device first")
        fam = family(reader, person)
        events = stores.log.read_spans(spans(fam, head))
        key_ids = {ev.key_id for _, ev in events if ev.key_id is not None}
        # An email one of them let go and another person holds now is that person's: not
        # suppressed (the other person would be refused its own email, and hidden by it).
        identifiers = {i for i in person_identifiers(reader, person)
                       if "@" not in i or not _held_elsewhere(reader, i, fam.members)}
        if not person.identified:
            # Nothing else names an anonymous person: its anonymous ids answer nothing after
            # the forget as its person id does (an identified one's, by being nameless).
            identifiers |= set(person.anonymous_ids)
        subjects = identified_subjects(reader, fam, events)
        held = [(cipher.digest(email).hex(), member, since, until)
                for email, member, since, until in held_emails(fam)]
        unsealed = sum(1 for _, ev in events if ev.key_id is None and type(ev) in PERSONAL)
    # (A scan of its own, after the snapshot: the store reads it in a transaction.)
    took = token_losses(stores.rows, {pos for pos, ev in events
                                      if type(ev) is DeviceTokenRegistered})
    if unsealed and until is None:
        # Shredding the rest would leave these values readable, and a rebuild would put them
        # back into the rows: refuse, with nothing changed.
        raise InvalidCommand("identifier", f"{unsealed} events of this person were recorded "
                             "unencrypted (before encryption, or with IDSTITCH_ENCRYPTION=off) "
                             "and cannot be shredded: migrate the store first (docs/explanation/"
                             "erasure-and-keys.md)")
    devices = {s.device_id for m in fam.members.values() for s in m.stints}
    return _Prepared(person_id=person.person_id, members=sorted(fam.members),
                     devices=sorted(devices), key_ids=sorted(key_ids),
                     identifiers=sorted(identifiers), subjects=subjects,
                     held=held, took=took, head=head)


def _held_elsewhere(reader: Reader, email: str, members: Any) -> bool:
    """Whether a person outside the family (``members``) holds ``email`` now."""
    holder = reader.person(email, nameless=True)
    return holder is not None and holder.person_id not in members


WINDOW_ROUNDS = 8
"""Times a forget looks again at what other processes appended while it prepared."""


def _window(stores: Any, queries: Queries, prepared: _Prepared, marked_at: int | None
            ) -> tuple[_Prepared, bool]:
    """What another process appended between the forget's checks and its mark, which it
    decided without seeing the forget (an identify naming the person on a new device, say):
    the person's events among it are forgotten too (their keys destroyed, any new identifier
    suppressed, the mark raised again), so that no rebuild brings them back. The person as
    finally prepared, and whether the window added to it (then the purge planned before it
    is not proved exact: every projection is rebuilt). Events after the mark saw the forget:
    refused when they name the person, recorded under new keys on its devices."""
    widened = False
    for _ in range(WINDOW_ROUNDS):
        if marked_at is None or marked_at <= prepared.head:
            break
        again = _prepare(stores, queries, prepared.person_id, until=marked_at)
        grown = (not set(again.key_ids) <= set(prepared.key_ids)
                 or not set(again.identifiers) <= set(prepared.identifiers)
                 or again.devices != prepared.devices or again.members != prepared.members)
        again = msgspec.structs.replace(
            again, key_ids=sorted({*again.key_ids, *prepared.key_ids}),
            identifiers=sorted({*again.identifiers, *prepared.identifiers}))
        if not grown:
            return again, widened
        widened = True
        marked_at = _destroy(stores, again).marked_at
        prepared = again
    return prepared, widened


def _destroy(stores: Any, prepared: _Prepared) -> ShredReport:
    """The irreversible step: the keys destroyed, the identifiers suppressed."""
    cipher = stores.cipher
    cipher.keys.destroy(prepared.key_ids)
    cipher.forget(prepared.key_ids)
    # The person id names it too (``cio_<id>``, a merge naming it by id): refused from now on.
    cipher.suppress([*prepared.identifiers, prepared.person_id,
                     rules.PERSON_PREFIX + prepared.person_id])
    # Then the mark every append reads under the log's write lock: from its commit on, no
    # other process appends a command naming these (it reads the digests again first).
    mark = cipher.suppressed_count()
    marked_at = stores.rows.raise_mark(SUPPRESSION_MARK, mark)
    cipher.mark = max(cipher.mark, mark)  # this process has read every digest up to it
    return ShredReport(person_id=prepared.person_id, keys_destroyed=len(prepared.key_ids),
                       identifiers_suppressed=len(prepared.identifiers), marked_at=marked_at)


def shred(stores: Any, queries: Queries, identifier: str) -> ShredReport:
    """Forget the person ``identifier`` finds: destroy every key of its events and record its
    identifiers as suppressed (keyed hashes only). The projections still hold its values: the
    caller rebuilds them (``ws.rebuild()``) after this returns (``ws.forget`` purges them in
    place instead, see :func:`forget`).

    ``stores``: the workspace's :class:`idstitch.adapters.stores.Stores` (typed loosely: the
    service layer does not import the adapters)."""
    return _destroy(stores, _prepare(stores, queries, identifier))


def _nobody(identifier: str) -> str:
    """What a forget by an identifier that finds no person says: an email a person let go
    finds nobody now, and the erasure request is likely to name it."""
    text = f"{identifier!r} finds no person"
    if rules.classify(identifier) != "email":
        return text
    return (f"{text} now (an email a person let go finds nobody: find the person as of a "
            "time it held the email, `ws.profile_as_of(email, at)` or `idstitch profile EMAIL "
            "--as-of TIME`, and forget it by its person id)")


def scrub(stores: Any) -> bool:
    """After the rows were purged or rebuilt: on SQLite, checkpoint and truncate the WAL, so
    the old pages of the purged rows stay in no file (freed pages are zeroed by
    ``secure_delete``); whether it ran to the end (see :attr:`ShredReport.scrubbed`)."""
    if stores.cipher is not None:
        checkpoint = getattr(stores.cipher.keys, "checkpoint", None)
        if checkpoint is not None:
            return bool(checkpoint())
    return True


def forget(stores: Any, bus: MessageBus, projector: Projector, identifier: object,
           reason: object, *, in_place: bool = True) -> ShredReport:
    """``ws.forget``: check, plan the purge, shred, record the decision, purge the rows in
    place (or rebuild every projection when the purge cannot be proved exact), scrub. Nothing
    is changed or recorded when a check fails. ``in_place=False``: always rebuild (the
    benchmark's comparison)."""
    # The reason's one check (the ForgetPerson command's leaves it): here, before anything
    # changes, not where the decision is recorded, after the keys are destroyed.
    checked_reason = rules.check_text("reason", reason)
    checked = rules.check_id("identifier", identifier)
    with projector.lock:
        prepared = _prepare(stores, bus.queries, checked)
        component = _plan(stores, projector, prepared) if in_place else None
        report = _destroy(stores, prepared)
        prepared, widened = _window(stores, bus.queries, prepared, report.marked_at)
        if widened:
            component = None
            report = msgspec.structs.replace(report, keys_destroyed=len(prepared.key_ids),
                                             identifiers_suppressed=len(prepared.identifiers))
    failures: list[ProjectionFailed] = []
    # The custom projections here fold the decision once the identity rows are purged (their
    # Changes are read from those rows), in _purge, or in the rebuild that replaces it: held
    # back, under the workspace's lock so that no other thread's catch-up runs in between.
    # (A process that keeps custom projections elsewhere and meets the decision before this
    # purge lands stops them right before it until the purge lands: custom_forgets.)
    with projector.lock:
        projector.custom_held = True
        try:
            decided = bus.handle(ForgetPerson(person_id=report.person_id, reason=checked_reason,
                                    members=prepared.members, devices=prepared.devices,
                                    subjects=prepared.subjects, held=prepared.held,
                                    took=prepared.took))
        finally:
            projector.custom_held = False
            # A cached device still holds the destroyed key of its stint; loaded from the
            # log it starts anew: every device then behaves the same, cached or not.
            bus.writer.drop_cache()
        try:
            purged = component is not None and _purge(stores, projector, prepared,
                                                      component, failures)
            if not purged:
                projector.rebuild()
            elif bus.settings.auto_catch_up:
                # The decision itself folded and committed (nothing changes in the purged
                # rows): else the stored tracking stays one short of it until the next
                # write, and `idstitch projections` reports a lag after every erasure. Best
                # effort: the person is erased whatever it meets (another process's lease).
                with contextlib.suppress(IdstitchError):
                    projector.catch_up(eager=True)
        except BaseException:
            scrub(stores)
            raise
    try:
        # The custom projections no open process keeps (their tables would keep the
        # person's values): see idstitch.service.unkept.
        dropped = ([] if decided is None else
                   drop_unkept(projector.custom.tables, list(projector.custom.projections),
                               decided))
    finally:
        scrubbed = scrub(stores)
    if failures:  # the person is erased everywhere; a custom projection's hook or fold failed
        raise failures[0] from failures[0].cause
    return msgspec.structs.replace(report, purged_in_place=purged, scrubbed=scrubbed,
                                   dropped=dropped)


def _plan(stores: Any, projector: Projector, prepared: _Prepared) -> purge.Component | None:
    """The purge in place of the person's component, proved exact; None when it cannot be
    (every projection is then rebuilt)."""
    try:
        return purge.plan(projector.registry, stores.rows, stores.log, prepared.members)
    except purge.Fallback:
        return None


def _purge(stores: Any, projector: Projector, prepared: _Prepared,
           component: purge.Component, failures: list[ProjectionFailed]) -> bool:
    """Purge the rows in place: the device attributes, then the identity rows; then the custom
    projections, which honour the ``PersonForgotten`` decision where it stands in the log as
    they fold past it (their purge hook, or folded again from position 0: see
    :meth:`idstitch.projections.custom_runner.CustomRunner.catch_up`; so does any other process
    that folds them). False (some rows may be purged) when the purge turned out not to be
    exact: the caller rebuilds. A custom projection that fails is added to ``failures``."""
    with projector.lock:
        try:
            purge.purge_attributes(projector.registry, stores.rows, stores.log, component)
            purge.purge_identity(projector.registry, stores.rows, stores.log, component)
        except purge.Fallback:
            return False
        finally:
            # Rows changed under the runner's caches: each projection starts cold.
            for projection in projector.registry:
                projector.states.forget(projection.name)
        custom = projector.custom.projections
        if custom:
            projector.catch_up()
            failures.extend(f for n, f in projector.failures.items() if n in custom)
    return True


def finish_forgets(stores: Any, projector: Projector) -> bool:
    """On open: if a recorded forget's person is still identified in the rows by an event
    that now reads erased (the process that forgot it stopped before its purge or rebuild),
    rebuild every projection and scrub. One indexed read of the decisions stream and a row
    per forget; True if it rebuilt. (The same test keeps every process's custom projections
    right before such a forget until it is finished: :mod:`idstitch.projections.custom_forgets`.)"""
    if stores.cipher is None:
        return False
    stale = first_pending(stores.log, stores.rows, projector.registry.row_types) is not None
    if stale:
        projector.rebuild()
        scrub(stores)
    return stale


def finish_unmerges(stores: Any, projector: Projector) -> bool:
    """On open: if a recorded unmerge's merge is still a merge in the identity rows (the
    process that undid it stopped before its replay), replay the persons as ``ws.unmerge``
    does. One indexed read of the decisions stream and a row per unmerge; True if it
    replayed. (The same test keeps every process's custom projections right before such an
    unmerge until it is finished: :mod:`idstitch.projections.custom_unmerges`.)"""
    stale = first_pending(stores.log, stores.rows, projector.registry.row_types,
                          kinds=UNDONE) is not None
    if stale:
        projector.replay_persons()
    return stale
