"""The in-process store's log: the FastLog port over eventsourcing's in-memory recorder.

With this, the device log has one implementation of every operation (appends, selected reads,
device loads) on every store; the memory store differs only in where the rows live. The rows
are the recorder's own list (a position is an index plus one) and its per-aggregate index, so
eventsourcing's repository still loads what this appends. Selected reads use a per-topic list
of positions kept here: a catch-up that resumes behind the head (a projection whose events
were not touched lately) finds its few events by bisection instead of scanning every event
since, which made each command slower the longer the workspace lived.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from heapq import merge
from itertools import islice
from operator import itemgetter
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
from idstitch.adapters.chain import GENESIS, ChainedLog, Entry, Run, StoredRow, link
from idstitch.domain.events import DeviceEvent
from idstitch.domain.ports import AppendCheck


class MemoryLog:
    """FastLog over a :class:`POPOApplicationRecorder` (see :mod:`idstitch.adapters.eventlog`)."""

    def __init__(self, recorder: POPOApplicationRecorder) -> None:
        self._recorder = recorder
        self._stored: list[StoredEvent] = recorder._stored_events
        self._index: dict[str, dict[int, int]] = recorder._stored_events_index
        # Positions (ascending) of each topic's events, and of every aggregate's first event.
        self._by_topic: dict[str, list[int]] = {}
        self._firsts: list[int] = []
        # The append lock: held across an exclusive block, like a SQL store's write lock.
        self._lock = threading.RLock()
        # The hash chain's entries, (position, hash) in position order: kept beside the
        # recorder's rows as the SQL stores keep them beside their events table.
        self._chain: list[Entry] = []

    def append_events(self, rows: list[tuple[str, int, str, bytes]],
                      check: AppendCheck | None = None,
                      events: Sequence[DeviceEvent] | None = None) -> list[int]:
        """Append (originator_id hex, version, topic, state) rows, all or nothing; positions.
        ``check`` runs first, under the append lock. (``events`` is not used: the rows of the
        projections are kept apart from this list, and folded after the append.)

        Raises eventsourcing's IntegrityError (the device log translates it) when a
        (originator_id, version) is taken."""
        with self._lock:
            if check is not None:
                check.run()
            stored = [StoredEvent(originator_id=UUID(hex=a), originator_version=v, topic=t,
                                  state=s) for a, v, t, s in rows]
            positions = list(self._recorder.insert_events(stored) or [])
            self._chain.extend(zip(positions, link(self._chain[-1][1] if self._chain
                                                   else GENESIS, positions, rows),
                                   strict=True))
            for (_, version, topic, _), position in zip(rows, positions, strict=True):
                self._by_topic.setdefault(topic, []).append(position)
                if version == 1:
                    self._firsts.append(position)
            return positions

    @contextmanager
    def exclusive(self, check: AppendCheck | None = None
                  ) -> Iterator[Callable[[list[tuple[str, int, str, bytes]]], list[int]]]:
        """Hold the append lock until the block ends (``check`` runs first, under it). Rows
        appended inside are visible at once (one process: nobody can read a half-committed
        block but the block itself)."""
        with self._lock:
            if check is not None:
                check.run()
            yield self.append_events

    def read_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(position, state) of events after a position, in order."""
        after = max(after, 0)
        return [(after + i + 1, e.state)
                for i, e in enumerate(self._stored[after : after + limit])]

    def read_selected(
        self, after: int, until: int, limit: int, topics: list[str], first: bool
    ) -> list[tuple[int, bytes]]:
        """(position, state) of the events with these topics (with ``first``, also of every
        aggregate's first event) in ``after < position <= until``, in order."""
        lists = [self._by_topic.get(t, []) for t in topics]
        if first:
            lists.append(self._firsts)
        runs = [islice(p, bisect_right(p, after), bisect_right(p, until)) for p in lists]
        out: list[tuple[int, bytes]] = []
        last = -1
        for position in merge(*runs):
            if position != last:  # a first event can also be of a wanted topic
                out.append((position, self._stored[position - 1].state))
                last = position
                if len(out) == limit:
                    break
        return out

    def head(self) -> int:
        """The last position (0 when empty)."""
        return len(self._stored)

    def device_events(self, aggregate_ids: list[UUID]) -> list[tuple[int, bytes]]:
        """(version, state) of every event of these aggregates, by aggregate then version."""
        out: list[tuple[int, bytes]] = []
        for aggregate in sorted(aggregate_ids, key=lambda a: a.hex):
            versions = self._index.get(str(aggregate), {})
            out.extend((v, self._stored[i].state) for v, i in sorted(versions.items()))
        return out

    def device_versions(self, aggregate_ids: list[UUID]) -> dict[str, int]:
        """The last version of each of these aggregates that has events, by UUID hex."""
        out: dict[str, int] = {}
        for aggregate in aggregate_ids:
            versions = self._index.get(str(aggregate))
            if versions:
                out[aggregate.hex] = max(versions)
        return out

    def read_spans(
        self, spans: list[tuple[str, int, int]], topics: list[str] | None
    ) -> list[tuple[int, bytes]]:
        """(position, state) of the events of each (aggregate hex, start, end) span with
        ``start <= position < end`` (of these topics, or all), in no particular order."""
        wanted = None if topics is None else set(topics)
        out: list[tuple[int, bytes]] = []
        for aggregate, start, end in spans:
            for i in self._index.get(str(UUID(hex=aggregate)), {}).values():
                event = self._stored[i]
                if start <= i + 1 < end and (wanted is None or event.topic in wanted):
                    out.append((i + 1, event.state))
        return out

    def events_after(self, since: list[tuple[UUID, int]]) -> list[tuple[int, bytes]]:
        """(version, state) of each aggregate's events after the version given with it."""
        out: list[tuple[int, bytes]] = []
        for aggregate, after in sorted(since, key=lambda s: s[0].hex):
            versions = self._index.get(str(aggregate), {})
            out.extend((v, self._stored[i].state) for v, i in sorted(versions.items())
                       if v > after)
        return out

    # The hash chain (idstitch.adapters.chain): the log itself is the view, under its lock.

    @contextmanager
    def chain_view(self) -> Iterator[ChainedLog]:
        """The events and the chain as they stand, no append in between."""
        with self._lock:
            yield self

    def stored_rows(self, after: int, limit: int) -> list[StoredRow]:
        """Up to ``limit`` event rows after a position, in position order."""
        after = max(after, 0)
        return [(i, _hex(e.originator_id), e.originator_version, e.topic, e.state)
                for i, e in enumerate(self._stored[after : after + limit], after + 1)]

    def chain_runs(self, after: int, until: int) -> list[Run]:
        """The chain entries with ``after < position <= until`` (each a run of one)."""
        key = itemgetter(0)
        return self._chain[bisect_right(self._chain, after, key=key):
                           bisect_right(self._chain, until, key=key)]

    def chain_after(self, after: int) -> int | None:
        """The first chain entry's position after a position."""
        i = bisect_right(self._chain, after, key=itemgetter(0))
        return self._chain[i][0] if i < len(self._chain) else None

    def chain_tail(self) -> Entry:
        """The last chain entry; (0, GENESIS) when there is none."""
        return self._chain[-1] if self._chain else (0, GENESIS)

    def chain_start(self) -> int:
        """Always 1: a memory store is chained from its first event."""
        return 1


def _hex(originator_id: UUID | str) -> str:
    """An originator id as the chain hashes it: 32 lower-case hex digits."""
    return originator_id.hex if isinstance(originator_id, UUID) else UUID(originator_id).hex


__all__ = ["MemoryLog"]
