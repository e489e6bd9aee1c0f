"""At a forget: the custom projections in the database that this process does not keep.

A custom projection's rows are purged by whichever process folds it past the forget's
``PersonForgotten`` decision (its purge hook, or it is folded again from position 0). One that
is tracked in the database but registered in no process that runs (a projection retired, or
kept only by an `idstitch project` that is stopped) would keep the person's values for as long
as nobody registers it again; the forget cannot run a hook whose code it does not have.

So the forget waits for such projections to pass the decision (an `idstitch project` that
follows the log does, within moments), for as long as they make progress, and drops the tables
and tracking of those that do not: their rows are derived data, and a process that registers
the projection later builds it afresh from the log, where the person's values read erased
(:meth:`~idstitch.projections.custom_runner.CustomRunner.catch_up` rebuilds a registered
projection whose every version is gone). ``ShredReport.dropped`` names them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from idstitch.projections.custom import CustomTables

QUIET_SECONDS = 5.0
"""How long the projections behind the decision may make no progress before they are dropped."""
MOST_SECONDS = 60.0
"""How long a forget waits for them at most, progress or not."""
POLL_SECONDS = 0.1


def behind(tables: CustomTables, kept: Sequence[str], position: int) -> dict[str, int]:
    """The custom projections not in ``kept`` with a version tracked before ``position``, and
    the lowest position each is tracked at."""
    out: dict[str, int] = {}
    for name, tracked in tables.every():
        if name not in kept and tracked.position < position:
            out[name] = min(out.get(name, tracked.position), tracked.position)
    return out


def drop_unkept(tables: CustomTables, kept: Sequence[str], position: int, *,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Wait for the custom projections nobody here keeps to fold past the forget decision at
    ``position`` while they make progress (see the module), then drop every version of those
    still behind it; their names, sorted."""
    waiting = behind(tables, kept, position)
    start = progressed = clock()
    while waiting and clock() - progressed < QUIET_SECONDS and clock() - start < MOST_SECONDS:
        sleep(POLL_SECONDS)
        now = behind(tables, kept, position)
        if any(at > waiting.get(name, at) for name, at in now.items()) or len(now) < len(waiting):
            progressed = clock()
        waiting = now
    for name in sorted(waiting):
        for version in {t.version for n, t in tables.every() if n == name}:
            tables.drop(name, version)
    return sorted(waiting)


__all__ = ["MOST_SECONDS", "QUIET_SECONDS", "behind", "drop_unkept"]
