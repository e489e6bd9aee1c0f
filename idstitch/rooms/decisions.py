"""The Workspace's room for person-level decisions (identity-model.md §4): merge, unmerge and
forget, events on the workspace's decisions stream, in the same log as the devices' events.
"""

from __future__ import annotations

from idstitch import bootstrap
from idstitch.domain import commands as c
from idstitch.domain.events import PersonsMerged
from idstitch.service import erasure
from idstitch.service.arguments import checked_methods, entering
from idstitch.service.bus import MessageBus


@checked_methods
class PersonDecisions:
    """The person-level decisions of :class:`Workspace <idstitch.Workspace>`: the ones no
    device makes."""

    _services: bootstrap.Services
    _bus: MessageBus

    @entering
    def merge_persons(self, primary: str, secondary: str, *, reason: str) -> str:
        """Merge two identified persons (any identifier of each): the secondary's identifiers,
        devices, anonymous ids and attributes join the primary, whose values win on a key both
        hold. The merge's id (for :meth:`unmerge`)."""
        position = self._bus.handle(c.MergePersons(primary=primary, secondary=secondary,
                                                   reason=reason))
        # The decisions stream names the merge (from its own number, so that the same
        # traffic names it alike on every store, even after a retried append): read back.
        assert position is not None  # a merge always records its decision
        [(_, decision)] = self._services.stores.log.read(position - 1, 1)
        assert isinstance(decision, PersonsMerged)
        return decision.merge_id

    @entering
    def unmerge(self, merge_id: str, *, reason: str) -> None:
        """Undo a merge exactly: an explicit one, or an anonymous person's merge on identify.
        Both sides become what they would be had the merge never been recorded (later events
        with the side their device or identifier came from). A replay of the identity
        projection, and of the custom projections that read its rows, from position 0. Another
        process keeping custom projections folds them again once that replay has landed,
        waiting right before the decision until then; if this process stops in between, the
        next open that keeps projections replays (see ``idstitch.projections.custom_unmerges``)."""
        projector = self._services.projector
        # Its custom projections are rebuilt by the replay: held back from folding the
        # decision over the identity rows of before it (they would fold everything twice).
        with projector.lock:
            projector.custom_held = True
            try:
                position = self._bus.handle(c.Unmerge(merge_id=merge_id, reason=reason))
            finally:
                projector.custom_held = False
            if position is not None:
                projector.replay_persons()

    @entering
    def forget(self, identifier: str, *, reason: str) -> erasure.ShredReport:
        """Erase a person (the right to erasure): any identifier of it (user id, email,
        ``cio_<id>``, person id). Its keys are destroyed (its personal values in the log read
        erased from then on), its identifiers refused by every later command and by ingest
        (:class:`~idstitch.errors.Suppressed`), a ``PersonForgotten`` decision records its
        person id and ``reason`` (which must not hold personal data), and its rows are purged
        from every projection, leaving exactly the rows a rebuild would give (a custom
        projection: its ``forget`` hook, or it is folded again). UnknownPerson if no person
        has that identifier, Suppressed if it was forgotten already; nothing changes on an
        error. ProjectionFailed if a custom projection's hook failed (the person is erased).
        With ``projections="external"`` it first waits (up to 30 s, then ProjectionsBehind,
        nothing changed) for the built-in projections to reach the head of the log: the
        person is the one the whole log makes. What it did: a
        :class:`~idstitch.ShredReport`."""
        return erasure.forget(self._services.stores, self._bus, self._services.projector,
                              identifier, reason)
