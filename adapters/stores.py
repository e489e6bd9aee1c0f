"""What opening a store gives: the event log and the projection store of one database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from idstitch.adapters.crypto import SubjectCipher
from idstitch.adapters.eventlog import DeviceLog
from idstitch.projections.store import ProjectionStore


class ClosableStore(ProjectionStore, Protocol):
    """A projection store that can be closed."""

    def close(self) -> None:
        """Release connections."""
        ...


class AppendListener(Protocol):
    """Wakes a projecting process when writers append."""

    def wait(self, timeout: float) -> bool:
        """Block until an append is notified (True) or ``timeout`` seconds pass (False)."""
        ...

    def close(self) -> None:
        """Stop listening."""
        ...


@dataclass
class Stores:
    """The event log and the projection store of one workspace, in one database."""

    url: str
    log: DeviceLog
    rows: ClosableStore
    shared_url: str | None = None
    """A URL that opens this same store from another process (whatever its working directory),
    or None when no other process can (``memory:``)."""
    listen: Callable[[], AppendListener] | None = None
    """Opens a listener woken by appends (PostgreSQL's LISTEN/NOTIFY), or None where a
    projecting process polls the log's head instead (SQLite: one statement)."""
    cipher: SubjectCipher | None = None
    """The data subject keys the log's personal values are sealed with (None when encryption
    is switched off)."""
    closing: list[Callable[[], None]] = field(default_factory=list)
    """What else to close with the store (the custom projections' connection)."""

    def close(self) -> None:
        """Close both, and whatever else was opened on the same database."""
        for close in self.closing:
            close()
        self.log.close()
        self.rows.close()
