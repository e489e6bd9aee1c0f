"""The storage ports the projections declare; adapters implement them.

Projection rows are small documents keyed by (kind, key). A projection reads and writes them
inside one :class:`ProjectionTransaction`, which also moves the tracking position: rows and
position commit together or not at all, so a crash never applies an event twice or skips one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

from idstitch.domain.events import DeviceEvent


class LoggedEvent(NamedTuple):
    """One event read back from the log, with its position."""

    position: int
    event: DeviceEvent


Span = tuple[str, int, "int | None"]
"""(device id, first position, end position (excluded; None: to the end of the log))."""


class EventLog(Protocol):
    """The workspace's global, ordered log of events."""

    def read_spans(
        self, spans: Sequence[Span], types: AbstractSet[type[DeviceEvent]] | None = None
    ) -> list[LoggedEvent]:
        """The events of these devices within these position ranges (of these types, or all),
        in log order: what an audit of one person reads, whatever the length of the log."""
        ...

    def read(self, after: int, limit: int) -> Sequence[LoggedEvent]:
        """Up to ``limit`` events with positions greater than ``after``, in order."""
        ...

    def read_selected(
        self, after: int, until: int, limit: int, types: AbstractSet[type[DeviceEvent]], *,
        first: bool = False,
    ) -> Sequence[LoggedEvent]:
        """Up to ``limit`` events of these types with ``after < position <= until``, in order;
        with ``first``, also every device's first event, whatever its type."""
        ...

    def head(self) -> int:
        """The position of the last recorded event (0 when the log is empty)."""
        ...

    def drop_keys(self) -> None:
        """Forget the data subjects' keys this process holds: another process may have
        destroyed some (a forget), and events must then read erased here too."""
        ...

    def identifier_digest(self, identifier: str) -> str | None:
        """The keyed hash (hex) a forget suppresses ``identifier`` by, or None when the log
        seals nothing (see ``idstitch.adapters.suppressed_digests``)."""
        ...


class RowReader(Protocol):
    """Anything rows can be read from in bulk: a store (committed rows) or a transaction."""

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The rows that exist among ``keys``."""
        ...


class ProjectionTransaction(Protocol):
    """Reads and writes of one projection's rows, committed with its tracking position."""

    position: int
    """The projection's tracking position when the transaction began."""
    meta: str | None
    """Free text stored beside the position (a projection's configuration)."""

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The rows that exist among ``keys``."""
        ...

    def write(
        self, rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None
    ) -> None:
        """Upsert (or, for None, delete) rows and move the tracking position; commits on exit."""
        ...


class RowSource(Protocol):
    """Committed rows, read one by one."""

    def tracked_at_head(
        self, names: Sequence[str]
    ) -> tuple[int, dict[str, tuple[int, str | None]]] | None:
        """The log's head and the named projections' tracking rows, as of this snapshot, in
        one statement (None where the store cannot read the head with them)."""
        ...

    def get(self, kind: str, key: str) -> bytes | None:
        """One row."""
        ...

    def get_each(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """The rows among these (kind, key) pairs, in one read where the store can."""
        ...

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        """The tracking positions of the named projections the rows were committed with."""
        ...


class ProjectionStore(Protocol):
    """Where projections keep their rows: in the same database as the events."""

    def snapshot(self) -> AbstractContextManager[RowSource]:
        """Rows as of one moment: every read inside sees the same committed state."""
        ...

    def transaction(self, name: str) -> AbstractContextManager[ProjectionTransaction]:
        """Begin a transaction that holds the projection ``name`` exclusively until it ends."""
        ...

    def write_if(
        self, name: str, expected: tuple[int, str | None],
        rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None,
        fresh: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> tuple[int, str | None] | None:
        """Upsert (or, for None, delete) rows and move the projection's tracking to
        ``(position, meta)``, in one transaction, only if the tracking still holds
        ``expected``: None when written, else the (position, meta) found, nothing written.
        ``fresh``: keys among ``rows`` the caller believes have no row yet (a store may
        insert them more cheaply; a wrong belief must still end in an upsert). A store
        whose class sets ``uses_fresh = False`` is handed an empty set instead.

        A compare-and-set: a store that can run it as one statement saves the round trips
        of a transaction that locks the tracking row first (see write_if_in_transaction)."""
        ...

    def get(self, kind: str, key: str) -> bytes | None:
        """Read one committed row."""
        ...

    def get_each(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """Committed rows among these (kind, key) pairs, in one read where the store can."""
        ...

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Read committed rows."""
        ...

    def scan(self, kind: str) -> Iterator[tuple[str, bytes]]:
        """Every committed row of a kind, ordered by key."""
        ...

    def count(self, kind: str) -> int:
        """How many committed rows of a kind there are (one read of the key's index: whether
        a scan of them fits in memory)."""
        ...

    def scan_without(self, kind: str, needle: bytes) -> Iterator[tuple[str, bytes]]:
        """Every committed row of a kind whose stored bytes do not contain ``needle``, ordered
        by key: the store filters, so a search for the few rows worth decoding (a forget's
        purge: rows with a non-empty list) costs one pass over the table, not a decode each."""
        ...

    def tracked(self, name: str) -> tuple[int, str | None]:
        """``position(name)`` and ``meta(name)`` in one read."""
        ...

    def tracked_many(self, names: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """``tracked`` of each named projection, in one read."""
        ...

    def tracked_at_head(
        self, names: Sequence[str]
    ) -> tuple[int, dict[str, tuple[int, str | None]]] | None:
        """The log's head and ``tracked_many(names)`` in one statement, where the store holds
        the log in the same database (one round trip instead of two); None where it does not
        (then read the log's head, and ``tracked_many`` after it)."""
        ...

    def position(self, name: str) -> int:
        """The committed tracking position of the projection ``name``."""
        ...

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        """The committed tracking positions of the named projections, in one read."""
        ...

    def meta(self, name: str) -> str | None:
        """The configuration the projection's committed rows were built under."""
        ...

    def reset(self, names: str | Sequence[str], kinds: Sequence[str],
              metas: Mapping[str, str] | None = None) -> None:
        """Drop projections' rows and tracking in one transaction (for a rebuild from
        position 0): ``names`` one projection's name or several. ``metas``: projections whose
        tracking is left at position 0 with this configuration instead (what the rebuild
        builds under stays recorded through it)."""
        ...

    def raise_mark(self, name: str, value: int) -> int | None:
        """Raise the tracking row ``name`` to at least ``value`` (created if missing), in a
        transaction no append of the log overlaps: an append that reads the row under its
        lock reads it either before the raise or after it (a forget's mark:
        ``idstitch.domain.ports.SUPPRESSION_MARK``). The log's head at the raise, where other
        processes append to the log (None: nobody but this process can)."""
        ...


def write_if_in_transaction(
    store: ProjectionStore, name: str, expected: tuple[int, str | None],
    rows: Mapping[tuple[str, str], bytes | None], position: int, meta: str | None,
) -> tuple[int, str | None] | None:
    """``ProjectionStore.write_if`` by a transaction that holds the projection: where a
    round trip costs nothing (the memory store, SQLite), or for a first commit."""
    with store.transaction(name) as tx:
        found = (tx.position, tx.meta)
        if found != expected:
            return found
        tx.write(rows, position, meta)
    return None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Aware datetime -> microseconds since the epoch (compact, exact, fast to compare)."""
    return (moment - EPOCH) // MICROSECOND


def from_micros(micros: int) -> datetime:
    """Microseconds since the epoch -> aware UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)
