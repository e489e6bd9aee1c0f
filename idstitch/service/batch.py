"""A batch of messages run on their aggregates, not yet appended (:class:`Batch`), and what its
commit did (:class:`BatchResult`): what the :class:`~idstitch.service.writer.Writer` appends,
and runs again in part when another writer got to one of its aggregates first
(:meth:`Batch.rerun`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

import msgspec

from idstitch.domain.aggregates import Aggregate
from idstitch.domain.commands import Decision, DeviceCommand
from idstitch.domain.device import Recorded
from idstitch.domain.errors import IdstitchError, StoreError
from idstitch.projections.store import LoggedEvent

Step = tuple[str, DeviceCommand | Decision, datetime]
"""Which aggregate (its stream) took which checked command, at what recorded time."""


class Message(msgspec.Struct):
    """One message of a batch (a Struct, whose constructor is C: one is made per message)."""

    index: int
    """Its input's index."""
    steps: list[Step]
    """Each command as its aggregate took it (a duplicate: its first command, not run)."""
    start: int
    """The offset of its first event in the batch's events."""
    duplicate: bool
    """Its first command's message id was recorded already: counted, not run."""


class BatchResult(NamedTuple):
    """What a committed batch did."""

    appended: list[LoggedEvent]
    """The events with their positions (empty unless asked for)."""
    accepted: int
    duplicates: int
    recorded: int
    """How many events it appended."""
    messages: int
    """How many messages it wrote (accepted, duplicates, and those rejected at the commit)."""
    rejected: list[tuple[int, IdstitchError]]
    """The messages refused at the commit (nothing of them written): index and why."""
    last: int = 0
    """The position of the last event it appended (0: none)."""


class Batch:
    """Messages run on their aggregates, their events not yet appended."""

    def __init__(self) -> None:
        self.aggregates: dict[str, Aggregate] = {}
        self.base: dict[str, int] = {}
        """Each aggregate's stored version when it was loaded (or last appended to)."""
        self.events: list[Recorded] = []
        """Every event of the batch, in message order: each aggregate records into it."""
        self.messages: list[Message] = []
        self.rejected: list[tuple[int, IdstitchError]] = []
        self.before: dict[str, Aggregate] = {}
        """A copy of aggregates as they joined, kept while other writers share them: what
        :meth:`Writer.reload` decides again from (with the events appended to them since)."""
        self.guard: Callable[[object], None] | None = None
        """Checks each command a rerun runs again (set once another process forgot somebody:
        a message naming a forgotten identifier is then rejected)."""

    def add(self, aggregates: dict[str, Aggregate], *, copies: bool = False) -> None:
        """Aggregates join the batch: they record into its events from now on. ``copies``:
        keep a copy of each as it is now (see :attr:`before`)."""
        events, base = self.events, self.base
        for stream, aggregate in aggregates.items():
            aggregate.record_into(events)
            base[stream] = aggregate.version
        if copies:
            before = self.before
            for stream, aggregate in aggregates.items():
                if stream not in before:
                    before[stream] = aggregate.copy()
        self.aggregates.update(aggregates)

    def rerun(self, stale: set[str]) -> None:
        """Run again, in order, the messages that ran on the ``stale`` aggregates (just
        reloaded: see :meth:`Writer.reload`); the others keep the events they decided. A
        message an aggregate now refuses is rejected (and the run starts over without it)."""
        old, events = list(self.events), self.events
        events.clear()
        aggregates = self.aggregates
        messages = self.messages
        starts = [m.start for m in messages]
        ends = [*starts[1:], len(old)]
        position = 0
        try:
            for position, message in enumerate(messages):
                message.start = len(events)
                if message.duplicate or not any(s[0] in stale for s in message.steps):
                    events.extend(old[starts[position]:ends[position]])
                    continue
                first = message.steps[0]
                if aggregates[first[0]].is_duplicate(getattr(first[1], "message_id", None)):
                    message.duplicate = True
                    del message.steps[1:]
                    continue
                guard = self.guard
                for stream, command, now in message.steps:
                    if guard is not None:
                        guard(command)
                    aggregates[stream].handle(command, now)
        except StoreError:
            raise
        except IdstitchError as e:
            # Nothing of it may stay: the batch as it was, without the message and its events;
            # its aggregates (all stale: a message runs whole or not at all, see _closure)
            # are then reloaded and the run starts over.
            failed = messages.pop(position)
            # Without its traceback, whose frames hold this batch: no reference cycle.
            self.rejected.append((failed.index, e.with_traceback(None)))
            gone = ends[position] - starts[position]
            del old[starts[position]:ends[position]]
            del starts[position]
            for message, start in zip(messages, starts, strict=True):
                message.start = start
            for message in messages[position:]:
                message.start -= gone
            events[:] = old
            raise Rejected from e


class Rejected(Exception):
    """A rerun rejected a message: reload the stale aggregates and run again."""
