"""The Workspace: the facade behind ``idstitch.open(url)``.

Each command method builds a command (:mod:`idstitch.domain.commands`) and hands it to the
message bus; each query asks the query service; bulk ingest, catch-up and rebuild go to their
own services. The methods live in the facade's rooms (:mod:`idstitch.rooms`: the device traffic,
the person-level decisions, the projections' upkeep, the queries and the audit), which the
Workspace composes; this module keeps its construction, its settings, its lifecycle and
``open()``. What the workspace is made of is wired in one place, :mod:`idstitch.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Literal

from idstitch import bootstrap
from idstitch.domain.errors import InvalidCommand
from idstitch.projections.custom import Projection, check_projection
from idstitch.projections.identity import Policy
from idstitch.rooms.decisions import PersonDecisions
from idstitch.rooms.projecting import ProjectionUpkeep
from idstitch.rooms.queries import QueriesAndAudit
from idstitch.rooms.traffic import DeviceTraffic
from idstitch.service.arguments import checked, checked_methods
from idstitch.service.ingest_report import IngestReport

Clock = bootstrap.Clock


# Every public method and property setter checks its arguments' types by its annotations at
# this one boundary (idstitch.service.arguments), a method added later too: annotate it. The
# command methods (@entering) are checked once where their command enters the service
# (idstitch.service.checks): each field's type and meaning together. @checked_methods guards
# the body of the class it decorates: each room is decorated too.
@checked_methods
class Workspace(DeviceTraffic, PersonDecisions, ProjectionUpkeep, QueriesAndAudit):
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

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the store's connections."""
        self._services.stores.close()


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
    names = [p.name for p in custom]
    if len(set(names)) != len(names):
        # Two under one name would share its tables and tracking: one's setup, the other's
        # handler (api.md: "unique in the workspace").
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidCommand("projections", f"two projections named {twice[0]!r}: a name is "
                                            "unique in the workspace")
    return Workspace(bootstrap.build(url, anonymous_merge=anonymous_merge, clock=clock,
                                     auto_catch_up=auto_catch_up, custom=custom,
                                     external=external))


__all__ = ["IngestReport", "Workspace", "open"]
