"""The message bus: one command in, its handler run, its events recorded, projections current.

The Workspace's public methods build a command and hand it here. The handler validates it and
stages its step on a fresh unit of work; the writer appends the events (retrying on conflicts
with other writers); in the embedded default the projections then catch up to those events, so
the caller reads its own write.
"""

from __future__ import annotations

from collections.abc import Callable

from idstitch.domain.commands import Command
from idstitch.domain.errors import WriteLanded
from idstitch.service.handlers import HANDLERS
from idstitch.service.projecting import Projector
from idstitch.service.queries import Queries
from idstitch.service.settings import Settings
from idstitch.service.uow import Moment, Persons, UnitOfWork, Writer


class MessageBus:
    """Maps each command to its handler and commits the unit of work it staged."""

    def __init__(
        self, writer: Writer, projector: Projector, queries: Queries, settings: Settings,
        guard: Callable[[Command], None] | None = None,
    ) -> None:
        self.writer = writer
        self.guard = guard
        """Checks every command before its handler (the refusal of forgotten identifiers)."""
        self.projector = projector
        self.queries = queries
        self.settings = settings

    def handle(self, command: Command) -> int | None:
        """Validate and run one command; the position of its last event, or None when it
        recorded nothing (a duplicate message id, collected attributes turned off)."""
        uow = UnitOfWork(Moment(self.settings.clock(), False),
                         Persons(self.queries.settle, self.queries))
        if self.guard is not None:
            self.guard(command)
        HANDLERS[type(command)](command, uow)
        with self.writer.lock:
            tracked = None
            if self.settings.auto_catch_up:
                # Rows built under another policy (another process rebuilt them) would refuse
                # the catch-up after the append: refuse the command before it is recorded.
                tracked = self.projector.check()
            appended = self.writer.write_one((0, uow.take())).appended
            if not appended:
                return None
            if self.settings.auto_catch_up:
                try:
                    self.projector.catch_up(appended, tracked=tracked)
                except Exception as e:
                    # Recorded all the same: say so, and where (issue 16 item 4).
                    raise WriteLanded(appended[-1].position, e) from e
            return appended[-1].position
