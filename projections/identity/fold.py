"""The identity projection: derives persons, stitching and tokens from the order of the log.

This is where identity-model.md §3 lives. Device events say what a device was told; this fold
decides what it means for persons (conversion, merge or switch by the ``anonymous_merge`` policy,
who holds an email, who owns a token, the winning value of each attribute). Because it is a pure
function of the log, an incremental catch-up and a rebuild from position 0 give the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from idstitch.domain.device import (
    anonymous_id_for,
    anonymous_person_id,
)
from idstitch.domain.events import (
    DECISIONS_STREAM,
    EVENT_TYPES,
    DeviceActivated,
    DeviceAttributesChanged,
    DeviceAttributesCollected,
    DeviceEvent,
    DeviceTokenRegistered,
    DeviceTokenRemoved,
    Identified,
    IdentityCleared,
    MergeUndone,
    PersonForgotten,
    PersonsMerged,
    ProfileAttributesChanged,
    PushStatusRecorded,
)
from idstitch.domain.rules import classify, normalize_email
from idstitch.projections.base import RowProjection
from idstitch.projections.identity import decisions, local, persons, sessions, stitching
from idstitch.projections.identity.config import DEFAULT_POLICY, POLICIES, IdentityConfig, Policy
from idstitch.projections.identity.config import ids_of as _ids_of
from idstitch.projections.identity.config import policy_of as _policy_of
from idstitch.projections.identity.decisions import DecisionsAhead
from idstitch.projections.identity.graph import IdentityUnit, identifier_key
from idstitch.projections.identity.persons import IdScheme
from idstitch.projections.identity.rows import (
    DEVICE,
    IDENTIFIER,
    PERSON,
    ROW_TYPES,
    TOKEN,
    DeviceRow,
    PersonRow,
    Stint,
)
from idstitch.projections.store import EPOCH, MICROSECOND, EventLog, LoggedEvent

Handler = Callable[[IdentityUnit, DeviceRow, Any, int, int], None]
_SESSION_EVENTS = frozenset({Identified, ProfileAttributesChanged, IdentityCleared})
"""The events that may carry an SDK session's anonymousId."""
_ERASED_IGNORED = frozenset({Identified, DeviceTokenRegistered, DeviceTokenRemoved})
"""Events whose meaning an erasure changes (their identifier or token is gone)."""


def _ignore_erased(unit: IdentityUnit, dev: DeviceRow, ev: DeviceEvent, pos: int,
                   ts: int) -> None:
    """An erased event of :data:`_ERASED_IGNORED`: recorded, applied to nobody."""
    dev.ignored.append(pos)


class IdentityProjection(RowProjection):
    """Profiles and the identity graph, maintained incrementally in the projection store.

    Device attributes are folded by their own projection
    (:class:`~idstitch.projections.device_attributes.DeviceAttributesProjection`): nothing
    here depends on them, and a replay can then run both side by side.
    """

    name = "identity"
    rows_format = 5
    """4: the rows keep what the audit needs of the past, and ids minted from events; 5: their
    fields are stored under short names (see rows.PERSON_NAMES)."""
    config_type = IdentityConfig
    row_types = ROW_TYPES
    unit_class = IdentityUnit
    # A forget changes no row by itself (its purge rewrites them from the log, whose events of
    # the person then read erased); the fold meets it only to know that emails are held.
    event_types = frozenset(EVENT_TYPES) - {DeviceAttributesChanged, DeviceAttributesCollected}
    # A device's rows and its first anonymous person are created at its first event, of
    # whatever type.
    first_events = True
    mismatch_hint = "reopen without anonymous_merge (to adopt it), or rebuild"

    def __init__(self, policy: Policy = DEFAULT_POLICY, ids: IdScheme = "event") -> None:
        if policy not in POLICIES:
            raise ValueError(f"anonymous_merge must be one of {POLICIES}, got {policy!r}")
        super().__init__()
        self.policy: Policy = policy
        self.ids: IdScheme = ids
        # One handler per event type: a dict lookup instead of a chain of isinstance checks.
        self._handlers: dict[type[DeviceEvent], Handler] = {
            Identified: self._identified,
            ProfileAttributesChanged: self._profile_attributes,
            DeviceActivated: self._activated,
            DeviceTokenRegistered: self._token_registered,
            DeviceTokenRemoved: self._token_removed,
            PushStatusRecorded: self._push_status,
            IdentityCleared: self._cleared,
        }
        # Decisions concern persons, not a device: no device row, no device handler.
        self._decisions: dict[type[DeviceEvent], Callable[[IdentityUnit, Any, int], None]] = {
            PersonsMerged: self._persons_merged,
            MergeUndone: self._merge_undone,
            PersonForgotten: self._person_forgotten,
        }
        assert self._handlers.keys() | self._decisions.keys() == self.event_types
        self._ahead: DecisionsAhead | None = None

    def attach(self, log: EventLog, *, until: int | None = None) -> None:
        """The log's decisions stream tells which merges were undone (they are never made);
        with ``until``, those undone up to that position only."""
        self._ahead = DecisionsAhead(log, until)

    @property
    def meta(self) -> str:
        """The configuration the rows were built under: a different one needs a rebuild."""
        legacy = " ids=position" if self.ids == "position" else ""
        return f"anonymous_merge={self.policy} rows={self.rows_format}{legacy}"

    def config(self) -> IdentityConfig:
        """The policy and id scheme: all the projecting child needs to build the same one."""
        return IdentityConfig(self.policy, self.ids)

    @classmethod
    def from_config(cls, config: IdentityConfig) -> IdentityProjection:
        """The projection :meth:`config` describes."""
        return cls(config.policy, config.ids)

    policy_of = staticmethod(_policy_of)
    ids_of = staticmethod(_ids_of)

    def apply_all(self, unit: IdentityUnit, events: Sequence[LoggedEvent]) -> None:
        """Apply events in log order (their rows read first, in a few queries)."""
        if not unit.complete:
            # After this, a device missing from the cache has no row (as with a complete one).
            self._prefetch(unit, events)
        handlers = self._handlers
        decided = self._decisions
        devices = unit.devices
        dirty = unit.dirty_devices
        if self._ahead is not None:
            self._ahead.stale = True
            unit.forgotten_holder = self._ahead.held_by
        for pos, ev in events:
            kind = type(ev)
            handler = handlers.get(kind)
            if ev.erased and kind in _ERASED_IGNORED:
                # Its person was forgotten: an erased token registration leaves its device with
                # no token (the token was the person's); an erased identify puts the device on
                # the member of the forgotten person it put it on (the forget recorded which),
                # and, forgotten before that was recorded, resolves and merges nothing.
                if kind is DeviceTokenRegistered:
                    handler = self._erased_token
                elif kind is Identified and ev.late:  # type: ignore[attr-defined]
                    handler = _ignore_erased  # an ended session's: applied to nobody, as ever
                elif (kind is Identified and self._ahead is not None
                      and self._ahead.subject_of(ev.key_id)):
                    handler = self._identified_erased
                else:
                    handler = _ignore_erased
            device_id = ev.device_id
            dev = devices.get(device_id)
            if handler is None and kind in decided:
                decided[kind](unit, ev, pos)
                continue
            if device_id == DECISIONS_STREAM:
                # Another decision (a forget, handed over with the events a command recorded,
                # or as the stream's first event in a replay): no device, no row.
                continue
            # to_micros, inlined (once per event).
            ts = (ev.timestamp - EPOCH) // MICROSECOND
            if dev is None:
                # A device's first event, of any type: its rows start here.
                dev = self._new_device(unit, ev, pos, ts)
                if handler is None:
                    continue
            elif handler is None:
                continue  # another projection's event
            elif ts > dev.updated_at:
                dev.updated_at = ts
            dev.seq += 1
            handler(unit, dev, ev, pos, ts)
            dirty.add(device_id)

    def _prefetch(self, unit: IdentityUnit, events: Sequence[LoggedEvent]) -> None:
        """Read the rows a batch will touch in a few queries instead of one per row."""
        devices = {ev.device_id for _, ev in events}
        identifiers: set[str] = set()
        tokens: set[str] = set()
        for _, ev in events:
            if ev.erased:
                continue
            if type(ev) in _SESSION_EVENTS and ev.sdk_anonymous_id is not None:  # type: ignore[attr-defined]
                identifiers.add(identifier_key("anon", ev.sdk_anonymous_id))  # type: ignore[attr-defined]
            if type(ev) is Identified:
                kind = classify(ev.user_id)
                if kind == "id":
                    identifiers.add(identifier_key("id", ev.user_id))
                elif kind == "email":
                    identifiers.add(identifier_key("email", normalize_email(ev.user_id)))
                email = ev.traits.get("email")
            elif type(ev) is ProfileAttributesChanged:
                email = ev.set.get("email")
            else:
                if type(ev) is DeviceTokenRegistered:
                    tokens.add(ev.token)
                continue
            # An email trait is claimed as an identifier: whoever holds it is looked up.
            if isinstance(email, str) and "@" in email:
                identifiers.add(identifier_key("email", normalize_email(email)))
        unit.prefetch(DEVICE, devices)
        unit.prefetch(TOKEN, tokens)
        unit.prefetch(IDENTIFIER, identifiers)
        rows = unit.devices
        persons = {row.person_id for d in devices if (row := rows[d]) is not None}
        persons.update(p for k in identifiers if (p := unit.owner(k)))
        unit.prefetch(PERSON, persons)

    # The fold: one handler per event type, called with the event's device row (created on
    # its first event), position and client time in microseconds. What an event does to its
    # own device and to attribute values is in `local`, shared with the audit's refolds.

    def _profile_attributes(
        self, unit: IdentityUnit, dev: DeviceRow, ev: ProfileAttributesChanged, pos: int, ts: int
    ) -> None:
        if ev.late:
            sessions.late(unit, dev, ev, pos)
            return
        if ev.sdk_anonymous_id is not None or ev.sdk_tag is not None:
            self._session(unit, dev, ev, pos)
            local.session(dev, ev)
        person = unit.person(dev.person_id)
        local.profile_attributes(person.attrs, ev, pos, ts)
        persons.attributes_written(unit, person, pos, ts, "email" in ev.set)

    def _activated(
        self, unit: IdentityUnit, dev: DeviceRow, ev: DeviceActivated, pos: int, ts: int
    ) -> None:
        local.activated(dev, ev)

    def _token_removed(
        self, unit: IdentityUnit, dev: DeviceRow, ev: DeviceTokenRemoved, pos: int, ts: int
    ) -> None:
        if local.token_removed(dev, ev):
            unit.delete(TOKEN, ev.token)

    def _push_status(
        self, unit: IdentityUnit, dev: DeviceRow, ev: PushStatusRecorded, pos: int, ts: int
    ) -> None:
        local.push_status(dev, ev)

    def _cleared(
        self, unit: IdentityUnit, dev: DeviceRow, ev: IdentityCleared, pos: int, ts: int
    ) -> None:
        persons.leave(unit, dev, dev.person_id, pos)
        local.cleared(dev, ev)
        self._new_anonymous_person(unit, dev, pos, ts)
        if ev.sdk_anonymous_id is not None or ev.sdk_tag is not None:
            self._session(unit, dev, ev, pos)

    def _new_device(self, unit: IdentityUnit, ev: DeviceEvent, pos: int, ts: int) -> DeviceRow:
        dev = local.new_device(ev.device_id, ts)
        if type(ev) is Identified and ev.server:
            # Read erased, it starts on the forgotten member it named, if the forget said.
            member = (None if not ev.erased or self._ahead is None
                      else self._ahead.subject_of(ev.key_id))
            if ((member is not None or not ev.erased)
                    and sessions.server_stream(unit, dev, ev, pos, ts, self.ids, member)):
                unit.put_device(dev)
                return dev
        self._new_anonymous_person(unit, dev, pos, ts)
        unit.put_device(dev)
        return dev

    def _new_anonymous_person(self, unit: IdentityUnit, dev: DeviceRow, pos: int, ts: int) -> None:
        anonymous_id = anonymous_id_for(dev.device_id, dev.generation)
        person = PersonRow(person_id=anonymous_person_id(anonymous_id), anonymous_ids=[anonymous_id],
                           anonymous_since=[pos], devices=[dev.device_id], created_at=ts,
                           updated_at=ts, since=pos, stints=[Stint(dev.device_id, pos)])
        dev.anonymous_id = anonymous_id
        dev.person_id = person.person_id
        unit.put_person(person, new=True)  # a new session's id: no row can hold it yet
        unit.put_identifier("anon", anonymous_id, person.person_id, pos, new=True)

    def _identified(
        self, unit: IdentityUnit, dev: DeviceRow, ev: Identified, pos: int, ts: int
    ) -> None:
        if ev.late:
            sessions.late(unit, dev, ev, pos)
            return
        self._identify(unit, dev, ev, pos, ts)
        if ev.sdk_anonymous_id is not None:
            self._session(unit, dev, ev, pos)
            local.session(dev, ev)

    def _session(self, unit: IdentityUnit, dev: DeviceRow,
                 ev: Identified | ProfileAttributesChanged | IdentityCleared, pos: int) -> None:
        """The SDK session an event starts goes to the device's person: by its anonymousId,
        or, once that reads erased, by its tag alone. The tag is looked up beside the
        anonymousId only where the log holds a forget (else no session is known by its tag
        alone)."""
        if ev.sdk_anonymous_id is not None:
            ahead = self._ahead
            tag = ev.sdk_tag if ahead is not None and ahead.any_forgotten() else None
            sessions.tag_session(unit, dev, ev.sdk_anonymous_id, pos, tag)
        elif ev.sdk_tag is not None:
            sessions.tag_erased(unit, dev, ev.sdk_tag, pos)

    def _erased_token(self, unit: IdentityUnit, dev: DeviceRow, ev: DeviceTokenRegistered,
                      pos: int, ts: int) -> None:
        """A token registration that reads erased: the token was a forgotten person's value,
        and it replaced whatever token the device had; its platform (no personal value)
        stays. The device it took the token from (the forget recorded which) loses it still."""
        taken_from = None if self._ahead is None else self._ahead.taken_at(pos)
        for holder in (dev, None if taken_from is None else unit.device(taken_from)):
            if holder is not None and holder.token is not None:
                unit.delete(TOKEN, holder.token)
                holder.token = None
                if holder is not dev:
                    holder.token_lost.append(pos)
                    unit.put_device(holder)
        local.token_erased(dev, ev)
        dev.ignored.append(pos)

    def _identified_erased(
        self, unit: IdentityUnit, dev: DeviceRow, ev: Identified, pos: int, ts: int
    ) -> None:
        """An identify of a forgotten person, read erased: no identifier to resolve or claim,
        but the device goes where it went (a conversion, a merge into the member, a switch
        to it), so that no other person's id, devices or merges change with the forget."""
        assert self._ahead is not None
        member = self._ahead.subject_of(ev.key_id)
        assert member is not None
        stitching.stitch(unit, dev, ev, pos, ts, unit.person(dev.person_id), None, "",
                         unit.survivor(member), self.policy, self.ids, self._ahead)
        self._session(unit, dev, ev, pos)

    def _identify(
        self, unit: IdentityUnit, dev: DeviceRow, ev: Identified, pos: int, ts: int
    ) -> None:
        found = stitching.resolve(unit, dev, ev, pos)
        if found is not None:
            current, kind, value, target = found
            stitching.stitch(unit, dev, ev, pos, ts, current, kind, value, target,
                             self.policy, self.ids, self._ahead)

    # Person-level decisions (identity-model.md §4), in log order like every other event.

    def _persons_merged(self, unit: IdentityUnit, ev: PersonsMerged, pos: int) -> None:
        decisions.persons_merged(unit, ev, pos, self._ahead)

    def _person_forgotten(self, unit: IdentityUnit, ev: PersonForgotten, pos: int) -> None:
        # Nothing to fold either (the forget's purge rewrites the rows), but the emails it
        # lists are held from now on: claims after it must see them (DecisionsAhead.held_by).
        if self._ahead is not None:
            self._ahead.forgotten()

    def _merge_undone(self, unit: IdentityUnit, ev: MergeUndone, pos: int) -> None:
        # Nothing to fold here: a merge undone is skipped where it was recorded (see
        # decisions.DecisionsAhead). Rows that applied it before the undo was recorded are
        # replayed by the unmerge (Workspace.unmerge), or by any rebuild.
        return

    def _token_registered(
        self, unit: IdentityUnit, dev: DeviceRow, ev: DeviceTokenRegistered, pos: int, ts: int
    ) -> None:
        holder_id = unit.token_owner(ev.token)
        if dev.token != ev.token or holder_id != dev.device_id:
            # A new token (apps re-register the same one at every start: nothing moves then).
            if dev.token is not None and dev.token != ev.token:
                unit.delete(TOKEN, dev.token)
            if holder_id is not None and holder_id != dev.device_id:
                holder = unit.device(holder_id)
                if holder is not None and holder.token == ev.token:
                    holder.token = None
                    holder.token_lost.append(pos)
                    unit.put_device(holder)
            unit.put_token(ev.token, dev.device_id)
        local.token_registered(dev, ev)
