"""The Workspace: the facade behind ``idstitch.open(url)``.

Each command method builds a command (:mod:`idstitch.domain.commands`) and hands it to the
message bus; each query asks the query service; bulk ingest, catch-up and rebuild go to their
own services. What the workspace is made of is wired in one place, :mod:`idstitch.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal
from uuid import uuid4

from idstitch import bootstrap
from idstitch.domain import commands as c
from idstitch.domain.errors import InvalidCommand
from idstitch.domain.verification import Digest, Verification, check_digest
from idstitch.projections.audit import Change, Provenance
from idstitch.projections.custom import Projection, ProjectionDB, check_projection
from idstitch.projections.identity import Policy
from idstitch.projections.views import Device, Merge, Profile
from idstitch.service import erasure, following
from idstitch.service.arguments import checked, checked_methods, entering
from idstitch.service.following import ProjectionStatus
from idstitch.service.ingest import INGEST_BATCH, IngestReport

Clock = bootstrap.Clock


# Every public method and property setter checks its arguments' types by its annotations at
# this one boundary (idstitch.service.arguments), a method added later too: annotate it. The
# command methods (@entering) are checked once where their command enters the service
# (idstitch.service.checks): each field's type and meaning together.
@checked_methods
class Workspace:
    """One event store and its projections. Use :func:`idstitch.open` to get one."""

    def __init__(self, services: bootstrap.Services) -> None:
        self._services = services
        self._bus = services.bus
        self._queries = services.queries
        self.log = services.stores.log
        """The device event log (for tests and tools: ``read``, ``head``)."""
        self.rows = services.stores.rows
        """The projection store."""
        self.projections = services.registry
        """Every projection the workspace keeps, in the order they catch up."""

    @property
    def url(self) -> str:
        """The store URL."""
        return self._services.stores.url

    @property
    def anonymous_merge(self) -> Policy:
        """``merge`` (Customer.io, Segment, PostHog) or ``switch`` (Adapty)."""
        return self._services.projector.policy()

    @property
    def clock(self) -> Clock:
        """The clock that stamps ``recorded_at``."""
        return self._services.settings.clock

    @property
    def retries(self) -> int:
        """How many times a command runs before ConcurrencyConflict reaches the caller."""
        return self._services.writer.retries

    @retries.setter
    def retries(self, value: int) -> None:
        if value < 1:
            raise InvalidCommand("retries", f"must be at least 1, got {value}")
        self._services.writer.retries = value

    @property
    def auto_catch_up(self) -> bool:
        """Whether commands and queries keep the projections current (read-your-writes)."""
        return self._services.settings.auto_catch_up

    @auto_catch_up.setter
    def auto_catch_up(self, value: bool) -> None:
        self._services.settings.auto_catch_up = value

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the store's connections."""
        self._services.stores.close()

    # Device commands (identity-model.md §2): each returns the log position of the last event
    # it recorded, or None when it recorded nothing.

    @entering
    def activate(
        self, device_id: str, *, customer_user_id: str | None = None,
        auto_track_device_attributes: bool = True, platform: str | None = None,
        sdk: dict[str, Any] | None = None, message_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> int | None:
        """The SDK was configured on the device; with a customer user id it identifies too."""
        return self._bus.handle(c.Activate(
            device_id=device_id, customer_user_id=customer_user_id,
            auto_track_device_attributes=auto_track_device_attributes, platform=platform,
            sdk=sdk, message_id=message_id, timestamp=timestamp))

    @entering
    def identify(
        self, device_id: str, user_id: str, traits: dict[str, Any] | None = None, *,
        message_id: str | None = None, timestamp: datetime | None = None,
        sent_at: datetime | None = None, received_at: datetime | None = None,
    ) -> int | None:
        """Identify a person on the device: an id, an email, or ``cio_<person_id>``."""
        return self._bus.handle(c.Identify(
            device_id=device_id, user_id=user_id, traits=traits, message_id=message_id,
            timestamp=timestamp, sent_at=sent_at, received_at=received_at))

    @entering
    def set_profile_attributes(
        self, device_id: str, traits: dict[str, Any] | None = None, *,
        set_once: dict[str, Any] | None = None, unset: list[str] | None = None,
        message_id: str | None = None, timestamp: datetime | None = None,
        sent_at: datetime | None = None, received_at: datetime | None = None,
    ) -> int | None:
        """Change attributes of the device's current person: only the keys given."""
        return self._bus.handle(c.SetProfileAttributes(
            device_id=device_id, traits=traits, set_once=set_once, unset=unset,
            message_id=message_id, timestamp=timestamp, sent_at=sent_at, received_at=received_at))

    @entering
    def set_device_attributes(
        self, device_id: str, attributes: dict[str, Any], *, message_id: str | None = None,
        timestamp: datetime | None = None, sent_at: datetime | None = None,
        received_at: datetime | None = None,
    ) -> int | None:
        """Custom device attributes (nested JSON allowed)."""
        return self._bus.handle(c.SetDeviceAttributes(
            device_id=device_id, attributes=attributes, message_id=message_id,
            timestamp=timestamp, sent_at=sent_at, received_at=received_at))

    @entering
    def collect_device_attributes(
        self, device_id: str, context: dict[str, Any], *, message_id: str | None = None,
        timestamp: datetime | None = None, sent_at: datetime | None = None,
        received_at: datetime | None = None,
    ) -> int | None:
        """Auto-collected attributes; dropped when the device turned auto-tracking off."""
        return self._bus.handle(c.CollectDeviceAttributes(
            device_id=device_id, context=context, message_id=message_id, timestamp=timestamp,
            sent_at=sent_at, received_at=received_at))

    @entering
    def register_device_token(
        self, device_id: str, token: str, *, platform: str | None = None,
        message_id: str | None = None, timestamp: datetime | None = None,
        sent_at: datetime | None = None, received_at: datetime | None = None,
    ) -> int | None:
        """The device's push token; a token held by another device moves here."""
        return self._bus.handle(c.RegisterDeviceToken(
            device_id=device_id, token=token, platform=platform, message_id=message_id,
            timestamp=timestamp, sent_at=sent_at, received_at=received_at))

    @entering
    def remove_device_token(
        self, device_id: str, token: str, *, reason: str = "deleted",
        message_id: str | None = None, timestamp: datetime | None = None,
    ) -> int | None:
        """The token is dead (the push provider said so) or the app deleted it."""
        return self._bus.handle(c.RemoveDeviceToken(
            device_id=device_id, token=token, reason=reason, message_id=message_id,
            timestamp=timestamp))

    @entering
    def record_push_status(
        self, device_id: str, status: str, *, message_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> int | None:
        """``last_status`` of the device's token: sent, bounced or suppressed."""
        return self._bus.handle(c.RecordPushStatus(
            device_id=device_id, status=status, message_id=message_id, timestamp=timestamp))

    @entering
    def clear_identify(
        self, device_id: str, *, message_id: str | None = None, timestamp: datetime | None = None
    ) -> int | None:
        """Stop identifying: the device starts a new anonymous session; its token stays."""
        return self._bus.handle(c.ClearIdentify(
            device_id=device_id, message_id=message_id, timestamp=timestamp))

    @entering
    def logout(
        self, device_id: str, *, message_id: str | None = None, timestamp: datetime | None = None
    ) -> int | None:
        """Adapty's logout: as clear_identify, but an anonymous device raises NotIdentified."""
        return self._bus.handle(c.Logout(
            device_id=device_id, message_id=message_id, timestamp=timestamp))

    # Person-level decisions (identity-model.md §4): events on the workspace's decisions
    # stream, in the same log as the devices' events.

    @entering
    def merge_persons(self, primary: str, secondary: str, *, reason: str) -> str:
        """Merge two identified persons (any identifier of each): the secondary's identifiers,
        devices, anonymous ids and attributes join the primary, whose values win on a key both
        hold. The merge's id (for :meth:`unmerge`)."""
        merge_id = str(uuid4())
        self._bus.handle(c.MergePersons(primary=primary, secondary=secondary, reason=reason,
                                        merge_id=merge_id))
        return merge_id

    @entering
    def unmerge(self, merge_id: str, *, reason: str) -> None:
        """Undo a merge exactly: an explicit one, or an anonymous person's merge on identify.
        Both sides become what they would be had the merge never been recorded (later events
        with the side their device or identifier came from). A replay of the identity
        projection, and of the custom projections that read its rows, from position 0."""
        if self._bus.handle(c.Unmerge(merge_id=merge_id, reason=reason)) is not None:
            self._services.projector.replay_persons()

    @entering
    def forget(self, identifier: str, *, reason: str) -> None:
        """Erase a person (the right to erasure): any identifier of it (user id, email,
        ``cio_<id>``, person id). Its keys are destroyed (its personal values in the log read
        erased from then on), its identifiers refused by every later command and by ingest
        (:class:`~idstitch.errors.Suppressed`), a ``PersonForgotten`` decision records its
        person id and ``reason`` (which must not hold personal data), and its rows are purged
        from every projection, leaving exactly the rows a rebuild would give (a custom
        projection: its ``forget`` hook, or it is folded again). UnknownPerson if no person
        has that identifier, Suppressed if it was forgotten already; nothing changes on an
        error. ProjectionFailed if a custom projection's hook failed (the person is erased)."""
        erasure.forget(self._services.stores, self._bus, self._services.projector, identifier,
                       reason)

    # Bulk.

    def ingest(
        self, messages: Iterable[dict[str, Any] | str | bytes], *, batch_size: int = INGEST_BATCH,
        progress: Callable[[int], None] | None = None, parallel: bool | None = None,
    ) -> IngestReport:
        """Ingest Segment-spec messages (dicts, or JSON str/bytes lines), a transaction a batch.

        An item may also be a batch envelope (``{"batch": [...], "sentAt": ...}``): its
        messages are ingested one by one, each given the envelope's ``sentAt`` unless it has its
        own. Blank lines are skipped (counted in ``IngestReport.blank``, given no index).
        Each message is validated whole before any of it runs, so a rejected one leaves nothing
        behind; it is reported with its index (among the messages, an envelope's counted one by
        one) and reason, and the rest go on. Messages arriving
        within 50 ms of each other share one clock reading (their ``recorded_at``, and the
        received time of a ``sentAt`` correction when the message has no ``receivedAt``).
        ``progress`` is called with the number of messages of each committed batch.

        ``parallel``: project in a second process while this one records. None (the default)
        starts it once the input proves large, on a SQLite file or PostgreSQL; True from the
        start; False never. Either way the projections are caught up when ingest returns.
        """
        return self._services.ingester.ingest(messages, batch_size, progress, parallel)

    # Projections.

    def catch_up(self) -> int:
        """Bring every projection up to the head of the log; the position reached.

        A custom projection whose handler raised (now or at an earlier catch-up, a write's
        say) raises :class:`~idstitch.errors.ProjectionFailed` here, after every other
        projection was caught up. A stored event that cannot be read raises
        :class:`~idstitch.errors.CorruptEvent` (the projections stop just before it)."""
        projector = self._services.projector
        reached = projector.catch_up()
        projector.raise_unreadable()
        projector.raise_failures()
        return reached

    def run_projection(self, projection: type[Projection] | Projection) -> None:
        """Register a custom projection (a class or an instance), create its tables (once per
        version), catch it up; from then on it is kept current wherever the built-in ones are.
        Registered again after a reopen, it resumes from its tracked position."""
        self._services.projector.register(check_projection(projection))

    def wait_for(self, position: int | None, timeout: float | int | None = None) -> int:
        """Block until every projection (built-in, and every custom one the store tracks) has
        committed ``position``: read-your-writes across processes, with the position a write
        returned. The lowest position reached; None (a write that recorded nothing) returns
        at once; a position past the head of the log is an InvalidCommand.
        :class:`~idstitch.errors.ProjectionsBehind` after ``timeout`` seconds, saying how far
        behind they are. A workspace that keeps its projections itself catches up
        first."""
        return following.read_your_write(self._services.projector, self.log.head, position,
                                         timeout, catch_up=self.auto_catch_up)

    def projection_status(self) -> list[ProjectionStatus]:
        """Every projection the store tracks (built-in, then custom) with its version,
        committed position and lag (positions of the log after it). Never catches up: with
        ``projections="external"`` this is how far behind reads are."""
        return following.status(self._services.projector)

    def lag(self) -> int:
        """How many positions of the log the slowest projection has not folded yet (0: reads
        see every write). Never catches up."""
        return max([s.lag for s in self.projection_status()], default=0)

    @property
    def external(self) -> bool:
        """Whether another process keeps the projections (``projections="external"``)."""
        return self._services.settings.external

    def projection_db(self, name: str) -> ProjectionDB:
        """Read access to a custom projection's tables (its live version), caught up first
        when the workspace keeps projections current; ProjectionFailed if it cannot be."""
        return self._services.projector.reader(name, catch_up=self.auto_catch_up)

    def rebuild(
        self, names: Sequence[str] | None = None, progress: Callable[[int], None] | None = None,
        *, parallel: bool | None = None,
    ) -> int:
        """Replay the log from position 0 into fresh projections (same result as incremental).

        ``names``: the projections to rebuild (built-in, see :attr:`projections`, or custom);
        None for all. A custom projection is rebuilt in place (its tables dropped and set up
        again).
        ``progress`` is called with the number of log positions replayed since its last call.
        ``parallel``: replay all but the first projection in a second process; None (the
        default) does so for a long log on a SQLite file or PostgreSQL, False never. The
        result is the same either way.
        """
        return self._services.projector.rebuild(names, progress, parallel=parallel)

    # Queries (identity-model.md §6).

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds (user id, email, cio_<id>, person id, anonymous id)."""
        return self._queries.profile(identifier)

    def profile_of_device(self, device_id: str) -> Profile | None:
        """The device's current person."""
        return self._queries.profile_of_device(device_id)

    def device(self, device_id: str) -> Device | None:
        """A device: token, platform, attributes, last_used, last_status."""
        return self._queries.device(device_id)

    def merges(self, identifier: str) -> list[Merge]:
        """Every conversion, merge and switch of the person, with the position of its cause."""
        return self._queries.merges(identifier)

    # The audit.

    def history(self, identifier: str) -> list[Change]:
        """Every change that shaped the person the identifier finds, in log order: its own
        events and those of every person merged into it, from before the merge."""
        return self._queries.history(identifier)

    def profile_as_of(self, identifier: str, at: int | datetime) -> Profile | None:
        """The profile as the log stood at a position (up to and including it) or at an aware
        datetime of recorded time; the identifier resolves as it did then."""
        return self._queries.profile_as_of(identifier, at)

    def explain(self, identifier: str, attribute: str) -> Provenance | None:
        """The event that set the person's current value of ``attribute``, and the changes of
        that key that lost to it; None when the person has no such attribute."""
        return self._queries.explain(identifier, attribute)

    # The verifiable log (see docs/explanation/verifiable-log.md).

    def verify(self, against: Digest | None = None) -> Verification:
        """Recompute the hash chain over the stored log and name the first position where it
        breaks (a changed byte, a deleted, moved or inserted event). With ``against``, a
        :class:`Digest` taken earlier and kept elsewhere, also prove that the log up to its
        position is the log it was taken of, even if the rows and their hashes were rewritten."""
        return self.log.verify(None if against is None else check_digest("against", against))

    def digest(self) -> Digest:
        """The chain's last position and hash: keep it outside the store, and verify against
        it later."""
        return self.log.digest()

    def dump(self) -> dict[str, list[tuple[str, bytes]]]:
        """Every projection row, by kind: two workspaces agree exactly when their dumps do."""
        return self._queries.dump()


@checked
def open(
    url: str | None = None, *, anonymous_merge: Policy | None = None, clock: Clock | None = None,
    auto_catch_up: bool = True,
    projections: Sequence[Projection] | Literal["external"] | None = None,
) -> Workspace:
    """Open a workspace: ``memory:``, ``sqlite:///path`` (default ``./idstitch.db``),
    or ``postgresql://user:pw@host:port/db`` (``?schema=name`` for a schema of its own).
    ``IDSTITCH_DATABASE_URL`` is read when no url is given.

    ``anonymous_merge``: ``"merge"`` (Customer.io, Segment, PostHog) or ``"switch"`` (Adapty).
    Left out, a new store uses ``"merge"`` and an existing one keeps the policy it was built
    under; a different policy replays the log into the projection (a rebuild).

    ``projections``: custom projections (:class:`idstitch.Projection` instances) registered at
    open, as :meth:`Workspace.run_projection` would; or ``"external"``: another process
    (``idstitch project``) keeps every projection, this workspace appends only (commands and
    ingest never catch up, queries read the rows as they are: see :meth:`Workspace.lag` and
    :meth:`Workspace.wait_for`)."""
    external = isinstance(projections, str)  # the annotation admits only "external"
    custom = [] if isinstance(projections, str) else [check_projection(p)
                                                      for p in projections or ()]
    return Workspace(bootstrap.build(url, anonymous_merge=anonymous_merge, clock=clock,
                                     auto_catch_up=auto_catch_up, custom=custom,
                                     external=external))


__all__ = ["IngestReport", "Workspace", "open"]
