"""The message bus: one command in, checked, its handler run, its events recorded, projections
current.

The Workspace's public methods build a command and hand it here. The command is checked where
it enters (:func:`idstitch.service.checks.check`, as ingest checks each of its commands); its
handler loads its aggregate from a fresh unit of work and has it decide; the unit of work
commits (a batch of one message, retried on conflicts with other writers); in the embedded
default the projections then catch up to those events, so the caller reads its own write.
"""

from __future__ import annotations

from collections.abc import Callable

from idstitch.domain.commands import Command
from idstitch.domain.errors import WriteLanded
from idstitch.service import following, handlers
from idstitch.service.checks import Entry, check
from idstitch.service.projecting import Projector
from idstitch.service.queries import Queries
from idstitch.service.settings import Settings
from idstitch.service.uow import UnitOfWork, Writer


class MessageBus:
    """Checks each command, runs its handler on a unit of work and commits it."""

    def __init__(
        self, writer: Writer, projector: Projector, queries: Queries, settings: Settings,
        guard: Callable[[Command], None] | None = None,
    ) -> None:
        self.writer = writer
        self.guard = guard
        """Refuses a checked command before its handler (one naming a forgotten identifier)."""
        self.projector = projector
        self.queries = queries
        self.settings = settings

    def handle(self, command: Command) -> int | None:
        """Check and run one command; the position of its last event, or None when it
        recorded nothing (a duplicate message id, collected attributes turned off)."""
        now = self.settings.clock()
        checked = check(command, Entry(now))
        if self.guard is not None:
            self.guard(checked)
        auto = self.settings.auto_catch_up
        with UnitOfWork(self.writer, self.queries, self.projector if auto else None, now,
                        None if auto else following.settled(self.projector,
                                                            self.settings)) as uow:
            uow.inline = auto
            handlers.run(uow, 0, (checked,))
            with self.writer.lock:
                # Rows built under another policy (another process rebuilt them) refuse the
                # commit before anything is appended (the catch-up after it would refuse).
                result = uow.commit()
                assert result is not None  # one message, run: a batch of one
                if result.rejected:
                    raise result.rejected[0][1]
                appended = result.appended
                if not appended:
                    return None
                if auto:
                    try:
                        if uow.landed is not None and uow.landed >= appended[-1].position:
                            # The built-in rows committed with the events (SQLite): only the
                            # custom projections are left.
                            self.projector.landed(appended[-1].position)
                        else:
                            self.projector.catch_up(appended, tracked=uow.tracked)
                    except Exception as e:
                        # Recorded all the same: say so, and where (issue 16 item 4).
                        raise WriteLanded(appended[-1].position, e) from e
                return appended[-1].position
