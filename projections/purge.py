"""A forget's purge of the built-in projections' rows in place (see
:mod:`idstitch.projections.identity.purge` for the identity rows and why the result equals a
rebuild's).

:func:`plan` runs before the forgotten person's keys are destroyed and proves the purge can be
exact; :func:`purge_attributes` and :func:`purge_identity` run after, and rewrite the rows of
the person's component in one transaction per projection, the identity rows last (a forget
whose process stopped in between still finds its person identified in the identity rows, and
the next open rebuilds: see ``idstitch.service.erasure.finish_forgets``). Both raise
:class:`~idstitch.projections.identity.purge.Fallback` when the purge cannot be proved exact
(a projection without a purge, a component that reaches outside itself): the caller then
rebuilds every projection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

from idstitch.domain.events import DECISIONS_STREAM, PersonsMerged
from idstitch.projections.base import Registry, RowProjection
from idstitch.projections.device_attributes import (
    ATTRIBUTES,
    AttributeEvent,
    DeviceAttributesProjection,
    DeviceAttributesRow,
    fold,
)
from idstitch.projections.identity.fold import IdentityProjection
from idstitch.projections.identity.purge import Component, Fallback, Rows, purged
from idstitch.projections.identity.purge import plan as plan_identity
from idstitch.projections.identity.rows import PERSON
from idstitch.projections.store import EventLog, ProjectionStore
from idstitch.projections.unit import encode_row

__all__ = ["Component", "Fallback", "plan", "purge_attributes", "purge_identity"]


def _identity(registry: Registry) -> IdentityProjection:
    projection = registry.owner_of(PERSON)
    if not isinstance(projection, IdentityProjection):
        raise Fallback(f"the persons are kept by {type(projection).__name__}, which has no purge")
    return projection


def plan(registry: Registry, store: ProjectionStore, log: EventLog,
         members: Iterable[str]) -> Component:
    """Prove that a purge in place of the forgotten family ``members`` (person ids) gives
    what a rebuild would (the identity rows caught up; the person's keys not yet destroyed).
    Fallback when it cannot."""
    identity = _identity(registry)
    for projection in registry:
        if projection is not identity and not isinstance(projection,
                                                         DeviceAttributesProjection):
            raise Fallback(f"the {projection.name} projection has no purge")
    return plan_identity(store, log, identity, members, store.position(identity.name))


def purge_attributes(registry: Registry, store: ProjectionStore, log: EventLog,
                     component: Component) -> list[str]:
    """Rewrite the attribute rows of the component's devices (after the keys were destroyed):
    the names of the projections rewritten (their cached rows are stale)."""
    identity = _identity(registry)
    done: list[str] = []
    for projection in [p for p in registry if p is not identity]:
        _attributes(cast(DeviceAttributesProjection, projection), store, log, component)
        done.append(projection.name)
    return done


def purge_identity(registry: Registry, store: ProjectionStore, log: EventLog,
                   component: Component) -> str:
    """Rewrite the component's identity rows (after the keys were destroyed; the last step of
    a purge): the projection's name. Fallback when events of the component were folded since
    :func:`plan`, or the erased events reach outside the component."""
    identity = _identity(registry)
    rows = purged(store, log, identity, component)
    with store.transaction(identity.name) as tx:
        _unchanged_since(log, component, tx.position)
        tx.write(rows, tx.position, _new_epoch(identity, tx.meta))
    return identity.name


def _new_epoch(projection: RowProjection, meta: str | None) -> str:
    """The meta with a new epoch: caches of the rows (another process's, the audit's) are
    stale, as after a rebuild."""
    return projection.stored_meta(0, meta)


def _unchanged_since(log: EventLog, component: Component, position: int) -> None:
    """Fallback if an event of the component, or an explicit merge naming one of its
    persons, was folded after the plan's position (the replay did not see it)."""
    if position < component.until:
        raise Fallback("the identity rows went back (a reset) since the plan")
    if position == component.until:
        return
    if log.read_spans([(d, component.until + 1, position + 1) for d in sorted(component.devices)]):
        raise Fallback("events of the component were recorded since the plan")
    for _, ev in log.read_spans([(DECISIONS_STREAM, component.until + 1, position + 1)],
                                frozenset({PersonsMerged})):
        assert isinstance(ev, PersonsMerged)
        if ev.primary in component.persons or ev.secondary in component.persons:
            raise Fallback("an explicit merge of the component was recorded since the plan")


def _attributes(projection: DeviceAttributesProjection, store: ProjectionStore, log: EventLog,
                component: Component) -> None:
    """Refold the attribute rows of the component's devices from their (now erased) events,
    as of the projection's own position: a device's attributes depend on its events alone."""
    devices: Sequence[str] = sorted(component.devices)
    with store.transaction(projection.name) as tx:
        at = tx.position
        refolded: dict[str, DeviceAttributesRow] = {}
        for pos, ev in log.read_spans([(d, 1, at + 1) for d in devices],
                                      projection.event_types):
            refolded[ev.device_id] = fold(refolded.get(ev.device_id), cast(AttributeEvent, ev),
                                          pos)
        rows: Rows = {(ATTRIBUTES, d): None for d in devices}
        rows.update({(ATTRIBUTES, d): encode_row(r) for d, r in refolded.items()})
        stored = tx.get_many(ATTRIBUTES, list(devices))
        changed = {k: v for k, v in rows.items() if v != stored.get(k[1])}
        tx.write(changed, at, _new_epoch(projection, tx.meta))
