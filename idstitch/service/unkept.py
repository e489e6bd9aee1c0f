"""At a forget: the custom projections in the database that no process keeps.

A custom projection's rows are purged by whichever process folds it past the forget's
``PersonForgotten`` decision (its purge hook, or it is folded again from position 0). A process
that registers a projection keeps it until it closes, and says so in the database
(:meth:`~idstitch.projections.custom.CustomTables.keep`: a shared ``flock`` beside a SQLite
file, a shared advisory lock on PostgreSQL); its next catch-up honours the forget. One that no
open process keeps (retired, or kept only by an `idstitch project` that is stopped) would keep
the person's values for as long as nobody registers it again, and the forget cannot run a hook
whose code it does not have.

So the forget drops the tables and tracking of each version of such a projection that has not
folded past the decision and was made before it (a version made after it never read the
person's values), holding the projection's keep key exclusively meanwhile, so that no process
registers it halfway. Their rows are derived data: a process that registers the projection
later builds it afresh from the log, where the person's values read erased.
``ShredReport.dropped`` names them.
"""

from __future__ import annotations

from collections.abc import Sequence

from idstitch.projections.custom import CustomTables


def drop_unkept(tables: CustomTables, kept: Sequence[str], position: int) -> list[str]:
    """Drop the versions of the custom projections no process keeps (``kept``: this
    process's) that may hold values of the person forgotten by the decision at ``position``;
    the names of those with a version dropped, sorted."""
    dropped: list[str] = []
    for name in sorted({n for n, _ in tables.every() if n not in kept}):
        with tables.unkept(name) as free:
            if not free:
                continue  # a keeper's next catch-up honours the forget
            # Read again under the key: what a keeper did before it let go counts.
            behind = [t.version for n, t in tables.every()
                      if n == name and t.position < position
                      and (t.made_at is None or t.made_at < position)]
            for version in behind:
                tables.drop(name, version)
            if behind:
                dropped.append(name)
    return dropped


__all__ = ["drop_unkept"]
