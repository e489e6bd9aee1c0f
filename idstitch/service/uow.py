"""The unit of work: a handler loads its aggregate from it, the aggregate decides, it commits.

A handler takes a checked command (:mod:`idstitch.service.checks`) and a :class:`UnitOfWork`:
``uow.devices.get(device_id).handle(cmd, uow.now)`` (or ``uow.decisions.get()`` for a
person-level decision) runs the command on its aggregate at once, which records its events.
The unit of work holds what its handlers loaded and decided, message by message (a public call
is one message, an ingest batch many), and commits it with the workspace's one commit algorithm
(:meth:`UnitOfWork.commit`, :mod:`idstitch.service.writer`): every event of the batch appended
in one transaction, in message order.

It records which aggregate took which command of each message. With that, a message that fails
midway (an aggregate refuses: ``NotIdentified``, a merge undone already) is undone whole
(:meth:`UnitOfWork.rollback`: its aggregates reloaded, the batch's earlier messages run again on
them; the rest of the batch is kept), and a conflict with another writer runs the messages of
the aggregates that moved again, on those reloaded. Every command of a message was checked
before any of its handlers runs, so a message refused by a check leaves nothing to undo.

What a handler reads about persons (a ``cio_`` id, the two sides of a merge, a merge to undo)
is a port of the unit of work, :attr:`UnitOfWork.persons`: it answers as the log stands after
every message before the current one. The unit of work commits its own earlier messages first
(an ingest batch's), catches the projections up with the projector it was built with, then
reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

import msgspec

from idstitch.domain.aggregates import Aggregate
from idstitch.domain.commands import Command, Decision, DeviceCommand
from idstitch.domain.errors import IdstitchError, PolicyMismatch, ProjectionsBehind, StoreError
from idstitch.domain.events import DECISIONS_STREAM
from idstitch.domain.ports import AppendCheck
from idstitch.projections.identity.rows import MergeRow, PersonRow
from idstitch.projections.store import LoggedEvent
from idstitch.projections.views import Profile
from idstitch.service.batch import Batch, BatchResult, Message, Step
from idstitch.service.writer import Writer

__all__ = ["Again", "BatchResult", "Loaded", "PersonReads", "Persons", "Projections", "UnitOfWork",
           "Writer", "stream_of"]


class PersonReads(Protocol):
    """The read models' answers a handler may need about persons (the queries give them)."""

    def person_row(self, person_id: str) -> PersonRow | None:
        """A person row by its id (not following merges)."""
        ...

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds now."""
        ...

    def named(self, identifier: str) -> str | None:
        """The id of the person an identifier names itself, not following merges."""
        ...

    def merge_row(self, merge_id: str) -> MergeRow | None:
        """A conversion, merge or switch record by its id."""
        ...


class CommitCheck(AppendCheck, Protocol):
    """The projections' check of a commit (an AppendCheck), and what it read."""

    tracked: dict[str, tuple[int, str | None]] | None
    """Every projection's committed (position, meta), once the check ran."""
    landed_at: int | None
    """The position up to which the projections' rows committed with the append, if they
    did (see ``AppendCheck.landed``)."""


class Projections(Protocol):
    """What a unit of work asks of the projector that keeps the workspace's projections."""

    def check(self, *, inline: bool = False) -> CommitCheck:
        """The check a commit's append passes first: it refuses (PolicyMismatch) rows built
        under another configuration, and keeps what each projection committed. ``inline``:
        it also has the events' rows written inside the append where the log can."""
        ...

    def catch_up(self, recent: Sequence[LoggedEvent] = (), *, wait: bool = True,
                 eager: bool = False,
                 tracked: Mapping[str, tuple[int, str | None]] | None = None) -> int:
        """Every projection up to the head of the log (``recent``: events just appended)."""
        ...


def stream_of(command: Command) -> str:
    """The stream of the aggregate that takes a command: its device, or the decisions."""
    device_id: str = getattr(command, "device_id", DECISIONS_STREAM)
    return device_id


class Again(Exception):
    """The current message must run again from its start (its earlier messages were committed
    under it to answer a read about persons, and its aggregates reloaded)."""


class Loaded(msgspec.Struct):
    """An aggregate as a handler gets it from the unit of work: :meth:`handle` runs a command
    on it, and the unit of work records that it did (to run it again on the aggregate
    reloaded, after a conflict or a failure of the same batch). A Struct, whose constructor
    is C: one is made per command."""

    uow: UnitOfWork
    stream: str
    aggregate: Aggregate

    def handle(self, command: DeviceCommand | Decision, now: datetime) -> bool:
        """Run a checked command on the aggregate (``now``: its events' recorded time);
        whether it recorded anything."""
        # Recorded first: a command the aggregate refuses still names what must be undone.
        self.uow.steps.append((self.stream, command, now))
        return self.aggregate.handle(command, now)


class Devices:
    """The devices of a unit of work (the repository a handler loads a device from)."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    def get(self, device_id: str) -> Loaded:
        """The device (new, version 0, if it has no events yet)."""
        uow = self._uow
        # The batch's own first (a call less per command: this runs for each of them).
        held = uow.batch.aggregates.get(device_id)
        return Loaded(uow, device_id, uow.aggregate(device_id) if held is None else held)


class DecisionsStream:
    """The workspace's decisions, as a unit of work holds them."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    def get(self) -> Loaded:
        """The decisions aggregate (one per workspace)."""
        return Loaded(self._uow, DECISIONS_STREAM, self._uow.aggregate(DECISIONS_STREAM))


class Persons:
    """The port through which a handler reads about persons: every answer is as the log
    stands after every message before the current one (the unit of work commits its earlier
    messages and catches the projections up first)."""

    def __init__(self, uow: UnitOfWork, reads: PersonReads) -> None:
        self._uow = uow
        self._reads = reads

    def row(self, person_id: str) -> PersonRow | None:
        """A person row by its id (not following merges)."""
        self._uow.settle()
        return self._reads.person_row(person_id)

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds."""
        self._uow.settle()
        return self._reads.profile(identifier)

    def merge(self, merge_id: str) -> MergeRow | None:
        """A conversion, merge or switch record by its id."""
        self._uow.settle()
        return self._reads.merge_row(merge_id)

    def named(self, identifier: str) -> str | None:
        """The id of the person an identifier names itself (the owner of a user id or an
        email, the person of a ``cio_`` or person id), not following merges."""
        self._uow.settle()
        return self._reads.named(identifier)


class UnitOfWork:
    """One message (a public call) or a batch of them (ingest): the aggregates its handlers
    loaded, what they decided, and its commit."""

    def __init__(self, writer: Writer, reads: PersonReads, projections: Projections | None,
                 now: datetime, elsewhere: Callable[[], object] | None = None) -> None:
        self.writer = writer
        self.projections = projections
        """The projector, when the workspace keeps its projections current (else None)."""
        self.elsewhere = elsewhere
        """Without ``projections``: how a read about persons gets the projections to the
        head of the log all the same (the process that keeps them waited for, or a catch-up
        here): a check against rows behind the log refuses what it should accept (an unmerge
        of a merge just recorded) or misses what it must see (a forget)."""
        self._behind: ProjectionsBehind | None = None
        self.now = now
        """The recorded time of the current message's events."""
        self.devices = Devices(self)
        self.decisions = DecisionsStream(self)
        self.persons = Persons(self, reads)
        self.batch = Batch()
        self.keep = True
        """Whether a commit keeps its events (with positions) in :attr:`appended`."""
        self.appended: list[LoggedEvent] = []
        """Events committed and kept, not yet projected: a catch-up here applies them."""
        self.results: list[BatchResult] = []
        """What each commit did (ingest reads and clears them)."""
        self.tracked: dict[str, tuple[int, str | None]] | None = None
        """What the projections had committed before the last commit (for its catch-up)."""
        self.inline = False
        """A single command's unit of work: its commit has the projections' rows of its
        events written inside the append where the log can (one commit instead of two)."""
        self.landed: int | None = None
        """The position up to which the last commit's rows landed with it (None: they did
        not; the catch-up after it folds them)."""
        self.steps: list[Step] = []
        """The current message's steps (what its handlers ran, on which aggregate)."""
        self._start = 0

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(self, *exc: object) -> None:
        """What was not committed is dropped (its aggregates are not given back to the
        writer's cache: the next unit of work loads them from the log)."""
        self.close()

    def close(self) -> None:
        """Let go of its repositories (each holds the unit of work: without this, the two make
        a reference cycle, which only the cyclic collector frees, and a bulk job pauses it)."""
        del self.devices, self.decisions, self.persons

    def aggregate(self, stream: str) -> Aggregate:
        """The aggregate of a stream, as this unit of work holds it (taken from the writer's
        cache, or loaded, the first time)."""
        aggregate = self.batch.aggregates.get(stream)
        if aggregate is None:
            taken = self.writer.take((stream,))
            self.batch.add(taken, copies=self.writer.shared > 0)
            aggregate = taken[stream]
        return aggregate

    def load(self, streams: Iterable[str]) -> None:
        """Take these aggregates at once (ingest, before a batch's handlers: one query for
        every aggregate the cache does not hold)."""
        held = self.batch.aggregates
        missing = [s for s in streams if s not in held]
        if missing:
            self.batch.add(self.writer.take(missing), copies=self.writer.shared > 0)

    def run(self, index: int, commands: Sequence[Command],
            handlers: Mapping[type[Any], Callable[[Any, UnitOfWork], None]]) -> bool:
        """Run a checked message's handlers (``index``: its input's): whole, or nothing of it
        stays (a handler's refusal is raised, after :meth:`rollback`). False: a duplicate (the
        message id of its first command was recorded already), counted at the commit, not
        run. A refusal made on aggregates another writer had moved runs the message once more,
        on them reloaded; a store failure is raised as it is."""
        first = commands[0]
        stream: str = getattr(first, "device_id", DECISIONS_STREAM)  # (stream_of, inlined)
        message_id = getattr(first, "message_id", None)
        retried = False
        while True:
            batch = self.batch
            self._start = start = len(batch.events)
            steps: list[Step] = []
            self.steps = steps
            aggregate = batch.aggregates.get(stream)
            if aggregate is None:
                aggregate = self.aggregate(stream)
            if aggregate.is_duplicate(message_id):
                batch.messages.append(Message(index, [(stream, first, self.now)], start, True))
                return False
            try:
                for command in commands:
                    handlers[type(command)](command, self)
            except Again:
                continue  # rolled back already; its earlier messages are committed
            except StoreError:
                raise
            except IdstitchError:
                if self.rollback() and not retried:
                    retried = True
                    continue
                raise
            # It ran whole: it joins the batch (which a read about persons may have renewed).
            self.batch.messages.append(Message(index, steps, self._start, False))
            self.steps = []
            return True

    def rollback(self) -> bool:
        """Nothing of the current message stays (a handler refused it): its events dropped,
        its aggregates reloaded, the batch's earlier messages run again on them. Whether one
        of them had been moved by another writer (the refusal may be stale: worth one more
        run on them reloaded)."""
        batch = self.batch
        touched = {s[0] for s in self.steps}
        self.steps = []
        del batch.events[self._start:]
        if not touched:
            return False
        with self.writer.lock:
            stored = self.writer.log.versions(touched)
            moved = any(stored.get(s, 0) != batch.base[s] for s in touched)
            self.writer.reload(batch, touched)
        return moved

    def settle(self) -> None:
        """Make the log and the projections hold every message before the current one."""
        if self.batch.messages:
            if self.steps:
                # The current message ran commands already: undone, to run again once its
                # earlier messages are committed (their aggregates may be reloaded).
                self.rollback()
                self.commit()
                raise Again
            self.commit()
        if self.projections is not None:
            self.projections.catch_up(self.appended)
            self.appended.clear()
        elif self.elsewhere is not None:
            if self._behind is not None:
                # Waited for once in this unit of work (an ingest) and in vain: its later
                # reads are refused at once, not after another wait each.
                raise ProjectionsBehind(self._behind.position, self._behind.reached,
                                        self._behind.lagging, self._behind.waited)
            try:
                self.elsewhere()
            except ProjectionsBehind as e:
                self._behind = e
                raise

    def commit(self) -> BatchResult | None:
        """Append every message run since the last commit, in one transaction (see
        :meth:`Writer.commit`); what it did (also added to :attr:`results`), or None when
        there was no message. PolicyMismatch, before anything is appended, when the
        workspace keeps its projections and another process rebuilt them differently."""
        batch = self.batch
        if not batch.messages:
            return None
        # (The writer adds the forgets' mark to the check: the same object, or a new one.)
        check = cast(CommitCheck | None, self.writer.watched(
            None if self.projections is None else self.projections.check(inline=self.inline)))
        start = self._start
        self.batch = Batch()
        self._start = 0  # a message under way (with no step yet) starts the next batch
        try:
            result = self.writer.commit(batch, keep=self.keep, check=check)
        except PolicyMismatch:
            # The check refused the append (nothing was appended): the batch is still this
            # unit of work's, as when the check ran before it (an ingest whose person-reading
            # message committed the batch before it must not lose those messages).
            self.batch, self._start = batch, start
            raise
        self.tracked = None if check is None else check.tracked
        self.landed = None if check is None else check.landed_at
        if self.keep and self.landed is None:  # (landed: projected already)
            self.appended += result.appended
        self.results.append(result)
        return result
