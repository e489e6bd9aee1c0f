"""How a custom projection's batch is folded in one transaction: read, built and handled a
chunk of positions at a time, with its tracking moved at the end; under a time budget (where
the transaction holds the database's write lock: SQLite), ended early at a chunk's end. A part
of the :class:`~idstitch.projections.custom_runner.CustomRunner`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from idstitch.domain.errors import ProjectionFailed
from idstitch.projections.audit import EVENT_NAMES, Change
from idstitch.projections.changes import ChangeStream, RowsBehind
from idstitch.projections.custom import (
    CustomTables,
    Projection,
    Untracked,
    failed,
    moved,
)
from idstitch.projections.custom_made import MadeAfter
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore
from idstitch.projections.unit import RowTypes

BATCH = 5_000
"""Log positions per transaction at most."""
CHUNK = 250
"""Log positions a projection alone at its position reads and folds at a time, inside its
batch's transaction (see :meth:`Batches._fold_alone`)."""
FIRST_CHUNK = 16
"""Under a time budget, a projection's first chunk (its handlers' speed not known yet)."""
HANDOVER_SECONDS = 0.01
"""The pause after a batch ended early for the writers waiting (see _fold_alone)."""
STREAMS = 4
"""Change streams kept (one per distinct position the projections were at)."""


class Batches:
    """The batch folds of the :class:`~idstitch.projections.custom_runner.CustomRunner`."""

    tables: CustomTables
    pages: Callable[[int, int], Sequence[LoggedEvent]]
    _log: EventLog
    _store: ProjectionStore
    _row_types: RowTypes
    _made: MadeAfter
    _streams: dict[int, ChangeStream]
    _chunks: dict[str, int]

    def _failures(self, names: Sequence[str], position: int, cause: Exception
                  ) -> list[ProjectionFailed]:
        """The failures of these projections (the runner's: OthersAtWork)."""
        raise NotImplementedError

    def _fold_alone(self, projection: Projection, start: int, until: int
                    ) -> tuple[int, ProjectionFailed | None]:
        """Fold the next batch of one projection (no other at its position shares the
        Changes) in one transaction, reading, building and handling a chunk of the batch at a
        time: the position reached (``start``: nothing to fold), and the failure if any.

        The Changes of a chunk are handled (by ``handle``) and dropped before the next chunk
        is read, so that they (and their events) die young: a whole batch's objects outlived
        the garbage collector's young generations and made it traverse the whole heap again
        and again (a third of a catch-up's CPU on a 1M-event log; the collector is paused
        during a catch-up now, and a chunk's objects are what it holds at a time). A failure,
        building or handling, rolls the whole batch back with its tracking, as a handler's
        always did."""
        wanted = projection.events
        per_change = type(projection).handle_batch is Projection.handle_batch
        handle = projection.handle
        stream = self._streams.pop(start, None)
        current, end, read = start + 1, start, 0
        batch: list[Change] = []
        # Where the transaction holds the database's write lock (SQLite), slow handlers end
        # it early: writers wait for it (a batch of 5,000 Changes at 8 ms each held them past
        # their 30 s limit). At a chunk's end, so that the Change stream stays where the
        # batch ends; chunks shrink for handlers slow enough to need it (see _chunk_after).
        budget = getattr(self.tables, "write_budget", None)
        started = time.monotonic()  # (set again once the transaction is open)
        chunk = self._chunks.get(projection.name, FIRST_CHUNK) if budget is not None else CHUNK
        cut = False
        try:
            with self.tables.transaction(projection.name, projection.version) as tx:
                if moved(projection, tx.position, start):
                    return tx.position, None  # another process folded it meanwhile
                self._made.vouch(projection.name, tx)
                db = tx.db
                started = time.monotonic()  # the fold's own time, not the wait for the lock
                while read < BATCH and end < until:
                    events = self.pages(end, min(chunk, BATCH - read))
                    if events and events[-1].position > until:
                        events = [e for e in events if e.position <= until]
                    if not events:
                        break
                    current = events[0].position
                    if wanted is None or any(EVENT_NAMES[type(e.event)] in wanted
                                             for e in events):
                        if stream is None:
                            stream = ChangeStream(self._log, self._store, self._row_types, end,
                                                 until - end)
                        mine = stream.changes(events, wanted)
                        if per_change:
                            for change in mine:
                                current = change.position
                                handle(db, change)
                        else:
                            batch.extend(mine)
                    else:
                        stream = None  # it would miss these events: a later one starts cold
                    end = events[-1].position
                    read += len(events)
                    if budget is not None and per_change and (
                            time.monotonic() - started > budget):
                        cut = True
                        break
                if batch:
                    # The batch hook gets the Changes of its transaction in one call, as
                    # documented (only a per-Change fold lets them go chunk by chunk).
                    current = batch[0].position
                    projection.handle_batch(tx.db, batch)
                if end > start:
                    tx.advance(end)
        except (RowsBehind, Untracked) as e:  # not the handler's doing (the stream dropped)
            return start, next(iter(self._failures([projection.name], current, e)), None)
        except Exception as e:
            return start, failed(projection.name, current, e)  # the stream is dropped
        if budget is not None and per_change:
            self._chunks[projection.name] = chunk_after(budget, time.monotonic() - started,
                                                         read)
        if cut:
            # A writer queued for the file is woken as the lock is released; the next batch
            # taking it back at once would often win the race (kernel wake-ups are not FIFO).
            time.sleep(HANDOVER_SECONDS)
        if stream is not None:
            self._keep(stream)
        return end, None

    def _keep(self, stream: ChangeStream) -> None:
        """Keep a stream under its position (for the next batch of the projections there)."""
        if len(self._streams) >= STREAMS:
            self._streams.clear()
        self._streams[stream.at] = stream

    def _changes(self, start: int, events: Sequence[LoggedEvent],
                 wanted: frozenset[str] | None, until: int) -> list[Change]:
        """The Changes of a batch (of the ``wanted`` events) from the stream at ``start`` (a
        new one if none is there); the stream is then kept under its new position. A stream
        that failed is dropped (its states may be half-advanced)."""
        stream = self._streams.pop(start, None)
        if stream is None:
            stream = ChangeStream(self._log, self._store, self._row_types, start, until - start)
        out = stream.changes(events, wanted)
        self._keep(stream)
        return out

    def _commit(self, projection: Projection, start: int, end: int,
                changes: Sequence[Change]) -> tuple[int, ProjectionFailed | None]:
        """Fold a batch in one transaction: the position reached, and the failure if any."""
        wanted = projection.events
        mine = [c for c in changes if wanted is None or c.event in wanted]
        current = start + 1
        try:
            with self.tables.transaction(projection.name, projection.version) as tx:
                if moved(projection, tx.position, start):
                    # Another process folded it meanwhile: go on from where it is.
                    return tx.position, None
                self._made.vouch(projection.name, tx)
                if mine:
                    if type(projection).handle_batch is Projection.handle_batch:
                        handle = projection.handle
                        for change in mine:
                            current = change.position
                            handle(tx.db, change)
                    else:
                        current = mine[0].position
                        projection.handle_batch(tx.db, mine)
                tx.advance(end)
        except Untracked as e:
            return start, next(iter(self._failures([projection.name], current, e)), None)
        except Exception as e:
            return start, failed(projection.name, current, e)
        return end, None


def chunk_after(budget: float, spent: float, read: int) -> int:
    """The chunk for a projection's next batch under a time budget: a quarter of the budget's
    worth of positions at the rate of the batch just folded (at most :data:`CHUNK`, at least
    1), so that a batch ends within about a chunk of its budget, at a chunk's end."""
    if read == 0 or spent <= 0:
        return CHUNK
    return max(1, min(CHUNK, int(budget / 4 / (spent / read))))


__all__ = ["BATCH", "CHUNK", "Batches", "chunk_after"]
