"""Projection leases: which process folds a projection now.

Several processes writing one store (two API nodes, two ingests) each catch up after their
writes; had they all folded the same events, every commit by one would throw away the others'
folds. A catch-up therefore first takes the projection's lease (:class:`Leases`, where the
store has them: a PostgreSQL advisory lock, a ``flock`` beside a SQLite file); one that finds
it taken asks the holder to commit what it needs and waits (:func:`await_holder`). The runner
(:mod:`idstitch.projections.runner`) decides when.
"""

from __future__ import annotations

import time
from typing import Protocol, cast, runtime_checkable

from idstitch.projections.store import ProjectionStore

STALL_SECONDS = 10.0
"""A lease holder whose committed position has not moved for this long while a catch-up waits
for it is taken for stuck: the catch-up folds without the lease."""
WAIT_PAUSE_MAX = 0.02
"""How long a waiting catch-up sleeps between looks at the committed position, at most."""


@runtime_checkable
class Leases(Protocol):
    """A projection store that can tell processes apart: who folds a projection now."""

    def try_lease(self, name: str) -> bool:
        """Take the projection's lease unless another holder has it, without waiting."""
        ...

    def release_lease(self, name: str) -> None:
        """Give the lease back."""
        ...

    def want(self, name: str, position: int) -> None:
        """Ask the holder to commit the projection up to ``position`` (a hint it polls)."""
        ...

    def wanted(self, name: str) -> int:
        """The furthest position asked for (0: none)."""
        ...


_HAS_LEASES: dict[type, bool] = {}


def leases_of(store: ProjectionStore) -> Leases | None:
    """The store's leases, or None where only one process can open it (memory)."""
    # An isinstance check against a runtime Protocol inspects every member each time (about
    # a sixth of a command on the memory store, which asks twice a command); whether a class
    # has them does not change, so it is asked once per class.
    has = _HAS_LEASES.get(type(store))
    if has is None:
        has = _HAS_LEASES[type(store)] = isinstance(store, Leases)
    return cast(Leases, store) if has else None


def await_holder(name: str, store: ProjectionStore, leases: Leases, until: int
           ) -> tuple[int | None, bool]:
    """Another process holds the lease: wait until it has committed ``until``; (the position
    then, False). (None, whether this process now holds the lease) when it should fold the
    rest itself: the lease came free, or its holder made no progress for STALL_SECONDS."""
    leases.want(name, until)
    last, since, pause = -1, time.monotonic(), 0.001
    while True:
        position = store.position(name)
        if position >= until:
            return position, False
        if leases.try_lease(name):
            return None, True
        if position != last:
            last, since = position, time.monotonic()
        elif time.monotonic() - since > STALL_SECONDS:
            return None, False
        time.sleep(pause)
        pause = min(pause * 2, WAIT_PAUSE_MAX)
