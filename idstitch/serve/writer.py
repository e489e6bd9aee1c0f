"""The one writer: a thread that owns the workspace and commits the messages of many requests
together.

A Workspace is not to be shared freely by threads (on PostgreSQL its connections are not), so
requests never touch it: each hands its messages to this thread as a :class:`Submission` and
waits for the future. The thread takes every submission waiting when it looks (up to
``group_messages`` messages), ingests them in one ``ws.ingest`` call, one transaction, and
answers each request with its own part of the report: a commit is shared by all the requests
that were waiting for it (group commit), which is what makes small batches cheap.

The read models are left to a :class:`~idstitch.serve.keeping.Keeper` (a projecting child
process, or catch-ups of this thread between groups). Bounding the submissions in flight is the
HTTP layer's job (it admits a request before reading its body); this thread only drains.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from idstitch.serve.keeping import CATCH_UP_MESSAGES, IDLE, Keeper
from idstitch.serve.rejects import RejectsLog, entry
from idstitch.service.following import HEAD_WAIT
from idstitch.service.withholding import forgotten_check
from idstitch.workspace import Workspace

GROUP_MESSAGES = 5000
"""Messages one ``ws.ingest`` call takes at most (ten full client batches of 500 KB or so)."""
LINGER = 0.003
"""Seconds the writer, when busy, waits for more requests before it commits a group. Clients
that got their answers together send their next batches together, but the event loop reads
them one by one: without the wait the first one would be committed alone and the others in a
group after it (measured with four clients: 2 requests a group on average, 3.5 with the wait,
and a quarter more messages a second). It waits only when busy: its last group held several
requests, or requests it was told about are still being read. A lone client is not slowed."""
EXTERNAL_WAIT = 5.0
"""Seconds a group naming a person by cio_ id waits for an external projector to reach the
log's head: its cio_ messages are refused after that, saying so (the client is answered, and
the requests queued behind the group wait no longer)."""

log = logging.getLogger("idstitch.serve")


@dataclass
class Outcome:
    """What became of one request's messages: how many there were, and the refused ones."""

    received: int
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(index in the request's batch, reason), in index order."""


@dataclass
class Submission:
    """One request's messages on their way to the writer.

    ``lines`` go to ``ws.ingest`` (each message encoded again after its stamps: JSON lines are
    ingest's fastest input, and the encoding measured the message's size anyway); ``messages``
    are the same as parsed, for the rejects log; ``indices`` their positions in the request's
    batch; ``refused`` the (index, reason, message) the HTTP layer refused before."""

    endpoint: str
    received_at: str
    messages: list[Any]
    lines: list[bytes]
    indices: list[int]
    refused: list[tuple[int, str, Any]] = field(default_factory=list)
    names_person: bool = False
    """A message names a person by id (``cio_...``): checked against caught-up projections."""
    future: Future[Outcome] = field(default_factory=Future)


_STOP = object()


class Writer:
    """The thread that owns the workspace. ``start`` opens it there; ``stop`` drains and closes."""

    def __init__(self, open_workspace: Callable[[], Workspace], *, owned: bool, rejects: RejectsLog,
                 group_messages: int = GROUP_MESSAGES, linger: float = LINGER) -> None:
        self._open = open_workspace
        self._owned = owned
        self.rejects = rejects
        self.group_messages = group_messages
        self.linger = linger
        self.groups = 0
        """``ws.ingest`` calls made so far (each commits one group)."""
        self._coming = 0
        self._coming_lock = threading.Lock()
        self._last_group = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread and open the workspace in it; raises what opening raised."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="idstitch-serve-writer", daemon=True)
            self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def running(self) -> bool:
        """Started, and not stopped."""
        return self._thread is not None and self._thread.is_alive()

    def coming(self, change: int) -> None:
        """Count requests admitted whose messages are on their way (+1), or arrived or given up
        (-1): the writer lingers for them before it commits."""
        with self._coming_lock:
            self._coming += change

    def expect(self, coming: int) -> None:
        """Set the count of requests on their way (a writer process is told the HTTP
        process's count with each submission)."""
        with self._coming_lock:
            self._coming = coming

    def submit(self, submission: Submission) -> Future[Outcome]:
        """Queue a request's messages; the future is answered once they are committed."""
        self._queue.put(submission)
        return submission.future

    def stop(self) -> None:
        """Answer everything submitted so far, then close the workspace (if it opened it)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._queue.put(_STOP)
        thread.join()

    def _run(self) -> None:
        try:
            ws = self._open()
        except BaseException as e:
            self._failure = e
            self._ready.set()
            return
        try:
            keeper = Keeper(ws)
        except BaseException as e:
            self._failure = e
            self._ready.set()
            if self._owned:
                ws.close()
            return
        self._ready.set()
        try:
            stopping = False
            while not stopping:
                try:
                    item = self._queue.get(timeout=IDLE) if keeper.unprojected else self._queue.get()
                except queue.Empty:
                    try:
                        keeper.catch_up()
                    except Exception:
                        # The store lost for now (a dropped connection): the writer goes on,
                        # and the next request tries again.
                        log.warning("the projections could not be brought up to date; "
                                    "retrying later", exc_info=True)
                    continue
                if item is _STOP:
                    break
                group: list[Submission] = [item]
                count = len(item.messages)
                now = time.monotonic()
                deadline = now + self.linger if self._coming > 0 or self._last_group > 1 else now
                while count < self.group_messages:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        wait = deadline - time.monotonic()
                        if wait <= 0:  # also when idle: no wait at all
                            break
                        try:
                            item = self._queue.get(timeout=wait)
                        except queue.Empty:
                            break
                    if item is _STOP:
                        stopping = True  # what was queued before the stop is still answered
                        break
                    group.append(item)
                    count += len(item.messages)
                self._write(ws, keeper, group)
                self._last_group = len(group)
        finally:
            try:
                keeper.close()
            finally:
                if self._owned:
                    ws.close()

    def _write(self, ws: Workspace, keeper: Keeper, group: list[Submission]) -> None:
        lines = [line for s in group for line in s.lines]
        # The projections are kept by the keeper (a child following the log, or catch-ups
        # between groups), not in each group's ingest: a 200 waits only for the log's commit.
        # A message naming a person by cio_ id is checked against the projections, so its
        # group catches up first, as ingest does (the request handlers read each userId: a
        # byte search for "cio_ also matched every device message's cio_sdk_version, and
        # caught up in nearly every group).
        person = any(s.names_person for s in group)
        defer = keeper.defers and not person
        try:
            # Inside the try: a store lost here (a dropped connection) is the group's failure,
            # answered 500, not the end of the writer thread with every request left waiting.
            if person and not ws.external:
                keeper.before_person_check()
            elif person and ws.lag():
                log.warning("the projections are behind the log: a cio_ id waits up to %s s "
                            "for them, then is refused (is `idstitch project` running?)",
                            EXTERNAL_WAIT)
            # One call, one transaction for the whole group; no child process for so few.
            if defer:
                ws.auto_catch_up = False
            # In external mode the ingest waits for the process keeping the projections
            # before it checks a cio_ id: briefly, since every request queues behind it.
            waiting = HEAD_WAIT.set(EXTERNAL_WAIT)
            try:
                report = ws.ingest(lines, batch_size=max(len(lines), 1), parallel=False) \
                    if lines else None
            finally:
                HEAD_WAIT.reset(waiting)
                if defer:
                    ws.auto_catch_up = True
            if defer:
                try:
                    keeper.recorded(len(lines))
                except Exception:
                    # The group is committed: keeping the projections is not its failure (a
                    # 500 would have its client send committed messages again).
                    log.warning("the projections could not be kept up to date; retrying "
                                "later", exc_info=True)
            self.groups += 1
            refused: list[list[tuple[int, str, Any]]] = [list(s.refused) for s in group]
            if report is not None:
                # The report numbers the group's messages: give each back to its request.
                owner, start = 0, 0
                for index, reason in sorted(report.rejected):
                    while index >= start + len(group[owner].messages):
                        start += len(group[owner].messages)
                        owner += 1
                    s = group[owner]
                    refused[owner].append((s.indices[index - start], reason, s.messages[index - start]))
            # After a forget, no refused message brings the person's values back into the
            # log: checked against the forgotten identifiers as the store holds them now
            # (through the cipher: the facade has no public handle on it).
            forgotten = forgotten_check(ws._services.stores.cipher) if any(refused) else None
            self.rejects.append([
                entry(s.received_at, s.endpoint, index, reason, message, forgotten)
                for s, theirs in zip(group, refused, strict=True)
                for index, reason, message in sorted(theirs, key=lambda refusal: refusal[0])])
        except BaseException as e:
            # The store failed (or the rejects log could not be written): no request of the
            # group is told its messages are recorded.
            for s in group:
                s.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for s, theirs in zip(group, refused, strict=True):
            s.future.set_result(Outcome(
                received=len(s.messages) + len(s.refused),
                rejected=sorted((index, reason) for index, reason, _ in theirs)))


__all__ = ["CATCH_UP_MESSAGES", "GROUP_MESSAGES", "IDLE", "LINGER", "Outcome", "Submission", "Writer"]
