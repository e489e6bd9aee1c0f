"""Bulk ingest of Segment-spec messages: batches, a shared clock, and a second process.

Each message is decoded and mapped to commands (:mod:`idstitch.adapters.segment`), and each
command checked where it enters (:func:`idstitch.service.checks.check`, as the message bus
checks a public call's), before any of the message runs. A batch of checked messages then runs
on one unit of work: the aggregates of all its messages are loaded at once, each message's
handlers run on them, and the unit of work commits (one transaction; events in message order).
A message refused by a check or by a handler leaves nothing behind; it is reported with its
index and reason and the rest go on. A batch gives what one call per message would, except that
messages arriving within CLOCK_SHARE_SECONDS of each other share one clock reading. The input is
streamed: only one batch is held at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from time import monotonic
from typing import Any

from idstitch.domain.commands import Command
from idstitch.domain.errors import IdstitchError, InvalidCommand, StoreError
from idstitch.domain.events import DECISIONS_STREAM
from idstitch.projections.store import LoggedEvent
from idstitch.service import background, following, handlers
from idstitch.service.checks import CHECKS, Entry
from idstitch.service.commit_check import PolicyCheck
from idstitch.service.gc_pause import bulk_gc
from idstitch.service.ingest_report import (
    Format,
    IngestInterrupted,
    IngestReport,
    Message,
    ProgressRaised,
    reporting,
)
from idstitch.service.projecting import Projector
from idstitch.service.queries import Queries
from idstitch.service.settings import Settings
from idstitch.service.uow import UnitOfWork, Writer

CLOCK_SHARE_SECONDS = 0.05
"""During ingest, messages that arrive within this long of a clock reading share it."""
INGEST_BATCH = 20_000
"""Messages per ingest transaction by default. On SQLite each commit syncs, and rewrites the
pages of the B-trees it touched (random keys: the log's (stream, version) index, the rows):
1000-message batches spent ~1 s of a 100k-message ingest in commits, 5000-message ones ~0.4 s;
once the log is large, a commit touches one page a row, so a larger one shares more pages
between its rows: a 1M-event identity ingest took 43.6 s at 20,000 messages a batch instead of
55.4 s at 5,000 (same run), for ~70 MB more memory in the recording process."""
CATCH_UP_EVENTS = 50_000
"""When no child projects, the projections catch up after about this many events (and at the
end)."""
CHILD_START_MESSAGES = 4_000
"""An ingest that may project in a second process (``parallel`` None or True, a SQLite file
or PostgreSQL) commits its first batch at this many messages and starts the child then: the
child takes ~0.3 s to import and open the store, and finds a log to fold when it is ready. A
smaller ingest never pays for a process; one that ends before the child is ready projects
here and ends the child. (Started at 50,000 events, the child of a 100k-message identity
ingest began 1.6 s into a 4.3 s recording, and its fold of the backlog outlasted it.)"""
EARLY_COMMIT_MESSAGES = 2_500
"""While a child projects, a batch of at least this many messages is committed before it is
full when the child says it has nothing left to fold (the answer to ``idle``, looked for
every :data:`IDLE_LOOK_MESSAGES` messages): otherwise the child waits for the batch, and the
last full batch was still being folded 0.4-0.6 s after the recording ended. It costs a
commit each time the child catches up, a few per 100,000 messages."""
IDLE_LOOK_MESSAGES = 256
"""How often (in messages gathered) an ingest looks whether its child has said it is idle: a
``select`` on its pipe, too dear for every message."""
FINAL_CHUNK = 2_500
"""While a child projects, the last batch is run and committed this many messages at a time:
the child folds each piece as soon as it is committed, while this process records the next,
so what is left to fold once the input ends is one piece rather than a whole batch (a 20,000
message batch is ~0.8 s of the child's work: a fifth of a 100k-message ingest)."""


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
        run = _Run(self, batch_size, None if progress is None else reporting(progress), parallel)
        with bulk_gc():
            try:
                return run.run(messages)
            except ProgressRaised as e:
                raise IngestInterrupted(run.report) from e.__cause__


class _ChildProjects:
    """The projections while a child projects an ingest: a catch-up waits for the child to
    have committed the head of the log; once the child failed, this process projects
    (everything after the child's position)."""

    def __init__(self, projector: Projector, helper: background.BackgroundProjector) -> None:
        self.projector = projector
        self.helper: background.BackgroundProjector | None = helper
        """The child, until it fails."""
        self.head = 0
        """The last position this ingest committed."""

    def check(self, *, inline: bool = False) -> PolicyCheck:
        """As :meth:`Projector.check` (never inline: the child folds an ingest's batches)."""
        return self.projector.check()

    def committed(self, last: int) -> None:
        """This ingest committed up to ``last``: ask the child to say when it has folded it
        (see :meth:`idle`)."""
        self.head = max(self.head, last)
        if self.helper is not None:
            self.helper.ask_idle()

    def idle(self) -> bool:
        """Whether the child said it has folded everything this ingest committed. An answer
        to a question asked before the last commit is stale (the child is folding that one):
        it is asked again."""
        if self.helper is None:
            return False
        reached = self.helper.idle()
        if reached is None:
            return False
        if reached < self.head:
            self.helper.ask_idle()
            return False
        return True

    def finish(self, *, wait: bool) -> None:
        """Every projection at the head of the log once the ingest has appended all: by the
        child if it is ready (or ``wait``), else here (a child still starting would be waited
        for while this process could fold what a short ingest appended)."""
        if self.helper is not None and not wait and not self.helper.ready():
            self.helper.close()
            self.helper = None
        self.catch_up()

    def catch_up(self, recent: Sequence[LoggedEvent] = (), *, wait: bool = True,
                 eager: bool = False,
                 tracked: Mapping[str, tuple[int, str | None]] | None = None) -> int:
        """Every projection at the head of the log (``recent`` is the child's to read)."""
        if self.helper is not None:
            head = self.projector.log.head()
            if self.helper.wait_for(head):
                return head
            self.helper = None  # it failed: everything after its position is done here
        return self.projector.catch_up()


_NOT_YET = datetime.min.replace(tzinfo=UTC)
"""The time of a unit of work before its first message (each message sets its own)."""

Checked = list[Command] | str | None
"""A message as ingest holds it until its batch runs: its checked commands, why a check
refused it, or None (a message ingest ignores)."""


class _Run:
    """One ingest: its report, the batch being gathered, and how it projects."""

    def __init__(self, owner: Ingester, batch_size: int, progress: Callable[[int], None] | None,
                 parallel: bool | None) -> None:
        self.owner = owner
        self.batch_size = batch_size
        self.progress = progress
        self.report = IngestReport()
        self.pending: list[tuple[int, datetime, Checked]] = []
        """The messages read since the last commit, in input order."""
        self.checked = 0
        """How many messages wait for the next commit: those read since that passed their
        checks, and those run already (a batch is ``batch_size`` of them)."""
        settings = owner.settings
        auto = settings.auto_catch_up
        self.uow = UnitOfWork(owner.writer, owner.queries, owner.projector if auto else None,
                              _NOT_YET, None if auto else following.settled(owner.projector,
                                                                            settings))
        self.recorded = 0
        """Events this ingest appended so far."""
        self.behind = False
        """A catch-up between batches left projections to another process: the last one
        must wait for them."""
        self.child: _ChildProjects | None = None
        """How the projections are caught up while a child projects (also the unit of
        work's, for a read about persons)."""
        self.parallel = parallel if owner.projector.can_fork else False
        self.asked = bool(parallel)
        """The caller asked for a child (``parallel=True``): it is waited for, however short
        the ingest."""
        self.limit = (min(batch_size, CHILD_START_MESSAGES)
                      if self.parallel is not False and settings.auto_catch_up else batch_size)
        """Messages of the batch being gathered (the first one is small when a child may
        start: see :data:`CHILD_START_MESSAGES`)."""

    def run(self, messages: Iterable[Message]) -> IngestReport:
        owner = self.owner
        decode = owner.format.decode
        to_commands = owner.format.to_commands
        checks, reads = CHECKS, handlers.reads_persons
        now = self.uow.now
        # Values decoded from a JSON line belong to this message alone; a dict the caller
        # passed may still be held (and changed) by the caller.
        entry, json_entry = Entry(now), Entry(now, owned=True)
        pending = self.pending
        index = -1
        try:
            read_at = monotonic()
            for raw in messages:
                if isinstance(raw, (str, bytes)):
                    if not raw or raw.isspace():
                        self.report.blank += 1  # not a message: no index, no count
                        continue
                    current = json_entry
                    try:
                        items: Sequence[Any] = (decode(raw),)
                    except IdstitchError as e:
                        # Only a line that is no message may be an envelope (it has no
                        # "type"): the messages pay nothing for envelopes.
                        items = self._unwrap(raw, e)
                else:
                    current = entry
                    if isinstance(raw, Mapping) and "batch" in raw:
                        # As for a line: a message first (an item with a "type" is one,
                        # whatever else it holds), an envelope only if it is none.
                        try:
                            items = (decode(raw),)
                        except IdstitchError as e:
                            items = self._unwrap(raw, e)
                    else:
                        items = self._unwrap(raw, None)
                for item in items:
                    index += 1
                    if not self.checked or monotonic() - read_at > CLOCK_SHARE_SECONDS:
                        # Messages that arrive close together share one clock reading (their
                        # recorded_at, and the received time of their sent_at correction); a
                        # slow stream gets a fresh one, so a later message is never timed
                        # earlier.
                        now = owner.settings.clock()
                        entry.now = json_entry.now = now
                        read_at = monotonic()
                    try:
                        if isinstance(item, IdstitchError):
                            raise item
                        commands = to_commands(item)
                        if commands is None:
                            pending.append((index, now, None))
                            continue
                        checked = []
                        for command in commands:
                            checked.append(checks[type(command)](command, current))
                    except IdstitchError as e:
                        # Its reason only: an error held would hold its traceback's frames.
                        pending.append((index, now, str(e)))
                        continue
                    pending.append((index, now, checked))
                    self.checked += 1
                    if self.checked >= self.limit:
                        self.flush()
                    elif (self.child is not None and self.checked >= EARLY_COMMIT_MESSAGES
                          and not self.checked % IDLE_LOOK_MESSAGES and self.child.idle()):
                        self._run_batch(last=True)  # the child waits for it: now
                    elif reads(checked):
                        # Its handler reads about persons as the log stands after the messages
                        # before it: run now, before the next message is read (the batch
                        # waits for the rest, see _run_batch).
                        self._run_batch(last=False)
            self.flush(project=True)
        finally:
            # Also when the input, a callback or the store fails midway: no child outlives
            # its ingest.
            if self.child is not None and self.child.helper is not None:
                self.child.helper.close()
            self.uow.close()
        return self.report

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

    def _run_batch(self, *, last: bool) -> None:
        """Run the gathered messages' handlers on the unit of work, in input order, and
        commit them. A handler reading about persons commits the messages before its own
        first (their counts and progress are reported as it returns): a batch then starts at
        its message, and is committed once it is full (or ``last``), as are batches whose
        handlers refused some of their messages."""
        uow, report, pending = self.uow, self.report, self.pending
        # Every aggregate of the batch at once: one query for those the cache lacks.
        # (stream_of inlined: this runs for every command.)
        uow.load({getattr(c, "device_id", DECISIONS_STREAM)
                  for _, _, cs in pending if type(cs) is list for c in cs})
        run, table = uow.run, handlers.HANDLERS
        for index, now, checked in pending:
            if type(checked) is list:
                uow.now = now
                try:
                    run(index, checked, table)
                except StoreError:
                    raise
                except IdstitchError as e:
                    report.rejected.append((index, str(e)))
                if uow.results:
                    self._account()
            elif checked is None:
                report.ignored += 1
            elif isinstance(checked, str):
                report.rejected.append((index, checked))
        pending.clear()
        self.checked = waiting = len(uow.batch.messages)
        if waiting < self.limit and not last:
            return  # they wait for the batch to fill
        self.checked = 0
        self._commit()

    def _commit(self) -> None:
        """Commit what the handlers ran, report it, and ask the child (if any) to say when it
        has folded it. (When the workspace keeps its projections, the commit fails before
        appending anything if another process rebuilt the rows under another configuration.)"""
        result = self.uow.commit()
        self._account()
        if self.child is not None and result is not None:
            self.child.committed(result.last)

    def _account(self) -> None:
        """Report what the unit of work's commits did; the progress callback hears of each."""
        report = self.report
        for result in self.uow.results:
            report.accepted += result.accepted
            report.duplicates += result.duplicates
            report.rejected += [(i, str(e)) for i, e in result.rejected]
            self.recorded += result.recorded
            if self.progress is not None:
                self.progress(result.messages)
        self.uow.results.clear()

    def flush(self, *, project: bool = False) -> None:
        """Commit the gathered batch; catch the projections up when due (or ``project``)."""
        owner, uow = self.owner, self.uow
        catching_up = owner.settings.auto_catch_up
        if catching_up and self.child is None and self.parallel is not False and (
                self.parallel or not project):
            # The input proved large (a first batch is full): start the child now, before
            # this batch runs, so that it is ready by the time there is a log to fold.
            self.parallel = False  # one attempt: if the child cannot start, project here
            helper = owner.projector.helper()
            if helper.failed is None:
                self.child = uow.projections = _ChildProjects(owner.projector, helper)
                uow.appended.clear()  # the child reads them from the log
        if self.pending or uow.batch.messages:
            # Envelopes only for a catch-up in this process (the child reads the log).
            uow.keep = catching_up and self.child is None
            if project and self.child is not None:
                if self.child.helper is not None:
                    self.child.helper.ending()
                pending = self.pending
                while len(pending) > FINAL_CHUNK:
                    self.pending = pending[:FINAL_CHUNK]
                    del pending[:FINAL_CHUNK]
                    self._run_batch(last=True)
                self.pending = pending
            self._run_batch(last=project)
        self.limit = self.batch_size
        if not catching_up:
            return
        if self.child is not None:
            if project:
                self.child.finish(wait=self.asked)
            return
        # The projections catch up every CATCH_UP_EVENTS events rather than every batch: hot
        # person and device rows are then rewritten once per catch-up, not per batch. Between
        # batches, a projection another process is folding is left to it (no waiting); the
        # last catch-up waits for it to have committed everything this ingest appended.
        unprojected = uow.appended
        if (project and (unprojected or self.behind)) or (
                len(unprojected) >= CATCH_UP_EVENTS):
            reached = owner.projector.catch_up(unprojected, wait=project)
            self.behind = bool(unprojected) and reached < unprojected[-1].position
            unprojected.clear()
