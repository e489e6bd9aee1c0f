"""The one commit algorithm: a batch of messages, run on their aggregates, appended at once.

A :class:`Batch` is what a unit of work's handlers decided: the aggregates they loaded (devices,
the workspace's decisions), the events those recorded, in message order, and for each message
which aggregate took which of its commands. The :class:`Writer`, shared by every unit of work
of a workspace, appends a batch's events in one transaction, with optimistic concurrency
(:meth:`Writer.commit`): an ingest batch, and a public call as a batch of one message. When
another writer got to an aggregate first, the aggregates that moved are reloaded and only the
messages that ran on them run again (:meth:`Batch.rerun`); the rest of the batch is kept as it
was decided. A message an aggregate refuses when it runs again (an undo of a merge another
writer undid meanwhile) is rejected whole, the others kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from idstitch.domain.aggregates import Aggregate
from idstitch.domain.errors import ConcurrencyConflict, IdstitchError
from idstitch.domain.ports import (
    AggregateRepository,
    AppendCheck,
    StaleKey,
    SuppressionMoved,
    WriteConflict,
)
from idstitch.projections.store import LoggedEvent
from idstitch.service.batch import Batch, BatchResult, Message, Rejected

SHARED_BATCHES = 1_000
"""After a conflict, this many batches in a row keep a copy of their aggregates (see
:attr:`Writer.shared`)."""
DEVICE_CACHE_SIZE = 10_000
RETRIES = 5
CONTENDED_BATCHES = 20
"""After a conflict, this many batches in a row check for moved devices under the append lock
(each one that finds moved devices starts the count again); then optimistic again."""

def _unwatched(check: AppendCheck | None) -> AppendCheck | None:
    return check


class Writer:
    """Appends the batches of every unit of work of a workspace: the one commit algorithm,
    and the cache of aggregates between commits."""

    def __init__(self, log: AggregateRepository, retries: int = RETRIES, *,
                 forgets: Callable[[], int] | None = None,
                 guard: Callable[[object], None] | None = None) -> None:
        self.log = log
        self.guard = guard
        """Refuses a command that names a forgotten identifier: run again on a batch's
        commands when its append finds that another process forgot somebody."""
        self.watched: Callable[[AppendCheck | None], AppendCheck | None] = _unwatched
        """A commit's check as the unit of work built it (None: none) -> the check its
        append passes, which also reads the forgets' mark where identifiers can be
        forgotten (see :meth:`~idstitch.service.commit_check.PolicyCheck.watching`)."""
        self.retries = retries
        """How many times a message runs before ConcurrencyConflict reaches the caller."""
        self._forgets = forgets
        """The count of forgets by other processes this process has seen (the cipher keeps
        it): when it moves, the cached aggregates are dropped (see :meth:`take`)."""
        self._forgets_seen = 0
        self.lock = threading.RLock()
        self.contended = 0
        """Batches still to write under the append lock since the last conflict."""
        self.shared = 0
        """Batches still to keep copies of their aggregates for (see :attr:`Batch.before`):
        set on every conflict and kept far longer than :attr:`contended`, since a batch
        taken without copies reloads whole histories when it meets another writer."""
        self._cache: OrderedDict[str, Aggregate] = OrderedDict()

    def take(self, streams: Iterable[str]) -> dict[str, Aggregate]:
        """These aggregates, for a unit of work to run commands on: from the cache (taken out
        of it until its commit), the rest from their events (one query), new ones empty."""
        with self.lock:
            seen = self._forgets_seen if self._forgets is None else self._forgets()
            if seen != self._forgets_seen:
                # Another process forgot somebody: a cached device of that person would
                # write under its stint's destroyed key (what it records would read erased);
                # loaded from the log, it starts a stint under a new key.
                self._forgets_seen = seen
                self._cache.clear()
            taken: dict[str, Aggregate] = {}
            missing: list[str] = []
            cache = self._cache
            for stream in streams:
                cached = cache.pop(stream, None)
                if cached is not None:
                    taken[stream] = cached
                else:
                    missing.append(stream)
            if self.contended and taken:
                # Another writer shares these: the cached ones take what it appended since (a
                # few events each) before they decide, rather than fail the append first.
                self.log.refresh(taken.values())
            if missing:
                taken.update(self.log.load_many(missing))
            return taken

    def reload(self, batch: Batch, streams: set[str]) -> set[str]:
        """Load these aggregates of a batch again from the log (with every aggregate that
        shares a message with one of them) and run their messages again; the streams
        reloaded. Also how a message that failed midway is undone: its aggregates reloaded,
        the batch's messages before it run again on them."""
        while True:
            stale = _closure(batch.messages, set(streams))
            before = batch.before
            # From the copies kept when they joined, with only what other writers appended
            # since, instead of each device's whole history (decoded and unsealed: a third
            # of a contended writer's time on PostgreSQL).
            copied = {s: before[s].copy() for s in stale if s in before}
            if copied:
                self.log.refresh(copied.values())
                batch.add(copied)
            if len(copied) < len(stale):
                # The rest from their histories, and copies of them as loaded: a batch that
                # meets the other writer again (its check under the append lock, after a
                # first conflict) then reads only what was appended since.
                batch.add(self.log.load_many(stale - copied.keys()), copies=True)
            try:
                batch.rerun(stale)
            except Rejected:
                continue
            return stale

    def commit(self, batch: Batch, *, keep: bool,
               check: AppendCheck | None = None) -> BatchResult:
        """Append a batch's events; the cache takes its aggregates back. When other writers
        kept moving its aggregates for every one of :attr:`retries` attempts, each message is
        written on its own (retried as often); a message that still loses is rejected with
        ConcurrencyConflict, nothing of it written. ``keep``: return the appended events with
        their positions (for a catch-up here). ``check``: passed before the batch's appends
        (see AppendCheck); when it refuses, nothing is appended."""
        count = len(batch.messages)
        result = self._write(batch, keep=keep, count=count, check=check)
        if result is not None:
            return result
        rejected = list(batch.rejected)
        messages = batch.messages
        if len(messages) == 1:
            return BatchResult([], 0, 0, 0, count, [*rejected, (messages[0].index, self._lost(
                messages[0]))])
        appended: list[LoggedEvent] = []
        accepted = duplicates = recorded = last = 0
        for message in messages:
            one = Batch()
            one.messages = [message]
            message.start = 0
            self.reload(one, {s[0] for s in message.steps})
            # The check passed on the whole batch (else it raised): a refusal now, after
            # some messages were appended, would leave the caller unable to tell which.
            written = self._write(one, keep=keep, count=1)
            if written is None:
                rejected.append((message.index, self._lost(message)))
                continue
            appended += written.appended
            accepted += written.accepted
            duplicates += written.duplicates
            recorded += written.recorded
            rejected += written.rejected
            last = max(last, written.last)
        return BatchResult(appended, accepted, duplicates, recorded, count, rejected, last)

    def _lost(self, message: Message) -> ConcurrencyConflict:
        return ConcurrencyConflict(f"device {message.steps[0][0]!r}: other writers kept "
                                   f"winning ({self.retries} attempts)")

    def _write(self, batch: Batch, *, keep: bool, count: int,
               check: AppendCheck | None = None) -> BatchResult | None:
        """The batch's events appended in one transaction; None when other writers kept
        moving its aggregates for every one of :attr:`retries` attempts (nothing written).

        Optimistic while no other writer is seen: the append fails as a whole if another
        writer moved one of its aggregates; then only the messages of the aggregates that
        moved run again, on those reloaded. Once a conflict was seen (``contended``), the next
        batches check instead, holding the store's append lock: which aggregates moved since
        they were loaded, reload and rerun those, then append, all before any other writer can
        append again. A contended batch then never fails (a refused append costs the whole
        batch's insert, and with devices shared, the other writer moved some device again
        during most retries: batches ran out of retries; and a single command that lost once
        cannot lose again, issue 16 item 12).

        A batch that records nothing (duplicates, unchanged or dropped attributes) decided on
        what its aggregates say; only an append would notice they were stale. So, on cached
        aggregates, that outcome is trusted only once their stored versions are checked: the
        moved ones are reloaded and decide again."""
        with self.lock:
            for attempt in range(self.retries):
                if (not batch.events and attempt == 0 and not self.contended
                        and self._refresh(batch, conflicted=False)):
                    continue
                try:
                    if self.contended:
                        with self.log.exclusive(check) as write:
                            stale = self._refresh(batch, conflicted=False)
                            events = batch.events
                            positions = write(events) if events else []
                        self.contended = CONTENDED_BATCHES if stale else self.contended - 1
                        if stale:
                            self.shared = SHARED_BATCHES
                    else:
                        events = batch.events
                        positions = self.log.write(events, check)
                except SuppressionMoved as moved:
                    self._refuse_suppressed(batch, stale=isinstance(moved, StaleKey))
                    continue
                except WriteConflict:
                    self.contended = CONTENDED_BATCHES
                    self.shared = SHARED_BATCHES
                    self._refresh(batch, conflicted=True)
                    continue
                if self.shared:
                    self.shared -= 1
                for aggregate in batch.aggregates.values():
                    aggregate.collect_events()  # its own pending list again
                    self._keep(aggregate)
                duplicates = sum(1 for m in batch.messages if m.duplicate)
                appended = ([LoggedEvent(p, r.event) for p, r in zip(positions, events, strict=True)]
                            if keep else [])
                return BatchResult(appended, len(batch.messages) - duplicates, duplicates,
                                   len(positions), count, batch.rejected,
                                   positions[-1] if positions else 0)
            return None

    def _refuse_suppressed(self, batch: Batch, *, stale: bool = False) -> None:
        """Another process forgot somebody since the batch's commands were checked: reject
        the messages naming a forgotten identifier (their aggregates reloaded, the others'
        messages on them run again), as ingest rejects them when it reads them. When the
        suppressed identifiers were new to this process, or a device would have recorded under
        a destroyed key (``stale``: the cipher refused to seal), every aggregate of the batch
        is loaded again from the log, as :meth:`take` does after a forget: a cached device of
        the forgotten person would record under its stint's destroyed key."""
        reloaded: set[str] = set()
        seen = self._forgets_seen if self._forgets is None else self._forgets()
        if seen != self._forgets_seen or stale:
            self._forgets_seen = seen
            self._cache.clear()
            batch.before.clear()
            reloaded = set(batch.aggregates)
        guard = self.guard
        if guard is not None:
            for message in batch.messages:
                if message.duplicate:
                    continue
                try:
                    for _, command, _ in message.steps:
                        guard(command)
                except IdstitchError:
                    reloaded.update(step[0] for step in message.steps)
        if reloaded:
            batch.guard = guard
            self.reload(batch, reloaded)

    def _refresh(self, batch: Batch, *, conflicted: bool) -> set[str]:
        """Reload the aggregates another writer moved since they were loaded (and those
        sharing a message with one of them), and run their messages again; the set reloaded.
        ``conflicted``: an append was refused, so if none looks moved, reload them all (cannot
        tell which)."""
        base = batch.base
        stored = self.log.versions(batch.aggregates)
        stale = {d for d in batch.aggregates if stored.get(d, 0) != base[d]}
        if not stale and conflicted:
            stale = set(batch.aggregates)
        return self.reload(batch, stale) if stale else stale

    def _keep(self, aggregate: Aggregate) -> None:
        self._cache[aggregate.device_id] = aggregate
        if len(self._cache) > DEVICE_CACHE_SIZE:
            self._cache.popitem(last=False)

    def drop_cache(self) -> None:
        """Forget every cached aggregate: the next command loads its device from the log
        (after a forget, whose destroyed keys a cached device would still try to write under)."""
        with self.lock:
            self._cache.clear()


def _closure(messages: list[Message], stale: set[str]) -> set[str]:
    """``stale`` and every aggregate that shares a message with one of them (a message runs
    whole or not at all), until nothing is added."""
    grown = True
    while grown:
        grown = False
        for message in messages:
            ids = {s[0] for s in message.steps}
            if len(ids) > 1 and ids & stale and not ids <= stale:
                stale |= ids
                grown = True
    return stale
