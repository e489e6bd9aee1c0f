"""Catch-up and optimistic commits: how any registered projection follows the log (a replay
from position 0 is :mod:`idstitch.projections.replay`).

Nothing here knows a particular projection: the runner reads the events a projection folds
(its ``event_types``), hands them to its ``apply_all`` on a unit of its rows, and commits the
changed rows with the new tracking position in one transaction.

Several processes writing one store (two API nodes, two ingests) each catch up after their
writes. Had they all folded the same events, the optimistic commit would keep the rows right,
but every commit by one would throw away the others' folds: with two bulk ingests, most of the
folding was done twice or thrown away. So a catch-up first takes the projection's **lease**
(:class:`Leases`, where the store has them): one process at a time folds a projection. A
catch-up that finds the lease taken does not fold the same events: it asks the holder to commit
up to the position it needs (``want``) and waits until the committed position gets there, or the
lease comes free (then it folds the rest itself), or the holder makes no progress for
STALL_SECONDS (then it folds anyway: the optimistic commit keeps that safe). A catch-up asked
not to wait (an ingest between its batches) just returns. A command's catch-up whose own few
events follow the projection's committed position directly folds and commits them without
the lease (see _fold_own): nobody has anything to fold before them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from idstitch.domain.errors import CorruptEvent
from idstitch.projections.base import RowProjection
from idstitch.projections.leases import STALL_SECONDS as STALL_SECONDS
from idstitch.projections.leases import WAIT_PAUSE_MAX as WAIT_PAUSE_MAX
from idstitch.projections.leases import Leases as Leases
from idstitch.projections.leases import await_holder
from idstitch.projections.leases import leases_of as leases_of
from idstitch.projections.runner_state import RunnerState as RunnerState
from idstitch.projections.runner_state import RunnerStates as RunnerStates
from idstitch.projections.runner_state import folded_to
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore
from idstitch.projections.unit import Unit, cache_size, evict, new_cache

PAGE_SIZE = 10_000
"""Events read (and their rows prefetched) at a time."""
CACHE_KEEP = 0.5
"""The share of a projection's cache limit an eviction keeps (the most recently read rows)."""
LAG_LIMIT = 1_000
"""A catch-up that met only other projections' events leaves the committed position up to
this far behind (it writes nothing then); past it, it commits the position, so that reads
skipping those events stay short."""
OWN_EVENTS = 64
"""A catch-up after a command (up to this many events of its own, waiting allowed) may fold
them without the lease (see _fold_own); an ingest's batches, and a catch-up told not to wait,
leave a leased projection to its holder."""


def catch_up(
    projection: RowProjection,
    state: RunnerState,
    log: EventLog,
    store: ProjectionStore,
    progress: Callable[[int], None] | None = None,
    recent: Sequence[LoggedEvent] = (),
    *,
    wait: bool = True,
    eager: bool = False,
    head: int | None = None,
    tracked: tuple[int, str | None] | None = None,
) -> int:
    """Apply every event after the projection's tracking position, up to its ``batch_size``
    per transaction, reading only its own events; the position reached.

    ``recent``: events this process just appended, with their positions. When they follow
    the tracking position directly, they are applied as they are instead of being read back
    and decoded again (the common case of an embedded, single-writer workspace).

    When another process holds the projection's lease, this waits for it to commit the
    position needed (see the module docstring); with ``wait=False`` it returns the committed
    position at once instead.

    ``eager``: commit the position reached even when only other projections' events were met
    (a projecting process does, so that ``wait_for`` sees every projection at the head).
    ``head``: fold up to this position and no further (a projecting process reads the head
    once for all its projections, so that one projection chasing a log that keeps growing
    never keeps the next one waiting). ``tracked``: the committed (position, meta) as read
    before ``recent`` was appended, instead of reading it again (see Stretch).
    """
    if not recent:
        # Up to date and unchanged since this process last saw it (a query's catch-up): the
        # answer without a stretch (a cold or moved one drops its caches, as below).
        tracked = tracked if tracked is not None else store.tracked(projection.name)
        top = head if head is not None else log.head()
        folded = folded_to(state, tracked, eager=eager)
        if tracked == state.cached_at and folded >= top:
            projection.check_meta(tracked[1])
            state.committed = tracked[0]
            return folded
    stretch = Stretch(projection, state, log, store, tracked)
    # After a command, up to its own events: read-your-writes needs no more, and what other
    # processes appended since is the next query's to catch up (one query less here).
    settled = bool(recent) or head is not None
    # A projecting process (eager) must commit every position it reaches, so that other
    # processes' wait_for sees it; anyone else may stop where it verified nothing is left.
    reached = stretch.start if eager else stretch.position
    if recent:
        until = max(recent[-1].position, stretch.position)
    else:
        until = top
        if reached >= until:
            # Up to date: answer without taking the projection's write lock, so queries
            # from several processes do not queue behind each other.
            state.committed = stretch.start
            return reached
    if recent and wait and not eager and len(recent) <= OWN_EVENTS:
        own = _fold_own(stretch, state, recent, until, progress)
        if own is not None:
            return own
        stretch = Stretch(projection, state, log, store)
    leases = leases_of(store)
    held = leases is not None and leases.try_lease(projection.name)
    if leases is not None and not held:
        if not wait:
            state.committed = stretch.start
            return stretch.start
        awaited, held = await_holder(projection.name, store, leases, until)
        if awaited is not None:
            state.committed = awaited
            return awaited
        stretch = Stretch(projection, state, log, store)  # from where the holder left it
    try:
        reached = _fold_until(stretch, state, log, until, settled, progress, recent, eager)
        state.committed = stretch.start
        return reached
    except BaseException:
        # Whatever raised (a progress callback between a fold and its commit, Ctrl-C, the
        # store), the cache may hold folded rows that were never committed: a later catch-up
        # from the committed position would apply those events twice.
        state.forget()
        raise
    finally:
        if held:
            assert leases is not None
            leases.release_lease(projection.name)


def follows(state: RunnerState, tracked: tuple[int, str | None] | None, first: int) -> bool:
    """Whether events from position ``first`` on follow directly what a projection holds: its
    committed position (``tracked``), or what this process folded after it without a row
    changing (``state.verified``)."""
    if tracked is None:
        return False
    verified = state.verified
    at = verified[2] if verified is not None and verified[:2] == tracked else tracked[0]
    return first == at + 1


def fold_landed(projection: RowProjection, state: RunnerState, log: EventLog,
                store: ProjectionStore, recent: Sequence[LoggedEvent],
                tracked: tuple[int, str | None] | None) -> int | None:
    """A command's own events folded and their rows written inside its append's transaction
    (SQLite; see ``AppendCheck.landed``): the position reached, or None when they do not
    follow what the projection holds directly (or are too many), where nothing is written
    and the catch-up after the append goes as ever. Never takes the lease nor waits: the
    append holds the store's write lock, and a holder of the lease may be waiting for it."""
    if len(recent) > OWN_EVENTS:
        return None
    stretch = Stretch(projection, state, log, store, tracked)
    return _fold_own(stretch, state, recent, max(recent[-1].position, stretch.position), None)


def _fold_own(stretch: Stretch, state: RunnerState, recent: Sequence[LoggedEvent], until: int,
              progress: Callable[[int], None] | None) -> int | None:
    """The events this process just appended, when they follow what the projection holds
    (its committed position, or what this process verified after it) directly: fold them
    and commit without the lease; the position reached. None when they do not, or when the
    commit finds that somebody else committed since: then the caller goes the long way
    (lease, wait, read).

    The lease only keeps two processes from folding the same events: here there is nothing
    for another process to fold before these events, and the commit writes only if the store
    still holds the (position, meta) the fold began from. A reset (a rebuild elsewhere, which
    holds the lease) moves the position back: the commit then fails, and the long way waits
    for the rebuild as before."""
    if not (recent[0].position == stretch.position + 1
            and recent[-1].position - recent[0].position + 1 == len(recent)
            and recent[-1].position >= until):
        return None
    try:
        stretch.fold(len(recent), recent, until=until)
        if stretch.position < until:
            return None  # the working set was full: the long way commits it first
        applied = stretch.pending
        if not stretch.changed and stretch.position - stretch.start < LAG_LIMIT:
            # No row changed: as in _fold_until, nothing is written.
            state.verified = (stretch.start, stretch.meta, stretch.position)
        elif not stretch.commit():
            return None
        elif progress is not None:
            progress(applied)
    except BaseException:
        state.forget()
        raise
    state.committed = stretch.start
    return stretch.position


def _fold_until(
    stretch: Stretch, state: RunnerState, log: EventLog, until: int, settled: bool,
    progress: Callable[[int], None] | None, recent: Sequence[LoggedEvent], eager: bool = False,
) -> int:
    """catch_up's loop: fold and commit up to ``until`` (and, unless ``settled``, up to the
    head as it is when ``until`` is reached)."""
    while True:
        stretch.fold(state.batch_size, recent, until=until)
        recent = ()
        applied = stretch.pending
        if stretch.position == stretch.start or (
                not eager and not stretch.changed and stretch.position - stretch.start < LAG_LIMIT):
            # Nothing left up to `until` (or only other projections' events: no row to
            # write, and the committed position moves with this projection's next rows; a
            # commit just for it cost a single command ~0.3 ms). But other processes may
            # have appended since.
            if stretch.position > stretch.start:
                state.verified = (stretch.start, stretch.meta, stretch.position)
            head = until if settled else log.head()
            if head <= until:
                return stretch.position
            until = head
        elif stretch.commit() and progress is not None:
            progress(applied)  # committed, so never counted twice


class Stretch:
    """Events folded since the last commit: their rows changed in memory, not yet in the store.

    Optimistic: the fold reads committed rows outside the store's write lock; :meth:`commit`
    takes the lock only to write the rows and the position, and only if nobody committed since
    the stretch began (same position and same epoch: a reset and replay elsewhere can reach the
    same position again). Appends by other processes (a bulk ingest) are then not held up by
    the fold, and two processes catching up never apply a batch twice. After any exception the
    stretch is spent (the projection's cache is dropped).
    """

    def __init__(self, projection: RowProjection, state: RunnerState, log: EventLog,
                 store: ProjectionStore, tracked: tuple[int, str | None] | None = None) -> None:
        self._projection, self._state, self._log, self._store = projection, state, log, store
        # ``tracked``: the committed (position, meta) read a moment ago (for every projection
        # in one statement). If somebody committed since, the commit finds out and the
        # stretch goes on from their position, as after any concurrent commit.
        self.start, self._meta = tracked if tracked is not None else store.tracked(
            projection.name)
        # Never apply events to rows built under another configuration (policy).
        projection.check_meta(self._meta)
        self.position = self.start
        verified = state.verified
        if verified is not None and verified[:2] == (self.start, self._meta):
            # Events this process already folded without a row changing (left uncommitted):
            # folding them again would change nothing either.
            self.position = verified[2]
        self.pending = 0
        """Events folded and not committed."""
        self._unit = self._begin()

    def _begin(self) -> Unit:
        projection, state = self._projection, self._state
        if (self.start, self._meta) != state.cached_at:
            # Another writer moved the projection: start cold. At position 0 nothing was ever
            # committed (rows and position commit together), so there are no rows: an empty
            # cache is then complete.
            if self._meta != state.cached_at[1]:
                # A new life of the rows (a purge, a rebuild), maybe after a forget elsewhere:
                # a cached key would unseal the person again. (Plain commits keep the epoch.)
                self._log.drop_keys()
            state.cache = new_cache(projection.row_types)
            state.complete = self.start == 0
            state.cached_at = (self.start, self._meta)
        elif cache_size(state.cache) > projection.cache_limit:
            # The cache grew past its limit: keep the rows the latest batches brought in (the
            # users active now), drop the older ones. What is dropped is read again if needed.
            evict(state.cache, int(projection.cache_limit * CACHE_KEEP))
            state.complete = False
        return projection.unit_class(self._store, state.cache, projection.row_types,
                                     complete=state.complete)

    @property
    def meta(self) -> str | None:
        """The committed tracking meta the stretch began from."""
        return self._meta

    @property
    def changed(self) -> bool:
        """Whether the folded events changed any row (other projections' events change none)."""
        return self._unit.changed

    @property
    def full(self) -> bool:
        """Whether the working set is over its limit (time to commit)."""
        return cache_size(self._state.cache) > self._projection.cache_limit

    def fold(self, limit: int, recent: Sequence[LoggedEvent] = (), *, until: int) -> int:
        """Read and apply up to about ``limit`` more of the projection's own events, no
        further than position ``until`` (at or below a head read before: nothing unsettled
        lies below it); fewer when it gets there."""
        applied = 0
        projection = self._projection
        try:
            # Several pages a transaction: a hot person or device row is then written once per
            # transaction, not once per page.
            while applied < limit and not self.full:
                position = self.position
                if (recent and recent[0].position == position + 1
                        and recent[-1].position - recent[0].position + 1 == len(recent)):
                    # Exactly the next positions: nobody else's events hide in between.
                    events, short = recent, False
                elif position >= until:
                    break
                else:
                    try:
                        events = self._log.read_selected(position, until, PAGE_SIZE,
                                                         projection.event_types,
                                                         first=projection.first_events)
                    except CorruptEvent as e:
                        if e.position <= position + 1:
                            raise
                        # Fold what lies before an unreadable event (a commit keeps it); the
                        # next read starts at the event and raises.
                        until = e.position - 1
                        continue
                    # A short page: nothing else up to `until` is this projection's.
                    short = len(events) < PAGE_SIZE
                recent = ()
                if events:
                    projection.apply_all(self._unit, events)
                    self.position = events[-1].position
                    applied += len(events)
                if short:
                    self.position = max(self.position, until)
                elif not events:
                    break
        except BaseException:
            self._state.forget()
            raise
        self.pending += applied
        return applied

    def commit(self) -> bool:
        """Write the changed rows and the position. False when somebody else committed since
        the stretch began: what it folded is dropped, and it goes on from their position."""
        projection = self._projection
        life = self._meta
        try:
            if self.position == self.start:
                # Nothing to write; but say False if the store moved (a reset elsewhere, say),
                # so a caller never takes this stretch's position for the store's.
                tracked = self._store.tracked(projection.name)
                committed = tracked == (self.start, self._meta)
                if not committed:
                    self._state.forget()
                    self.start, self._meta = tracked
            else:
                # Encoded before the write lock is taken: other writers (a bulk ingest's
                # appends) wait only for the rows to be written, not for them to be encoded.
                rows = self._unit.encoded()
                meta = projection.stored_meta(self.start, self._meta)
                # Written only if nobody committed since the stretch began (its meta was
                # checked then): a compare-and-set, one statement where the store can.
                # The new rows' hint is worked out only for a store that uses it.
                fresh = (self._unit.fresh() if getattr(self._store, "uses_fresh", True)
                         else frozenset[tuple[str, str]]())
                found = self._store.write_if(projection.name, (self.start, self._meta), rows,
                                             self.position, meta, fresh)
                committed = found is None
                if found is None:
                    self.start, self._meta = self.position, meta
                else:
                    # Another process may have rebuilt the rows under the other policy:
                    # folding on over rows of theirs would mix both.
                    projection.check_meta(found[1])
                    self._state.forget()
                    self.start, self._meta = found
        except BaseException:
            self._state.forget()
            raise
        if not committed and self._meta != life:
            # Lost to a new life of the rows (a purge, a rebuild: maybe a forget's): the keys
            # cached here may be destroyed ones (as Stretch._begin, which this skips).
            self._log.drop_keys()
        self._state.cached_at = (self.start, self._meta)
        self.position, self.pending = self.start, 0
        self._unit = self._begin()
        return committed
