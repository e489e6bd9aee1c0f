"""What a projection is, and the registry of the projections a workspace keeps.

A row projection folds device events into rows of its own kinds and moves its own tracking
position in the same transaction as the rows (the runner, :mod:`idstitch.projections.runner`,
does the reading, caching and committing). A projection brings everything that is particular
to it: its name, the row kinds it owns with their types (so anyone holding the registry can
decode, dump or reset its rows without knowing it), the event types it folds, its
configuration, and the fold itself.

The :class:`Registry` is the one list the runner, rebuild, reset, dump and the projecting child
iterate; nothing outside a projection's own module and the composition root names one.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import uuid4

import msgspec
from idstitch.domain.errors import PolicyMismatch
from idstitch.domain.events import DeviceEvent
from idstitch.projections.store import EventLog, LoggedEvent, ProjectionStore
from idstitch.projections.unit import RowTypes, Unit

if TYPE_CHECKING:  # custom imports the audit, which reads rows of projections built on this
    from idstitch.projections.custom import Projection

CACHE_LIMIT = 100_000
"""Rows kept decoded between transactions; beyond it the working set starts cold."""


class NoConfig(msgspec.Struct, frozen=True):
    """The configuration of a projection that has none."""


class RowProjection:
    """A projection whose rows and tracking position live in the projection store.

    Subclasses set :attr:`name`, :attr:`rows_format`, :attr:`row_types`, :attr:`event_types`
    (and :attr:`first_events`) and implement :meth:`apply_all`. A definition holds no state of
    the runner's (its cache, cached position, completeness: see
    :class:`idstitch.projections.runner.RunnerState`): one instance can serve any number of
    runners.
    """

    name: ClassVar[str]
    rows_format: ClassVar[int] = 1
    """Version of this projection's stored row layout: rows of another version are rebuilt on
    open, and only this projection's."""
    config_type: ClassVar[type[msgspec.Struct]] = NoConfig
    """The type of :meth:`config` (the child decodes it with this)."""
    row_types: ClassVar[RowTypes]
    """The row kinds it owns and what each row is (a msgspec Struct, or ``str`` for plain text
    rows): a reset drops exactly these kinds, a dump lists them, the unit decodes them."""
    event_types: ClassVar[frozenset[type[DeviceEvent]]]
    """The events it folds; a replay reads only these."""
    cache_limit: ClassVar[int] = CACHE_LIMIT
    """Rows kept decoded between transactions at most (see CACHE_LIMIT)."""
    mismatch_hint: ClassVar[str] = "rebuild it"
    """What to do about rows built under another configuration (PolicyMismatch's advice)."""
    first_events: ClassVar[bool] = False
    """Whether it also needs every device's first event, whatever its type (to create the
    device's rows at the right moment)."""
    unit_class: ClassVar[type[Unit]] = Unit
    """The unit of rows its fold works on (a subclass may add typed helpers)."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """The row kinds it owns."""
        return tuple(self.row_types)

    @property
    def meta(self) -> str:
        """The configuration the rows were built under: a different one needs a rebuild."""
        return f"rows={self.rows_format}"

    def config(self) -> msgspec.Struct:
        """What the projecting child needs, besides the class, to build the same projection."""
        return NoConfig()

    @classmethod
    def from_config(cls, config: Any) -> RowProjection:
        """The projection :meth:`config` describes (the child builds its copy with this)."""
        return cls()

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def config_of(meta: str | None) -> str | None:
        """A stored meta without its epoch: the configuration the rows were built under."""
        # Cached: every command checks each projection's meta twice (before its append and
        # when its catch-up begins), and a workspace meets a handful of metas in its life.
        if meta is None:
            return None
        return " ".join(p for p in meta.split() if not p.startswith("epoch="))

    def stored_meta(self, start: int, meta: str | None) -> str:
        """The meta to commit: the configuration plus the epoch of these rows' life."""
        # The epoch names one life of the rows, from position 0 on: a reset and replay by
        # another process reaches the same positions again, but never the same epoch.
        epoch = dict(p.partition("=")[::2] for p in (meta or "").split()).get("epoch")
        if start == 0 or not epoch:
            epoch = uuid4().hex[:16]
        return f"{self.meta} epoch={epoch}"

    def needs_rebuild(self, store: ProjectionStore) -> bool:
        """Whether committed rows exist that were built under another configuration."""
        stored = store.meta(self.name)
        return stored is not None and self.config_of(stored) != self.meta

    def check_meta(self, meta: str | None) -> None:
        """Raise PolicyMismatch if rows committed under ``meta`` were built differently."""
        if meta is not None and self.config_of(meta) != self.meta:
            raise PolicyMismatch(
                f"the {self.name} projection was built under {self.config_of(meta)}, this "
                f"workspace uses {self.meta}: {self.mismatch_hint}")

    def check_store(self, store: ProjectionStore) -> None:
        """Raise PolicyMismatch if the committed rows were built under another configuration."""
        self.check_meta(store.meta(self.name))

    def apply_all(self, unit: Any, events: Sequence[LoggedEvent]) -> None:
        """Apply events in log order (events of other types are skipped)."""
        raise NotImplementedError

    def attach(self, log: EventLog, *, until: int | None = None) -> None:
        """Give the projection the log it folds, for what it must read besides the events it
        is handed (the identity fold: the undone merges). Most need nothing. ``until``: it
        replays the log as it stood at that position (decisions after it are not known)."""


def topic_of(projection: RowProjection) -> str:
    """``module:qualname`` of a projection's class: with its config, all the child needs."""
    kind = type(projection)
    return f"{kind.__module__}:{kind.__qualname__}"


def import_topic(topic: str) -> Any:
    """The object a ``module:qualname`` names (ImportError or AttributeError when none)."""
    module, _, qualname = topic.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class ProjectionSpec(msgspec.Struct, frozen=True, array_like=True):
    """How another process builds the same projection: its class and its configuration."""

    topic: str
    config: msgspec.Raw
    custom: bool = False
    """A user's projection (:class:`idstitch.projections.custom.Projection`), built with no
    arguments; ``config`` is then unused."""


def projection_from_spec(spec: ProjectionSpec) -> RowProjection:
    """Build a projection from its :class:`ProjectionSpec`."""
    found = import_topic(spec.topic)
    if not (isinstance(found, type) and issubclass(found, RowProjection)):
        raise TypeError(f"{spec.topic} is not a projection class")
    return found.from_config(msgspec.json.decode(spec.config, type=found.config_type))


class Registry:
    """The projections of one workspace, in the order they catch up."""

    def __init__(self, projections: Sequence[RowProjection]) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")
        kinds = [k for p in projections for k in p.kinds]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"row kinds must be unique across projections: {kinds}")
        self._projections = list(projections)
        self._by_name = {p.name: p for p in projections}
        self._row_types = {k: t for p in projections for k, t in p.row_types.items()}
        self._custom: dict[str, Projection] = {}

    def __iter__(self) -> Iterator[RowProjection]:
        return iter(self._projections)

    def __len__(self) -> int:
        return len(self._projections)

    def __getitem__(self, name: str) -> RowProjection:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> list[str]:
        """Every projection's name, in catch-up order."""
        return list(self._by_name)

    @property
    def kinds(self) -> list[str]:
        """Every row kind of every projection."""
        return [k for p in self._projections for k in p.kinds]

    def select(self, names: Sequence[str] | None) -> list[RowProjection]:
        """The named projections in registry order (all for None); unknown names: KeyError."""
        if names is None:
            return list(self._projections)
        unknown = set(names) - set(self._by_name)
        if unknown:
            raise KeyError(sorted(unknown))
        return [p for p in self._projections if p.name in names]

    @property
    def custom(self) -> dict[str, Projection]:
        """The custom projections (users' own), by name, in registration order: they follow
        the row projections (their Changes are built from those rows)."""
        return self._custom

    def add_custom(self, projection: Projection) -> None:
        """Register a custom projection (again: replace it); ValueError for a name a row
        projection has."""
        if projection.name in self._by_name:
            raise ValueError(f"{projection.name!r} is the name of a built-in projection")
        self._custom[projection.name] = projection

    def owner_of(self, kind: str) -> RowProjection:
        """The projection that owns a row kind (KeyError when none does)."""
        for projection in self._projections:
            if kind in projection.row_types:
                return projection
        raise KeyError(kind)

    @property
    def row_types(self) -> dict[str, type[Any]]:
        """Every row kind of every projection, and what its rows are."""
        return self._row_types

    def specs(self) -> list[ProjectionSpec]:
        """How another process builds the same set, one spec a projection."""
        return [ProjectionSpec(topic_of(p), msgspec.Raw(msgspec.json.encode(p.config())))
                for p in self._projections]

    def attach(self, log: EventLog, *, until: int | None = None) -> None:
        """Give every projection the log it folds (see :meth:`RowProjection.attach`)."""
        for projection in self._projections:
            projection.attach(log, until=until)

    @classmethod
    def from_specs(cls, specs: Sequence[ProjectionSpec]) -> Registry:
        """The registry :meth:`specs` describes."""
        return cls([projection_from_spec(spec) for spec in specs if not spec.custom])

