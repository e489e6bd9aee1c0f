"""The read side of the workspace: profiles, devices, merges, and every projection row.

In the embedded default (``auto_catch_up``) every query first brings the projections up to the
head of the log, so it sees every event committed before it (read-your-writes, also across
processes sharing the store). Reads then run in one snapshot of the projection store, which
must still hold what the catch-up reached: a rebuild in another process may have reset the rows
in between (its reset commits no rows and position 0). The snapshot's own tracking positions
tell; a query that finds them behind catches up again, which waits for the rebuild's replay
(it holds the projections' leases), and reads again. A reader thus sees the complete old rows
or the complete new ones, never the empty or half-replayed ones in between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from idstitch.domain.errors import CorruptRow, InvalidCommand
from idstitch.projections.asof_replay import replayed_profile, undone_since
from idstitch.projections.audit import Change, Provenance
from idstitch.projections.auditor import Auditor
from idstitch.projections.identity.rows import MergeRow, PersonRow
from idstitch.projections.store import EventLog, ProjectionStore, RowSource
from idstitch.projections.views import Device, Merge, Profile, Reader
from idstitch.service.gc_pause import bulk_gc
from idstitch.service.projecting import Projector
from idstitch.service.settings import Settings

T = TypeVar("T")

FAST_READ_PAUSE = 64
"""Reads that catch up first, without trying their snapshot alone, after a try found the
projections behind the log (see QueryService._snapshot)."""


class Queries:
    """Answers the identity queries from the projection rows."""

    def __init__(self, log: EventLog, rows: ProjectionStore, projector: Projector,
                 settings: Settings, forgotten: Callable[[str], bool] | None = None,
                 scratch: Callable[[], ProjectionStore] | None = None) -> None:
        self.log = log
        self.scratch = scratch
        """Makes an empty rows store, in memory, for an as-of answer replayed from the log
        (None: as-of answers from the rows as they stand)."""
        self.rows = rows
        self.auditor = Auditor()
        self.projector = projector
        self.settings = settings
        self._fast_reads = True
        self._fast_pause = 0
        self.forgotten = forgotten or (lambda identifier: False)
        """Whether an identifier named a forgotten person (its user ids, emails, person id,
        ``cio_<person id>``): see :meth:`_hidden`."""

    def _unsettled_read(self) -> bool:
        """Whether a read may try its snapshot before catching up (see :meth:`_snapshot`):
        in the embedded default, with no custom projection (a read catches those up too) and
        no projection stopped at a damaged event; not for a while after a try that found the
        projections behind (on a store other processes write to, most tries would)."""
        if self._fast_pause:
            self._fast_pause -= 1
            return False
        projector = self.projector
        return (self._fast_reads and self.settings.auto_catch_up
                and not projector.custom.projections and not projector.unreadable)

    def _hidden(self, identifier: str) -> bool:
        """Whether the person lookups answer nothing for ``identifier``: it named a forgotten
        person, and finds no identified person now. What remains of a forgotten person in the
        rows is found by nothing (:meth:`Reader.person`: it is nameless), or, in rows of
        forgets recorded before their stints were kept, an anonymous session, which a later
        identify on its device converted and which is found by the id again."""
        if not self.forgotten(identifier):
            return False
        person = self._read(lambda reader: reader.person(identifier))
        return person is None or not person.identified

    def settle(self) -> None:
        """Catch the projections up first, when the workspace keeps them current."""
        if self.settings.auto_catch_up:
            self.projector.catch_up()

    def _settled(self) -> int:
        """Settle; the position up to which the rows hold every event."""
        if self.settings.auto_catch_up:
            return self.projector.catch_up()
        return self.projector.position()

    def person_row(self, person_id: str) -> PersonRow | None:
        """The raw person row of a person id (not following merges)."""
        def read() -> PersonRow | None:
            with self.rows.snapshot() as rows:
                return Reader(rows, self.projector.registry.row_types).person_row(person_id)
        return self._repairing(read)

    def merge_row(self, merge_id: str) -> MergeRow | None:
        """The record of a conversion, merge or switch, by its id."""
        with self.rows.snapshot() as rows:
            return Reader(rows, self.projector.registry.row_types).merge_row(merge_id)

    def _read(self, ask: Callable[[Reader], T]) -> T:
        """Settle, then ask the rows in one snapshot that holds what the catch-up reached."""
        def read() -> T:
            with self._snapshot() as (rows, _, _):
                return ask(Reader(rows, self.projector.registry.row_types))
        return self._repairing(read)

    @contextmanager
    def _snapshot(self, *, audit: bool = False
                  ) -> Iterator[tuple[RowSource, int, str | None]]:
        """Settle, then open a snapshot of the rows that holds every projection at the
        position the settling committed, or further; (the snapshot, the position settled,
        the audit's epoch). A snapshot found behind (a reset committed in between) is dropped
        and the query settles again. ``audit``: take the audit lock (before the snapshot's connection, see
        Auditor.serial) and pause the collector, and read the rows' epoch after settling."""
        registry = self.projector.registry
        names = registry.names
        if not audit and self._unsettled_read():
            # Most reads follow this process's own writes, which left every projection at the
            # head: the snapshot's first statement reads the head with the tracking rows, and
            # the read answers from it when nothing is left to fold (the catch-up before it
            # was a statement and a transaction of its own, ~25 us of a 130 us read).
            with self.rows.snapshot() as rows:
                at_head = rows.tracked_at_head(names)
                if at_head is not None and self.projector.reached(*at_head):
                    yield rows, at_head[0], None
                    return
            if at_head is None:
                self._fast_reads = False  # the store cannot read the head in a snapshot
            else:
                self._fast_pause = FAST_READ_PAUSE
        while True:
            until = self._settled()
            epoch = self.auditor.epoch(self.rows, registry) if audit else None
            with ExitStack() as stack:
                if audit:
                    stack.enter_context(self.auditor.serial())
                    stack.enter_context(bulk_gc(promote=False))  # one call, not a bulk job
                rows = stack.enter_context(self.rows.snapshot())
                found = rows.positions(names)
                if all(found[name] >= self.projector.committed(name) for name in names):
                    yield rows, until, epoch
                    return

    def _repairing(self, read: Callable[[], T]) -> T:
        """``read()``; if it met a damaged projection row, rebuild its projection and read
        again (once: a row the rebuild did not repair raises its CorruptRow)."""
        try:
            return read()
        except CorruptRow as e:
            self.projector.repair(e)
            self.auditor.clear()
        return read()

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds (user id, email, cio_<id>, person id, anonymous id);
        None for an identifier of a forgotten person (see :meth:`_hidden`)."""
        if self._hidden(identifier):
            return None
        return self._read(lambda reader: reader.profile(identifier))

    def named(self, identifier: str) -> str | None:
        """The id of the person an identifier names itself, not following merges (None:
        nobody, or a forgotten person's identifier)."""
        if self._hidden(identifier):
            return None
        return self._read(lambda reader: reader.named(identifier))

    def profile_of_device(self, device_id: str) -> Profile | None:
        """The device's current person."""
        return self._read(lambda reader: reader.profile_of_device(device_id))

    def device(self, device_id: str) -> Device | None:
        """A device: token, platform, attributes, last_used, last_status."""
        return self._read(lambda reader: reader.device(device_id))

    def merges(self, identifier: str) -> list[Merge]:
        """Every conversion, merge and switch of the person, with the position of its cause."""
        if self._hidden(identifier):
            return []
        return self._read(lambda reader: reader.merges(identifier))

    def dump(self) -> dict[str, list[tuple[str, bytes]]]:
        """Every projection row, by kind: two workspaces agree exactly when their dumps do."""
        self.settle()
        return {kind: list(self.rows.scan(kind)) for kind in self.projector.registry.kinds}

    # The audit (api.md "Audit: history, as-of, explain").

    def _audit(self, identifier: str, ask: Callable[[Reader, PersonRow, int, str | None], T],
               unknown: T) -> T:
        """Settle, find the person now, and ask the auditor (``unknown`` if nobody, or a
        forgotten person)."""
        if self._hidden(identifier):
            return unknown
        return self._repairing(lambda: self._audited(identifier, ask, unknown))

    def _audited(self, identifier: str, ask: Callable[[Reader, PersonRow, int, str | None], T],
                 unknown: T) -> T:
        with self._snapshot(audit=True) as (rows, until, epoch):
            reader = Reader(rows, self.projector.registry.row_types)
            person = reader.person(identifier)
            return unknown if person is None else ask(reader, person, until, epoch)

    def history(self, identifier: str) -> list[Change]:
        """Every Change that shaped the person the identifier finds now, in log order."""
        return self._audit(identifier, lambda reader, person, until, epoch: self.auditor.history(
            reader, self.log, person, until, epoch), [])

    def explain(self, identifier: str, attribute: str) -> Provenance | None:
        """Which event set the person's current value of ``attribute``, and what lost to it."""
        return self._audit(identifier, lambda reader, person, until, epoch: self.auditor.explain(
            reader, self.log, person, attribute, until, epoch), None)

    def profile_as_of(self, identifier: str, at: int | datetime) -> Profile | None:
        """The profile as the log stood at a position, or at a moment of recorded time.

        The public boundary let through an int (not a bool) or an aware datetime; what they
        mean is checked here."""
        if isinstance(at, datetime):
            try:
                at = at.astimezone(UTC)
            except OverflowError as e:  # 0001-01-01T00:00+05:00 is in year 0 in UTC
                raise InvalidCommand("at", f"is out of range once converted to UTC "
                                           f"({at.isoformat()}; years 1 to 9999)") from e
        elif at < 0:
            raise InvalidCommand("at", f"must be a position (0 or more), got {at}")
        if self._hidden(identifier) or self._read(
                lambda reader: _nameless(reader.person(identifier, nameless=True))):
            # Also an identifier of a person merged into a forgotten one (an anonymous
            # session's id, say): it was forgotten with it, at every position.
            return None
        return self._repairing(lambda: self._as_of(identifier, at))

    def _as_of(self, identifier: str, at: int | datetime) -> Profile | None:
        position = self.position_at(at) if isinstance(at, datetime) else at
        with self._snapshot(audit=True) as (rows, until, epoch):
            reader = Reader(rows, self.projector.registry.row_types)
            position = min(position, until)
            if self.scratch is None or not undone_since(self.log, reader, identifier,
                                                        position, until):
                return self.auditor.profile_as_of(reader, self.log, identifier,
                                                  position, until, epoch)
        # The rows no longer hold the merge an undo recorded later undid: as the log stood
        # then, it held (see idstitch.projections.asof_replay).
        return replayed_profile(self.projector.registry, self.log, self.scratch(), identifier,
                                position)

    def position_at(self, moment: datetime) -> int:
        """The last position recorded at or before ``moment`` (0: none).

        A binary search over the log: recorded times grow with positions (one clock per
        workspace; see docs/explanation/time-and-audit.md for several writers)."""
        moment = moment.astimezone(UTC)
        lo, hi = 0, self.log.head()
        while lo < hi:
            mid = (lo + hi + 1) // 2
            found = self.log.read(mid - 1, 1)
            if not found or found[0].position > hi:
                hi = mid - 1
            elif found[0].event.recorded_at <= moment:
                lo = found[0].position
            else:
                hi = mid - 1
        return lo


def _nameless(person: PersonRow | None) -> bool:
    """Whether a person is what a forget left (identified by erased identifies only)."""
    return person is not None and person.nameless
