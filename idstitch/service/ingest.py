"""Bulk ingest of Segment-spec messages: batches, a shared clock, and a second process.

Each message is decoded and mapped to commands (:mod:`idstitch.adapters.segment`), and each
command validated by its handler, before any of the message runs, so a rejected message leaves
nothing behind; it is reported with its index and reason and the rest go on. Validated messages
are committed a batch at a time (one transaction; events in message order), so a batch gives
what one call per message would, except that messages arriving within CLOCK_SHARE_SECONDS of
each other share one clock reading. The input is streamed: only one batch is held at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, NamedTuple

from idstitch.domain.commands import Command
from idstitch.domain.errors import ConcurrencyConflict, IdstitchError, InvalidCommand
from idstitch.projections.store import LoggedEvent
from idstitch.service import background
from idstitch.service.handlers import HANDLERS
from idstitch.service.projecting import Projector, bulk_gc
from idstitch.service.queries import Queries
from idstitch.service.settings import Settings
from idstitch.service.uow import Moment, Persons, Step, UnitOfWork, Writer

CLOCK_SHARE_SECONDS = 0.05
"""During ingest, messages that arrive within this long of a clock reading share it."""
INGEST_BATCH = 5000
"""Messages per ingest transaction by default. On SQLite each commit syncs, and rewrites the
index pages of the devices it touched (random ids): 1000-message batches spent ~1 s of a
100k-message ingest in commits, 5000-message ones ~0.4 s."""
CATCH_UP_EVENTS = 50_000
"""During ingest, the projections catch up after about this many events (and at the end)."""


@dataclass
class IngestReport:
    """What a bulk ingest did: counts, and each rejected message's index and reason.

    Counts and indexes are of messages: the messages of a batch envelope are counted (and
    numbered) one by one, as if each were a line of its own, so a rejected index is the
    message's position in the flattened input (0-based). An envelope that cannot be read whole
    (``batch`` not a list, a bad ``sentAt``) is one rejected message. Blank and whitespace-only
    lines are no messages: they take no index and are counted in ``blank`` only, so
    ``accepted + duplicates + ignored + len(rejected)`` is the number of messages read."""

    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    blank: int = 0
    """Blank or whitespace-only lines skipped."""


class IngestInterrupted(IdstitchError):
    """The ``progress`` callback raised, after its batch was committed: the ingest stopped there.

    ``report`` is what the ingest did up to and including that batch: each message before the
    interruption is counted once, as accepted, a duplicate, ignored or rejected (so their sum is
    the index of the first message it did not settle: resume from there), and every message it
    counts as accepted is recorded. The callback's exception is the ``__cause__``."""

    def __init__(self, report: IngestReport) -> None:
        self.report = report
        settled = report.accepted + report.duplicates + report.ignored + len(report.rejected)
        super().__init__(f"the progress callback raised: ingest stopped after {settled} messages "
                         f"({report.accepted} accepted, {report.duplicates} duplicates, "
                         f"{report.ignored} ignored, {len(report.rejected)} rejected)")


class _ProgressRaised(Exception):
    """Carries the callback's exception out of the run (not an IdstitchError: the run must not
    take it for one message's rejection)."""


Message = dict[str, Any] | str | bytes
"""One input line: a parsed dict, or JSON text."""


class Format(NamedTuple):
    """How input lines become commands (the Segment adapter, wired in by the composition root):
    ``decode`` a line, then map it ``to_commands`` (None: a message ingest ignores). Both raise
    InvalidCommand naming the field for a line they refuse. ``unwrap``: the messages of an item
    that is a batch envelope (each decoded, or the error refusing it), None for a message; it
    raises for an envelope that cannot be read whole."""

    decode: Callable[[Message], Any]
    to_commands: Callable[[Any], Sequence[Command] | None]
    unwrap: Callable[[Message], Sequence[Any] | None]


class Ingester:
    """Runs bulk ingests for one workspace."""

    def __init__(
        self, writer: Writer, projector: Projector, queries: Queries, settings: Settings,
        format: Format,
    ) -> None:
        self.format = format
        self.writer = writer
        self.projector = projector
        self.queries = queries
        self.settings = settings

    def ingest(
        self, messages: Iterable[Message], batch_size: int = INGEST_BATCH,
        progress: Callable[[int], None] | None = None, parallel: bool | None = None,
    ) -> IngestReport:
        """See :meth:`idstitch.Workspace.ingest`."""
        # Types were checked at the public boundary; what they mean is checked here.
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidCommand("batch_size", f"must be an integer of at least 1, got {batch_size!r}")
        if parallel and not self.projector.can_fork:
            raise InvalidCommand("parallel", "a second process cannot open this store")
        run = _Run(self, batch_size, None if progress is None else _reporting(progress), parallel)
        with bulk_gc():
            try:
                return run.run(messages)
            except _ProgressRaised as e:
                raise IngestInterrupted(run.report) from e.__cause__


def _reporting(progress: Callable[[int], None]) -> Callable[[int], None]:
    """The caller's callback, its failure told apart from the ingest's own."""
    def call(count: int) -> None:
        try:
            progress(count)
        except Exception as e:
            raise _ProgressRaised from e

    return call


class _Run:
    """One ingest: its report, the batch being gathered, and how it projects."""

    def __init__(self, owner: Ingester, batch_size: int, progress: Callable[[int], None] | None,
                 parallel: bool | None) -> None:
        self.owner = owner
        self.batch_size = batch_size
        self.progress = progress
        self.report = IngestReport()
        self.batch: list[tuple[int, list[Step]]] = []
        self.unprojected: list[LoggedEvent] = []
        self.recorded = 0
        """Events this ingest appended so far."""
        self.behind = False
        """A catch-up between batches left projections to another process: the last one
        must wait for them."""
        self.helper: background.BackgroundProjector | None = None
        self.parallel = parallel if owner.projector.can_fork else False

    def run(self, messages: Iterable[Message]) -> IngestReport:
        owner, report = self.owner, self.report
        decode = owner.format.decode
        to_commands = owner.format.to_commands
        handlers = HANDLERS
        uow = self._uow(owned=False)
        json_uow = self._uow(owned=True)
        index = -1
        try:
            read_at = monotonic()
            for raw in messages:
                # Values decoded from a JSON line belong to this message alone; a dict the
                # caller passed may still be held (and changed) by the caller.
                if isinstance(raw, (str, bytes)):
                    if not raw or raw.isspace():
                        report.blank += 1  # not a message: no index, no count
                        continue
                    current = json_uow
                    try:
                        items: Sequence[Any] = (decode(raw),)
                    except IdstitchError as e:
                        # Only a line that is no message may be an envelope (it has no
                        # "type"): the messages pay nothing for envelopes.
                        items = self._unwrap(raw, e)
                else:
                    current = uow
                    items = self._unwrap(raw, None)
                for item in items:
                    index += 1
                    if not self.batch or monotonic() - read_at > CLOCK_SHARE_SECONDS:
                        # Messages that arrive close together share one clock reading (their
                        # recorded_at, and the received time of their sent_at correction); a
                        # slow stream gets a fresh one, so a later message is never timed
                        # earlier.
                        now = owner.settings.clock()
                        uow.now = json_uow.now = now
                        read_at = monotonic()
                    try:
                        if isinstance(item, IdstitchError):
                            raise item
                        commands = to_commands(item)
                        if commands is None:
                            report.ignored += 1
                            continue
                        for command in commands:
                            handlers[type(command)](command, current)
                    except IdstitchError as e:
                        current.take()  # nothing of a rejected message stays staged
                        report.rejected.append((index, str(e)))
                        continue
                    self.batch.append((index, current.take()))
                    if len(self.batch) >= self.batch_size:
                        self.flush()
            self.flush(project=True)
        finally:
            # Also when the input, a callback or the store fails midway: no child outlives
            # its ingest.
            if self.helper is not None:
                self.helper.close()
        return report

    def _unwrap(self, raw: Message, error: IdstitchError | None) -> Sequence[Any]:
        """The messages of an item that is not one decoded message: a batch envelope's (each
        decoded, or the error refusing it), or the item itself (decoded, or ``error``)."""
        try:
            inside = self.owner.format.unwrap(raw)
            if inside is not None:
                return inside
            return (error,) if error is not None else (self.owner.format.decode(raw),)
        except IdstitchError as e:
            return (e,)  # an envelope that cannot be read whole: one rejected message

    def _uow(self, *, owned: bool) -> UnitOfWork:
        # A handler that consults the read models (a cio_ check) settles them first: the
        # messages staged before it are committed and projected.
        return UnitOfWork(Moment(self.owner.settings.clock(), owned),
                          Persons(lambda: self.flush(project=True), self.owner.queries))

    def flush(self, *, project: bool = False) -> None:
        """Commit the gathered batch; catch the projections up when due (or ``project``)."""
        owner = self.owner
        if self.batch:
            # Envelopes only for a catch-up in this process (the child reads the log).
            self.unprojected.extend(self._write(keep=owner.settings.auto_catch_up and self.helper is None))
            if self.progress is not None:
                self.progress(len(self.batch))
            self.batch = []
        if not owner.settings.auto_catch_up:
            return
        if self.helper is None and self.parallel is not False and (
                self.parallel or self.recorded >= CATCH_UP_EVENTS):
            self.parallel = False  # one attempt: if the child cannot start, project here
            helper = owner.projector.helper()
            if helper.failed is None:
                self.helper = helper
                self.unprojected.clear()  # the child reads them from the log
        if self.helper is not None:
            if project and not self.helper.wait_for(owner.projector.log.head()):
                self.helper = None  # it failed: everything after its position is done here
                owner.projector.catch_up()
            return
        # The projections catch up every CATCH_UP_EVENTS events rather than every batch: hot
        # person and device rows are then rewritten once per catch-up, not per batch. Between
        # batches, a projection another process is folding is left to it (no waiting); the
        # last catch-up waits for it to have committed everything this ingest appended.
        if (project and (self.unprojected or self.behind)) or (
                len(self.unprojected) >= CATCH_UP_EVENTS):
            reached = owner.projector.catch_up(self.unprojected, wait=project)
            self.behind = bool(self.unprojected) and reached < self.unprojected[-1].position
            self.unprojected.clear()

    def _write(self, *, keep: bool) -> list[LoggedEvent]:
        owner, batch, report = self.owner, self.batch, self.report
        if owner.settings.auto_catch_up:
            # Fail before recording anything, not after, if another process rebuilt the rows
            # under another configuration.
            owner.projector.check()
        result = owner.writer.write_batch(batch, keep=keep)
        if result is not None:
            report.accepted += result.accepted
            report.duplicates += result.duplicates
            self.recorded += result.recorded
            return result.appended
        # Other writers kept moving these devices: each message on its own, atomically. Their
        # events are projected with the rest (one catch-up, not one per message).
        kept: list[LoggedEvent] = []
        for message in batch:
            try:
                one = owner.writer.write_one(message)
            except ConcurrencyConflict as e:
                # Only this means "nothing of the message was written". Any other error (the
                # store failing) stops the ingest rather than report a message as rejected
                # that may have been recorded.
                report.rejected.append((message[0], str(e)))
                continue
            self.recorded += one.recorded
            if keep:
                kept.extend(one.appended)
            report.accepted += one.accepted
            report.duplicates += one.duplicates
        return kept
