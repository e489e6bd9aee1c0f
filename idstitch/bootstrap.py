"""The composition root: the one place that names the concrete stores and the built-in
projections, and wires them into the services a workspace (or the projecting child) uses.

``open()`` builds its :class:`Services` here; the child process builds the same stores and
exactly the parent's projection registry here (from the registry's specs), so what it
projects is what the parent would have.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from idstitch.adapters import batches, memory, projection_sql, segment, urls
from idstitch.adapters.stores import Stores
from idstitch.adapters.suppression import guard_of, suppressing
from idstitch.domain import rules
from idstitch.domain.errors import CorruptRow, InvalidCommand, PolicyMismatch
from idstitch.projections.base import Registry, RowProjection
from idstitch.projections.custom import Projection
from idstitch.projections.custom_runner import CustomRunner
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import DEFAULT_POLICY, IdentityProjection, Policy
from idstitch.projections.store import ProjectionStore
from idstitch.service.bus import MessageBus
from idstitch.service.commit_check import watching
from idstitch.service.erasure import finish_forgets, finish_unmerges
from idstitch.service.ingest import Ingester
from idstitch.service.ingest_report import Format
from idstitch.service.projecting import Projector
from idstitch.service.queries import Queries
from idstitch.service.settings import Settings
from idstitch.service.uow import Writer

DEFAULT_URL = "sqlite:///idstitch.db"
ENV_URL = "IDSTITCH_DATABASE_URL"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


def checked_clock(clock: Clock) -> Clock:
    """A caller's clock whose every reading is checked: what it returns is ``recorded_at``.

    Not read at open (a test clock may count its readings): a reading that is not an aware
    datetime is an InvalidCommand naming ``clock`` from the call that read it, before that
    call records anything."""
    def read() -> datetime:
        now = clock()
        if type(now) is datetime and now.tzinfo is UTC:
            return now
        aware = rules.check_time("clock", now)
        if aware is None:
            raise InvalidCommand("clock", "returned None: it must return an aware datetime")
        return aware

    return read


def resolve_url(url: str | None) -> str:
    """The explicit url (an empty one too: refused when parsed, never taken for none), else
    ``IDSTITCH_DATABASE_URL`` (when set and not empty), else ``./idstitch.db``."""
    return (os.environ.get(ENV_URL) or DEFAULT_URL) if url is None else url


def open_stores(url: str | None = None) -> Stores:
    """Build the stores a URL names: ``memory:``, ``sqlite:///path``, ``postgresql://...``.

    SQLite paths follow SQLAlchemy's convention: ``sqlite:///rel/path.db`` is relative to the
    working directory, ``sqlite:////abs/path.db`` absolute. The URL is parsed and checked
    whole (:func:`idstitch.adapters.urls.parse`) before anything connects.
    """
    url = resolve_url(url)
    if not isinstance(url, str):
        raise InvalidCommand("url", f"must be a string, got {type(url).__name__}")
    parsed = urls.parse(url)
    if parsed.kind == "memory":
        return memory.connect()
    # The SQL stores are imported when a URL names them: psycopg alone takes ~0.1 s to import,
    # which a SQLite user (and every command line run) should not pay.
    if parsed.kind == "sqlite":
        from idstitch.adapters import sqlite

        assert parsed.path is not None
        return sqlite.connect(parsed.path)
    from idstitch.adapters import postgres

    assert parsed.postgres is not None
    return postgres.connect(url, parsed.postgres)


def builtin_projections(rows: ProjectionStore, anonymous_merge: Policy | None) -> Registry:
    """The projections every workspace keeps, in catch-up order.

    No policy asked for: keep the one the rows were built under, so a read-only open never
    re-stitches a store. A different policy asked for: that is a replay (a rebuild on open).
    A store whose rows minted ids from log positions keeps doing so (see ``ids_of``)."""
    try:
        stored = rows.meta(IdentityProjection.name)
    except CorruptRow:
        # A damaged tracking row: the rows it tracks cannot be trusted. Dropped here, they
        # are rebuilt by the first catch-up (as for damaged rows met later, Projector.repair).
        fresh = [IdentityProjection(DEFAULT_POLICY), DeviceAttributesProjection()]
        rows.reset([p.name for p in fresh], [k for p in fresh for k in p.kinds])
        stored = None
    built_under = IdentityProjection.policy_of(stored)
    return Registry([IdentityProjection(anonymous_merge or built_under or DEFAULT_POLICY,
                                        IdentityProjection.ids_of(stored)),
                     DeviceAttributesProjection()])


def record_policy(rows: ProjectionStore, identity: IdentityProjection, *, external: bool) -> None:
    """Record the policy a workspace was opened with on a store that records none yet (a
    new one, or one that only external writers have written): every process that opens it
    later without a policy (``idstitch project``, another writer, a reopen) builds the
    identity projection under it, instead of the default. An external writer, which never
    folds, gets PolicyMismatch for a policy other than the one recorded: the process keeping
    its projections would not stitch by it."""
    stored = rows.meta(identity.name)
    if stored is None:
        # A tracking row at position 0: no rows yet, the configuration they will be built
        # under. A compare-and-set: of two processes opening a new store, one records.
        found = rows.write_if(identity.name, (0, None), {}, 0, identity.stored_meta(0, None))
        stored = None if found is None else found[1]
    built_under = IdentityProjection.policy_of(stored)
    if external and built_under not in (None, identity.policy):
        raise PolicyMismatch(
            f"the store's identity projection is built under anonymous_merge={built_under}, "
            f"not {identity.policy}: open it without anonymous_merge (the process keeping the "
            f"projections uses the recorded one), or change it with `idstitch rebuild --policy "
            f"{identity.policy}`")


def custom_runner(stores: Stores, registry: Registry) -> CustomRunner:
    """The runner of custom projections over these stores (closed with them)."""
    runner = CustomRunner(stores.log, stores.rows, projection_sql.connect(stores.url), registry)
    stores.closing.append(runner.tables.close)
    return runner


@dataclass
class Services:
    """Everything a workspace is made of, wired."""

    stores: Stores
    registry: Registry
    settings: Settings
    projector: Projector
    writer: Writer
    queries: Queries
    bus: MessageBus
    ingester: Ingester


def build(
    url: str | None = None, *, anonymous_merge: Policy | None = None, clock: Clock | None = None,
    auto_catch_up: bool = True, projections: Sequence[RowProjection] | None = None,
    custom: Sequence[Projection] = (), external: bool = False,
) -> Services:
    """Open the store a URL names and wire a workspace's services over it.

    ``projections``: the row projections to keep (None: the built-in ones,
    :func:`builtin_projections`), so that a test can build a workspace with any set.
    ``custom``: users' projections (:class:`idstitch.Projection`), registered and caught up
    before this returns. The arguments' types were checked at the boundary of
    ``idstitch.open``.
    ``external``: another process (``idstitch project``) keeps the projections; this workspace
    appends only (no catch-up, no rebuild on open, no projecting child)."""
    stores = open_stores(url)
    try:
        if external and stores.shared_url is None:
            raise InvalidCommand("projections", "'external' needs a store another process can "
                                 "open (a SQLite file or PostgreSQL), not memory:")
        registry = (builtin_projections(stores.rows, anonymous_merge) if projections is None
                    else Registry(projections))
        registry.attach(stores.log)
        if anonymous_merge is not None and projections is None:
            identity = registry[IdentityProjection.name]
            assert isinstance(identity, IdentityProjection)
            record_policy(stores.rows, identity, external=external)
        # One lock: a workspace runs its commands and catch-ups one at a time.
        lock = threading.RLock()
        runner = custom_runner(stores, registry)
        projector = Projector(stores.log, stores.rows, registry, shared_url=stores.shared_url,
                              lock=lock, custom=runner)
        cipher = stores.cipher
        writer = Writer(stores.log, forgets=None if cipher is None else lambda: cipher.forgets,
                        guard=guard_of(cipher))
        writer.lock = lock
        if cipher is not None:
            writer.watched = watching(cipher, stores.rows)
        settings = Settings(utc_now if clock is None else checked_clock(clock),
                            auto_catch_up and not external, external)
        # A forgotten person's ids answer nothing (its person id too: see queries.forgotten).
        queries = Queries(stores.log, stores.rows, projector, settings,
                          None if stores.cipher is None else stores.cipher.is_suppressed,
                          memory.MemoryProjectionStore)
        bus = MessageBus(writer, projector, queries, settings, writer.guard)
        ingester = Ingester(writer, projector, queries, settings,
                            Format(segment.decode_line,
                                   suppressing(segment.to_commands, stores.cipher),
                                   batches.envelope))
        stale = [] if external else [p.name for p in registry if p.needs_rebuild(stores.rows)]
        if stale:
            projector.rebuild(stale)
        for projection in custom:
            projector.register(projection)
        if not external:
            # A forget stopped between its decision and its rebuild is finished here, and an
            # unmerge stopped between its decision and its replay (a forget's rebuild
            # finishes both).
            finish_forgets(stores, projector)
            finish_unmerges(stores, projector)
        return Services(stores, registry, settings, projector, writer, queries, bus, ingester)
    except BaseException:
        stores.close()
        raise
