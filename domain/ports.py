"""The write half of the log, as the application layer needs it: load devices, append events.

Declared here, implemented by the adapters (:mod:`idstitch.adapters.eventlog`), so the service
layer depends on this protocol and never on a concrete store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from idstitch.domain.aggregates import Aggregate
from idstitch.domain.device import Recorded
from idstitch.domain.events import DeviceEvent


class WriteConflict(Exception):
    """Another writer appended to one of the devices first: nothing of the append was written.

    Not an :class:`~idstitch.domain.errors.IdstitchError`: the service layer always handles it
    (reload the devices, decide again); only ``ConcurrencyConflict`` reaches callers.
    """


SUPPRESSION_MARK = "idstitch:suppressed"
"""The tracking row a forget raises once its identifiers are suppressed (to how many
suppressed digests the key store holds): an append reads it with the projections' tracking
rows, under the log's write lock, and learns there that another process forgot somebody."""


class SuppressionMoved(Exception):
    """An append's check read that another process suppressed identifiers since this one last
    looked: nothing was appended. The batch's commands are checked again against the
    suppressed identifiers, now read, and those naming one are rejected (``Suppressed``)."""


class StaleKey(SuppressionMoved):
    """A device of the batch would record under its stint's key, which another process
    destroyed (it forgot the device's person since this process loaded the device): nothing
    was appended. Every device of the batch is loaded again from the log, where the erased
    identify starts a stint under a new key, and the batch runs again."""


class AppendCheck(Protocol):
    """What must hold right before an append, which refuses it by raising (a command's check
    that the projections' rows were built as this process expects, read from their tracking
    rows). A log that can read the tracking rows of ``names`` in its append's first round trip,
    under its lock, hands them to :meth:`found` and appends only if that returns; any other
    append calls :meth:`run` first. Either way nothing is appended when it raises."""

    names: Sequence[str]
    inline: bool
    """Whether it wants :meth:`landed` called (a command's check: a bulk batch's rows are
    folded after its append, or by another process)."""

    def found(self, tracked: Mapping[str, tuple[int, str | None]]) -> None:
        """Check the (position, meta) read of each named tracking row ((0, None): none)."""
        ...

    def run(self) -> None:
        """Read the tracking rows and check them (:meth:`found`)."""
        ...

    def landed(self, appended: Sequence[tuple[int, DeviceEvent]]) -> bool:
        """Called by a log whose projection rows can go in its append, before it commits:
        the projections' rows for these (position, event) pairs are written in the append's
        transaction (SQLite, once the events are in; PostgreSQL, by the statement that
        inserts them), so that one commit makes both durable. True when they were. When it
        raises, nothing of them is written and the events commit alone (the catch-up after
        the append folds them as ever)."""
        ...

    def abandoned(self) -> None:
        """The append whose :meth:`landed` wrote rows did not commit: forget them."""
        ...


class AggregateRepository(Protocol):
    """The aggregates (devices, the decisions stream), rebuilt from their events, and the
    append of newly recorded events."""

    def load_many(self, device_ids: Iterable[str]) -> dict[str, Aggregate]:
        """Every one of ``device_ids``: from its events, or new (version 0) when it has none."""
        ...

    def write(self, pending: Sequence[Recorded], check: AppendCheck | None = None) -> list[int]:
        """Append events in one transaction, in the order given; their log positions.
        ``check``: passed (see :class:`AppendCheck`) before anything is appended.

        Raises :class:`WriteConflict` when a device's version was taken by another writer."""
        ...

    def versions(self, device_ids: Iterable[str]) -> dict[str, int]:
        """The stored version of each of these devices that has any event."""
        ...

    def refresh(self, devices: Iterable[Aggregate]) -> set[str]:
        """Bring devices up to the log (only the events other writers appended to them since
        they were loaded); the ids of those that moved."""
        ...

    def exclusive(self, check: AppendCheck | None = None
                  ) -> AbstractContextManager[Callable[[Sequence[Recorded]], list[int]]]:
        """Hold the log's append lock until the block ends: what the block reads of the log
        stays true until the events it appends (with the yielded function) commit.
        ``check``: passed once the lock is held, before the block runs (see AppendCheck)."""
        ...


class KeyStore(Protocol):
    """Where the data subject keys live (one 256-bit AES-GCM key per key id).

    The workspace database holds them by default (:mod:`idstitch.adapters.keys`); a user can
    plug in a KMS by implementing these five methods. A destroyed key leaves a tombstone: an
    erased subject can never get a key again.
    """

    def get(self, key_id: str) -> bytes | None:
        """The key, or None if it was never created or was destroyed."""
        ...

    def create(self, key_id: str) -> bytes | None:
        """The key of ``key_id``, created now if it does not exist; None if it was destroyed."""
        ...

    def create_many(self, key_ids: Sequence[str]) -> dict[str, bytes | None]:
        """:meth:`create` for many ids at once (one round trip: a batch's new devices)."""
        ...

    def destroy(self, key_ids: Iterable[str]) -> None:
        """Destroy the keys for good (a tombstone stays, so none is created again)."""
        ...

    def is_destroyed(self, key_id: str) -> bool:
        """True if the key was destroyed."""
        ...

    def suppress(self, digests: Iterable[bytes]) -> None:
        """Record keyed hashes of forgotten identifiers (never the identifiers themselves)."""
        ...

    def suppressed(self, digest: bytes) -> bool:
        """True if the keyed hash of an identifier was recorded by :meth:`suppress`."""
        ...

    def suppressed_digests(self) -> set[bytes]:
        """Every keyed hash recorded by :meth:`suppress` (a process keeps a copy)."""
        ...
