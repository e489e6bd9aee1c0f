"""Replay: projections brought from their position (0 after a reset) to a given one, side by side.

A replay reads only each projection's own event types, so two projections can replay the same
log side by side in two processes, each decoding only its own events; within one process they
advance together a page of positions at a time (:data:`idstitch.projections.runner.PAGE_SIZE`),
each folding in a :class:`~idstitch.projections.runner.Stretch` of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from idstitch.projections import runner
from idstitch.projections.base import RowProjection
from idstitch.projections.runner import RunnerStates, Stretch
from idstitch.projections.store import EventLog, ProjectionStore

REPLAY_BATCH = 200_000
"""Events per transaction at most during a replay (a rebuild)."""


def replay(
    projections: Sequence[RowProjection],
    states: RunnerStates,
    log: EventLog,
    store: ProjectionStore,
    until: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Bring projections to position ``until``, each reading only its own events.

    They advance together, a page of positions at a time, so ``progress`` (called with the
    positions covered since its last call) counts the log once, however many projections
    replay. Each commits every REPLAY_BATCH of its events, when its working set is full, and
    at the end: a replay starts with an empty cache, so a row is rewritten once per commit.
    """
    try:
        _replay(projections, states, log, store, until, progress)
    except BaseException:
        # A callback, Ctrl-C or the store raising between a fold and its commit leaves
        # uncommitted rows in the caches: drop them all, so the next catch-up folds from
        # what is committed (it always is consistent: rows and position commit together).
        for projection in projections:
            states.forget(projection.name)
        raise


def _replay(
    projections: Sequence[RowProjection], states: RunnerStates, log: EventLog,
    store: ProjectionStore, until: int, progress: Callable[[int], None] | None,
) -> None:
    """replay's loop (replay drops the caches when it raises)."""
    stretches = [Stretch(p, states.of(p), log, store) for p in projections]
    reached = reported = min([s.start for s in stretches], default=until)
    while True:
        while reached < until:
            window = min(until, reached + runner.PAGE_SIZE)
            for stretch in stretches:
                stretch.fold(REPLAY_BATCH, until=window)
                if stretch.pending >= REPLAY_BATCH or stretch.full:
                    stretch.commit()
            reached = min(s.position for s in stretches)
            if progress is not None and reached > reported:
                # Never counted twice: after a commit conflict, positions can go back.
                progress(reached - reported)
                reported = reached
        # Every stretch commits (no short cut): each one's position is then the store's.
        committed = [s.commit() for s in stretches]
        if all(committed):
            return
        # Somebody else committed one of them meanwhile: go on from where they left it.
        reached = min(s.position for s in stretches)
