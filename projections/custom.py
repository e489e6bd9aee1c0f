"""Custom projections: read models users write themselves, folded from the stream of Changes.

A :class:`Projection` says what it is (``name``, ``version``, the ``events`` it wants), creates
its tables (``setup``) and folds one :class:`~idstitch.projections.audit.Change` at a time
(``handle``; ``handle_batch`` for speed) into them through a :class:`ProjectionDB`. Where the
tables live and how a transaction commits them with the projection's tracking position is the
store's (the :class:`CustomTables` port, implemented in :mod:`idstitch.adapters.projection_sql`);
the order, the batches and the failures are the runner's
(:mod:`idstitch.projections.custom_runner`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

from idstitch.domain.errors import InvalidCommand, ProjectionFailed
from idstitch.projections.audit import EVENT_NAMES, Change

KNOWN_EVENTS = frozenset(EVENT_NAMES.values())
"""Every name a Change's ``event`` can take."""

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""A projection name: a plain lower-case identifier (it names tables, a schema, a tracking
row), at most 40 characters so that every name derived from it fits PostgreSQL's 63."""


class ProjectionDB(Protocol):
    """A custom projection's view of the workspace's database: its own tables only.

    ``?`` placeholders on every store (translated for PostgreSQL); values reach SQL only as
    parameters."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement (DDL or a write) inside the projection's transaction."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one query; every row as a tuple."""
        ...


class Projection:
    """Base class of a custom projection (see docs/howto/write-your-own-projection.md).

    Subclasses set :attr:`name` and :attr:`version`, optionally :attr:`events`, and implement
    :meth:`setup` and :meth:`handle`. A projection the ingest's projecting child should fold
    must be importable by ``module:qualname`` and constructible without arguments.
    """

    name: ClassVar[str]
    """Unique in the workspace: names its tracking and its tables' namespace."""
    version: ClassVar[int] = 1
    """A new version is built beside the old one from position 0, then swapped in."""
    events: ClassVar[frozenset[str] | None] = None
    """The ``Change.event`` names it wants (None: all)."""

    def setup(self, db: ProjectionDB) -> None:
        """Create the projection's tables (runs once per version)."""

    def handle(self, db: ProjectionDB, change: Change) -> None:
        """Fold one Change (in log order) into the projection's tables."""
        raise NotImplementedError

    def handle_batch(self, db: ProjectionDB, changes: Sequence[Change]) -> None:
        """Fold several Changes in log order (one transaction); by default, :meth:`handle`
        for each. Override it for speed (e.g. one ``executemany``-like statement)."""
        for change in changes:
            self.handle(db, change)

    def forget(self, db: ProjectionDB, person_ids: frozenset[str],
               device_ids: frozenset[str]) -> None:
        """Optional purge hook, run where a ``ws.forget`` stands in the log: by whichever
        process folds the projection past its ``PersonForgotten`` decision (once the forgetting
        process has purged the identity rows), in the transaction that moves the position over
        it: remove or blank every value the Changes of these
        persons carried (idempotent: each process that keeps the projection runs it).
        ``person_ids``: the forgotten person and every person merged into it; ``device_ids``:
        every device that was on one of them. A projection that does not override it, or
        whose hook raises (a ProjectionFailed, raised by ``ws.forget`` in the process that
        called it), is dropped and folded again from position 0 instead (as a rebuild does)."""
        raise NotImplementedError


def check_projection(projection: Any) -> Projection:
    """The projection, checked: an instance of :class:`Projection` with a plain name and a
    positive integer version (InvalidCommand naming the field otherwise)."""
    if isinstance(projection, type) and issubclass(projection, Projection):
        try:
            projection = projection()
        except TypeError as e:
            raise InvalidCommand("projection", f"{projection.__qualname__} cannot be built "
                                               f"without arguments ({e}): pass an instance") from e
    if not isinstance(projection, Projection):
        raise InvalidCommand("projection", f"must be an idstitch.Projection subclass or instance, "
                                           f"got {type(projection).__name__}")
    name = getattr(projection, "name", None)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidCommand("name", f"a projection name must be a plain lower-case identifier "
                                     f"(letters, digits, _; at most 40), got {name!r}")
    version = projection.version
    if type(version) is not int or not 1 <= version < 2**31:
        # (The tracking keeps it in a 32-bit column on PostgreSQL, and in table names.)
        raise InvalidCommand("version", f"must be an integer from 1 to 2**31 - 1, got "
                                        f"{version!r}")
    events = projection.events
    if events is not None and not (isinstance(events, frozenset)
                                   and all(isinstance(e, str) for e in events)):
        raise InvalidCommand("events", "must be None or a frozenset of Change.event names")
    if unknown := sorted((events or frozenset()) - KNOWN_EVENTS):
        # A misspelt name ("Identify") would fold nothing, without a word.
        raise InvalidCommand("events", f"unknown Change.event names {unknown}; the names are "
                                       f"{sorted(KNOWN_EVENTS)}")
    return projection


def topic_of(projection: Projection) -> str:
    """``module:qualname`` of the projection's class (how the child imports it)."""
    kind = type(projection)
    return f"{kind.__module__}:{kind.__qualname__}"


class Tracked(Protocol):
    """One version of a custom projection as tracked in the store."""

    @property
    def version(self) -> int:
        """The projection's version."""
        ...

    @property
    def position(self) -> int:
        """Its committed tracking position."""
        ...

    @property
    def live(self) -> bool:
        """Whether readers see it (else: being built beside the live one)."""
        ...

    @property
    def made_at(self) -> int | None:
        """The head of the log when its tables were made, while every fold of them since was
        one that may skip the decisions up to there (see
        :class:`~idstitch.projections.custom_runner.CustomRunner`); None: not known (tables
        made before it was tracked) or no longer true."""
        ...


class CustomTransaction(Protocol):
    """One batch of a custom projection: its tables and its tracking, committed together."""

    @property
    def position(self) -> int:
        """The version's tracking position when the transaction began (under its lock)."""
        ...

    @property
    def db(self) -> ProjectionDB:
        """The version's tables."""
        ...

    @property
    def made_at(self) -> int | None:
        """The version's :attr:`Tracked.made_at` when the transaction began (under its lock)."""
        ...

    def advance(self, position: int) -> None:
        """Move the tracking position (committed with the rows when the block exits)."""
        ...

    def unmark(self) -> None:
        """Forget :attr:`made_at` (committed with the rows when the block exits)."""
        ...


class CustomTables(Protocol):
    """Where custom projections keep their tables and tracking: the workspace's database."""

    def versions(self, name: str) -> Sequence[Tracked]:
        """Every tracked version of the projection (none: never registered)."""
        ...

    def every(self) -> Sequence[tuple[str, Tracked]]:
        """Every tracked version of every custom projection (registered here or not)."""
        ...

    def create(self, name: str, version: int, live: bool,
               setup: Callable[[ProjectionDB], None], made_at: int, *,
               replace: bool = False) -> None:
        """Track a new version at position 0, made when the log's head was ``made_at``, and
        create its tables, in one transaction (a version already tracked is left alone).
        ``replace``: drop every tracked version of the projection first, in the same
        transaction (a rebuild: no moment without the projection for a fold or a reader of
        another process to meet)."""
        ...

    def transaction(self, name: str, version: int) -> AbstractContextManager[CustomTransaction]:
        """A transaction on the version's tables and tracking; rolled back on an exception."""
        ...

    def swap(self, name: str, version: int) -> None:
        """Make ``version`` the live one and drop every other version's tables and tracking,
        in one transaction."""
        ...

    def drop(self, name: str, version: int) -> None:
        """Drop one version's tables and tracking."""
        ...

    def reader(self, name: str) -> ProjectionDB:
        """Read access to the live version's tables."""
        ...

    def keep(self, name: str) -> None:
        """Say, for as long as this store is open, that this process keeps the projection (a
        shared hold other keepers share: see :meth:`unkept`)."""
        ...

    def unkept(self, name: str) -> AbstractContextManager[bool]:
        """While the block runs, whether no process keeps the projection (True: none does,
        and none can start to until the block ends); False when one does, or when the store
        cannot tell (taken as kept)."""
        ...

    def scrub(self) -> None:
        """After a forget was honoured (a purge hook ran, or tables were dropped): leave no
        byte of what was deleted in the database's files where the store can (SQLite: copy
        the WAL into the file and truncate it; freed pages are zeroed as they are freed)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def failed(name: str, position: int, cause: Exception) -> ProjectionFailed:
    """The failure of a projection at a position, its cause chained."""
    failure = ProjectionFailed(name, position, cause)
    failure.__cause__ = cause
    return failure


class Untracked(LookupError):
    """A projection version's tracking row is gone: another process replaced the version (a
    newer one was swapped in), or was rebuilding it at that moment."""


def replaced(name: str, version: int) -> Untracked:
    """The error of a version whose tracking another process dropped (a registration of
    another version drops an unfinished build; a swap drops the live one)."""
    return Untracked(f"version {version} of {name!r} is no longer tracked: another process "
                     "replaced it; register it again")


def moved(projection: Projection, position: int, start: int) -> bool:
    """Whether the tracking a batch's transaction found (``position``) is not where the fold
    began (``start``): another process folded it meanwhile, or rebuilt it (then it is
    behind ``start``). :class:`Untracked` when it is not tracked at all."""
    if position < 0:
        raise replaced(projection.name, projection.version)
    return position != start


def wanted_by(group: Sequence[Projection]) -> frozenset[str] | None:
    """The event names any of the group wants (None: all)."""
    names: set[str] = set()
    for projection in group:
        if projection.events is None:
            return None
        names.update(projection.events)
    return frozenset(names)


def check_replacing(held: Projection | None, projection: Projection) -> None:
    """InvalidCommand when ``projection`` would replace another class registered under its
    name at the same version: the tables were made by the other's setup, and these handlers
    would never match them (a new version of a projection is built beside the old)."""
    if held is not None and type(held) is not type(projection) and (
            held.version == projection.version):
        raise InvalidCommand("name", f"{projection.name!r} is registered already, by "
                                     f"{type(held).__name__} at version {held.version}: a name "
                                     "is unique in the workspace")

