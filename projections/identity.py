"""The identity projection: derives persons, stitching and tokens from the order of the log.

This is where identity-model.md §3 lives. Device events say what a device was told; this fold
decides what it means for persons (conversion, merge or switch by the ``anonymous_merge`` policy,
who holds an email, who owns a token, the winning value of each attribute). Because it is a pure
function of the log, an incremental catch-up and a rebuild from position 0 give the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal
from uuid import NAMESPACE_URL, uuid4, uuid5

from idstitch.domain import attributes
from idstitch.domain.device import (
    anonymous_id_for,
    anonymous_person_id,
    new_person_id,
    uuid5_text,
)
from idstitch.domain.errors import PolicyMismatch
from idstitch.domain.events import (
    DeviceActivated,
    DeviceAttributesChanged,
    DeviceAttributesCollected,
    DeviceEvent,
    DeviceTokenRegistered,
    DeviceTokenRemoved,
    Identified,
    IdentityCleared,
    ProfileAttributesChanged,
    PushStatusRecorded,
)
from idstitch.domain.rules import classify, normalize_email
from idstitch.projections.rows import (
    DEVICE,
    IDENTIFIER,
    PERSON,
    TOKEN,
    DeviceRow,
    MergeRow,
    PersonRow,
    Refusal,
)
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore, to_micros
from idstitch.projections.unit import Cache, Unit, cache_size, identifier_key, new_cache

Policy = Literal["merge", "switch"]
POLICIES: tuple[Policy, ...] = ("merge", "switch")
MERGE_NAMESPACE = uuid5(NAMESPACE_URL, "https://idstitch.dev/merge")
_MERGE_NS = MERGE_NAMESPACE.bytes
ROWS_FORMAT = 2
"""Version of the stored row layout: rows of another version are rebuilt on open."""
PAGE_SIZE = 10_000
"""Events read (and their rows prefetched) at a time."""
BATCH_SIZE = 50_000
"""Events per catch-up transaction at most: hot rows are written once per transaction."""
CACHE_LIMIT = 100_000
"""Rows kept decoded between transactions; beyond it the working set starts cold."""

Handler = Callable[[Unit, DeviceRow, Any, int, int], None]


class IdentityProjection:
    """Profiles and the identity graph, maintained incrementally in the projection store."""

    name = "identity"

    def __init__(self, policy: Policy = "merge") -> None:
        if policy not in POLICIES:
            raise ValueError(f"anonymous_merge must be one of {POLICIES}, got {policy!r}")
        self.policy: Policy = policy
        self.batch_size = BATCH_SIZE
        """Events per catch-up transaction at most (a smaller one holds the write lock less)."""
        self._cache: Cache = new_cache()
        self._cached_at: tuple[int, str | None] = (-1, None)
        self._complete = False
        # One handler per event type: a dict lookup instead of a chain of isinstance checks.
        self._handlers: dict[type[DeviceEvent], Handler] = {
            Identified: self._identified,
            ProfileAttributesChanged: self._profile_attributes,
            DeviceAttributesChanged: self._device_attributes,
            DeviceAttributesCollected: self._collected_attributes,
            DeviceActivated: self._activated,
            DeviceTokenRegistered: self._token_registered,
            DeviceTokenRemoved: self._token_removed,
            PushStatusRecorded: self._push_status,
            IdentityCleared: self._cleared,
        }

    @property
    def meta(self) -> str:
        """The configuration the rows were built under: a different one needs a rebuild."""
        return f"anonymous_merge={self.policy} rows={ROWS_FORMAT}"

    @staticmethod
    def config_of(meta: str | None) -> str | None:
        """A stored meta without its epoch: the configuration the rows were built under."""
        if meta is None:
            return None
        return " ".join(p for p in meta.split() if not p.startswith("epoch="))

    def _stored_meta(self, start: int, meta: str | None) -> str:
        # The epoch names one life of the rows, from position 0 on: a reset and replay by
        # another process reaches the same positions again, but never the same epoch.
        epoch = dict(p.partition("=")[::2] for p in (meta or "").split()).get("epoch")
        if start == 0 or not epoch:
            epoch = uuid4().hex[:16]
        return f"{self.meta} epoch={epoch}"

    @staticmethod
    def policy_of(meta: str | None) -> Policy | None:
        """The policy recorded in a tracking meta, if any."""
        settings = dict(part.partition("=")[::2] for part in (meta or "").split())
        value = settings.get("anonymous_merge")
        return "switch" if value == "switch" else "merge" if value == "merge" else None

    def catch_up(
        self,
        log: EventLog,
        store: ProjectionStore,
        progress: Callable[[int], None] | None = None,
        recent: Sequence[LoggedEvent] = (),
    ) -> int:
        """Apply every event after the tracking position, up to ``batch_size`` per transaction.

        ``recent``: events this process just appended, with their positions. When they follow
        the tracking position directly, they are applied as they are instead of being read back
        and decoded again (the common case of an embedded, single-writer workspace).
        """
        stretch = self.stretch(log, store)
        if not recent and stretch.start >= log.head():
            # Up to date: answer without taking the projection's write lock, so queries from
            # several processes do not queue behind each other.
            return stretch.start
        while True:
            stretch.fold(self.batch_size, recent)
            recent = ()
            applied = stretch.pending
            if not applied:
                return stretch.position
            if stretch.commit() and progress is not None:
                progress(applied)  # committed, so never counted twice

    def stretch(self, log: EventLog, store: ProjectionStore) -> Stretch:
        """Start folding from the committed position (see :class:`Stretch`)."""
        return Stretch(self, log, store)

    def apply_all(self, unit: Unit, events: Sequence[LoggedEvent]) -> None:
        """Apply events in log order (their rows read first, in a few queries)."""
        if not unit.complete:
            # After this, a device missing from the cache has no row (as with a complete one).
            self._prefetch(unit, events)
        handlers = self._handlers
        devices = unit.devices
        dirty = unit.dirty_devices
        for pos, ev in events:
            ts = to_micros(ev.timestamp)
            device_id = ev.device_id
            dev = devices.get(device_id)
            if dev is None:
                dev = self._new_device(unit, ev, ts)
            elif ts > dev.updated_at:
                dev.updated_at = ts
            handlers[type(ev)](unit, dev, ev, pos, ts)
            dirty.add(device_id)

    def _prefetch(self, unit: Unit, events: Sequence[LoggedEvent]) -> None:
        """Read the rows a batch will touch in a few queries instead of one per row."""
        devices = {ev.device_id for _, ev in events}
        identifiers: set[str] = set()
        tokens: set[str] = set()
        for _, ev in events:
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
        persons.update(p for k in identifiers if (p := unit.get(IDENTIFIER, k)))
        unit.prefetch(PERSON, persons)

    def check_policy(self, store: ProjectionStore) -> None:
        """Raise PolicyMismatch if the committed rows were built under the other policy."""
        self._check_meta(store.meta(self.name))

    def _check_meta(self, meta: str | None) -> None:
        if meta is not None and self.config_of(meta) != self.meta:
            raise PolicyMismatch(
                f"the identity projection was built under {self.config_of(meta)}, this workspace uses "
                f"{self.meta}: reopen without anonymous_merge (to adopt it), or rebuild")

    def forget_cache(self) -> None:
        """Drop cached rows (after a reset of the store)."""
        self._cache, self._cached_at, self._complete = new_cache(), (-1, None), False

    # The fold: one handler per event type, called with the event's device row (created on
    # its first event), position and client time in microseconds.

    def apply(self, unit: Unit, logged: LoggedEvent) -> None:
        """Apply one event to the rows."""
        self.apply_all(unit, [logged])

    def _profile_attributes(
        self, unit: Unit, dev: DeviceRow, ev: ProfileAttributesChanged, pos: int, ts: int
    ) -> None:
        person = unit.person(dev.person_id)
        stamp = (ts, pos)
        attrs = person.attrs
        attributes.assign(attrs, ev.set, stamp)
        if ev.unset:
            attributes.assign(attrs, dict.fromkeys(ev.unset), stamp)
        if ev.set_once:
            attributes.assign_once(attrs, ev.set_once, stamp)
        if ts > person.updated_at:
            person.updated_at = ts
        unit.put_person(person)
        if "email" in ev.set:
            self._claim_attribute_email(unit, person, pos)

    def _device_attributes(
        self, unit: Unit, dev: DeviceRow, ev: DeviceAttributesChanged, pos: int, ts: int
    ) -> None:
        attributes.assign(dev.attrs, ev.attributes, (ts, pos))

    def _collected_attributes(
        self, unit: Unit, dev: DeviceRow, ev: DeviceAttributesCollected, pos: int, ts: int
    ) -> None:
        attributes.assign(dev.collected, ev.attributes, (ts, pos))

    def _activated(
        self, unit: Unit, dev: DeviceRow, ev: DeviceActivated, pos: int, ts: int
    ) -> None:
        dev.auto_track = ev.auto_track_device_attributes
        dev.platform = ev.platform or dev.platform
        dev.sdk = ev.sdk if ev.sdk is not None else dev.sdk

    def _token_removed(
        self, unit: Unit, dev: DeviceRow, ev: DeviceTokenRemoved, pos: int, ts: int
    ) -> None:
        if dev.token == ev.token:
            dev.token = None
            unit.delete(TOKEN, ev.token)

    def _push_status(
        self, unit: Unit, dev: DeviceRow, ev: PushStatusRecorded, pos: int, ts: int
    ) -> None:
        dev.last_status = ev.status

    def _cleared(self, unit: Unit, dev: DeviceRow, ev: IdentityCleared, pos: int, ts: int) -> None:
        self._leave(unit, dev, dev.person_id)
        dev.generation = ev.generation
        dev.user_id = None
        self._new_anonymous_person(unit, dev, ts)

    def _new_device(self, unit: Unit, ev: DeviceEvent, ts: int) -> DeviceRow:
        # person_id and anonymous_id are set by the anonymous person it starts with.
        dev = DeviceRow(device_id=ev.device_id, person_id="", anonymous_id="", created_at=ts,
                        updated_at=ts)
        self._new_anonymous_person(unit, dev, ts)
        unit.put_device(dev)
        return dev

    def _new_anonymous_person(self, unit: Unit, dev: DeviceRow, ts: int) -> None:
        anonymous_id = anonymous_id_for(dev.device_id, dev.generation)
        person = PersonRow(person_id=anonymous_person_id(anonymous_id), anonymous_ids=[anonymous_id],
                           devices=[dev.device_id], created_at=ts, updated_at=ts)
        dev.anonymous_id = anonymous_id
        dev.person_id = person.person_id
        unit.put_person(person)
        unit.put_identifier("anon", anonymous_id, person.person_id)

    def _identified(
        self, unit: Unit, dev: DeviceRow, ev: Identified, pos: int, ts: int
    ) -> None:
        current = unit.person(dev.person_id)
        kind = classify(ev.user_id)
        value = normalize_email(ev.user_id) if kind == "email" else ev.user_id
        if kind == "cio":
            target = unit.live_person(ev.user_id[len("cio_"):])
            if target is None or not target.identified:
                # The command checked it; a concurrent merge retired it since. Refuse, visibly.
                current.refused.append(Refusal("cio", ev.user_id, "not a live identified person",
                                               pos))
                unit.put_person(current)
                return
        else:
            target = unit.resolve_key(identifier_key(kind, value))

        if target is not None and target.person_id == current.person_id:
            person = current
        elif not current.identified and target is None:
            current.identified = True
            self._claim(unit, current, kind, value, pos)
            if current.email is None:
                # An email given while anonymous becomes an identifier when the person is named.
                self._claim_attribute_email(unit, current, pos)
            self._record(unit, "converted", dev.anonymous_id, current, current, dev, pos, ts)
            person = current
        elif not current.identified and target is not None and self.policy == "merge":
            self._merge_anonymous(unit, target, current, dev, pos, ts)
            person = target
        else:
            if target is None:
                target = PersonRow(person_id=new_person_id(dev.device_id, pos), identified=True,
                                   created_at=ts, updated_at=ts)
                self._claim(unit, target, kind, value, pos)
            self._leave(unit, dev, current.person_id)
            self._join(unit, dev, target)
            self._record(unit, "switched", current.person_id, current, target, dev, pos, ts)
            person = target

        attributes.assign(person.attrs, ev.traits, (ts, pos))
        if ts > person.updated_at:
            person.updated_at = ts
        unit.put_person(person)
        if "email" in ev.traits:
            self._claim_attribute_email(unit, person, pos)
        dev.user_id = ev.user_id
        if dev.last_used is None or ts > dev.last_used:
            dev.last_used = ts
        dev.last_status = None

    def _merge_anonymous(
        self, unit: Unit, survivor: PersonRow, retired: PersonRow, dev: DeviceRow, pos: int, ts: int
    ) -> None:
        attributes.merge(survivor.attrs, retired.attrs)
        for anonymous_id in retired.anonymous_ids:
            survivor.anonymous_ids.append(anonymous_id)
            unit.put_identifier("anon", anonymous_id, survivor.person_id)
        for device_id in retired.devices:
            moved = dev if device_id == dev.device_id else unit.device(device_id)
            if moved is not None:
                moved.person_id = survivor.person_id
                survivor.devices.append(device_id)
                unit.put_device(moved)
        survivor.merges.extend(retired.merges)
        retired.devices = []
        retired.retired_into = survivor.person_id
        self._record(unit, "merged", retired.person_id, retired, survivor, dev, pos, ts)

    def _leave(self, unit: Unit, dev: DeviceRow, person_id: str) -> None:
        person = unit.person(person_id)
        if dev.device_id in person.devices:
            person.devices.remove(dev.device_id)
        unit.put_person(person)

    def _join(self, unit: Unit, dev: DeviceRow, person: PersonRow) -> None:
        if dev.device_id not in person.devices:
            person.devices.append(dev.device_id)
        dev.person_id = person.person_id
        unit.put_person(person)

    def _record(
        self, unit: Unit, kind: str, source: str, source_person: PersonRow, target: PersonRow,
        dev: DeviceRow, pos: int, ts: int,
    ) -> None:
        merge_id = uuid5_text(_MERGE_NS, f"{pos}:{kind}")
        unit.put_merge(MergeRow(merge_id=merge_id, kind=kind, source=source,
                                target=target.person_id, position=pos, device_id=dev.device_id,
                                timestamp=ts))
        for person in (source_person, target):
            if merge_id not in person.merges:
                person.merges.append(merge_id)
            unit.put_person(person)

    def _claim(self, unit: Unit, person: PersonRow, kind: str, value: str, pos: int) -> None:
        if kind == "id":
            person.user_id = value
            unit.put_identifier("id", value, person.person_id)
        elif kind == "email":
            self._claim_email(unit, person, value, pos)

    def _claim_attribute_email(self, unit: Unit, person: PersonRow, pos: int) -> None:
        # The identifier follows the winning value of the `email` attribute (last writer wins on
        # the client clock), so a late event with an older email cannot move it.
        present, email = attributes.value_of(person.attrs, "email")
        if person.identified and present and isinstance(email, str) and "@" in email:
            self._claim_email(unit, person, normalize_email(email), pos)

    def _claim_email(self, unit: Unit, person: PersonRow, email: str, pos: int) -> None:
        holder = unit.resolve_key(identifier_key("email", email))
        if holder is not None and holder.person_id != person.person_id:
            # Two identified persons are never merged implicitly: keep the attribute, refuse
            # the identifier, and leave a trace for the audit.
            person.refused.append(Refusal("email", email, "held by another person", pos,
                                          holder.person_id))
        elif holder is None:
            if person.email is not None:
                unit.delete_identifier("email", person.email)
            person.email = email
            unit.put_identifier("email", email, person.person_id)
        unit.put_person(person)

    def _token_registered(
        self, unit: Unit, dev: DeviceRow, ev: DeviceTokenRegistered, pos: int, ts: int
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
                    unit.put_device(holder)
            unit.put_token(ev.token, dev.device_id)
            dev.token = ev.token
        dev.platform = ev.platform or dev.platform
        dev.last_status = None


class Stretch:
    """Events folded since the last commit: their rows changed in memory, not yet in the store.

    Optimistic: the fold reads committed rows outside the store's write lock; :meth:`commit`
    takes the lock only to write the rows and the position, and only if nobody committed since
    the stretch began (same position and same epoch: a reset and replay elsewhere can reach the
    same position again). Appends by other processes (a bulk ingest) are then not held up by
    the fold, and two processes catching up never apply a batch twice. After any exception the
    stretch is spent (the projection's cache is dropped).
    """

    def __init__(self, projection: IdentityProjection, log: EventLog, store: ProjectionStore):
        self._projection, self._log, self._store = projection, log, store
        self.start, self._meta = store.tracked(projection.name)
        # Never apply events to rows built under the other policy.
        projection._check_meta(self._meta)
        self.position = self.start
        self.pending = 0
        """Events folded and not committed."""
        self._unit = self._begin()

    def _begin(self) -> Unit:
        projection = self._projection
        if (self.start, self._meta) != projection._cached_at or cache_size(
                projection._cache) > CACHE_LIMIT:
            # Another writer moved the projection, or the cache grew: start cold. At position 0
            # nothing was ever committed (rows and position commit together), so there are no
            # rows: an empty cache is then complete.
            projection._cache, projection._complete = new_cache(), self.start == 0
            projection._cached_at = (self.start, self._meta)
        return Unit(self._store, projection._cache, complete=projection._complete)

    @property
    def full(self) -> bool:
        """Whether the working set is over its limit (time to commit)."""
        return cache_size(self._projection._cache) > CACHE_LIMIT

    def fold(self, limit: int, recent: Sequence[LoggedEvent] = ()) -> int:
        """Read and apply up to about ``limit`` more events (fewer at the head of the log)."""
        applied = 0
        try:
            # Several pages a transaction: a hot person or device row is then written once per
            # transaction, not once per page.
            while applied < limit and not self.full:
                position = self.position
                if (recent and recent[0].position == position + 1
                        and recent[-1].position - recent[0].position + 1 == len(recent)):
                    # Exactly the next positions: nobody else's events hide in between.
                    events, recent = recent, ()
                else:
                    events, recent = self._log.read(position, PAGE_SIZE), ()
                if not events:
                    break
                self._projection.apply_all(self._unit, events)
                self.position = events[-1].position
                applied += len(events)
        except BaseException:
            self._projection.forget_cache()
            raise
        self.pending += applied
        return applied

    def commit(self) -> bool:
        """Write the changed rows and the position. False when somebody else committed since
        the stretch began: what it folded is dropped, and it goes on from their position."""
        projection = self._projection
        try:
            if not self.pending:
                # Nothing to write; but say False if the store moved (a reset elsewhere, say),
                # so a caller never takes this stretch's position for the store's.
                tracked = self._store.tracked(projection.name)
                committed = tracked == (self.start, self._meta)
                if not committed:
                    projection.forget_cache()
                    self.start, self._meta = tracked
            else:
                with self._store.transaction(projection.name) as tx:
                    # Another process may have rebuilt the rows under the other policy: writing
                    # rows of ours would mix both.
                    projection._check_meta(tx.meta)
                    committed = (tx.position, tx.meta) == (self.start, self._meta)
                    if committed:
                        self._meta = projection._stored_meta(self.start, self._meta)
                        tx.write(self._unit.encoded(), self.position, self._meta)
                        self.start = self.position
                    else:
                        projection.forget_cache()
                        self.start, self._meta = tx.position, tx.meta
        except BaseException:
            projection.forget_cache()
            raise
        projection._cached_at = (self.start, self._meta)
        self.position, self.pending = self.start, 0
        self._unit = self._begin()
        return committed
