"""Which processes keep a custom projection, on PostgreSQL (see
:meth:`~idstitch.projections.custom.CustomTables.keep`): a shared advisory lock per projection
kept, in a session of its own held until :meth:`AdvisoryHolds.close`; a forget's look takes the
same key exclusively, on the session it drops tables with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from idstitch.adapters.postgres_log import translated
from psycopg import sql

KEEP_KEY = "hashtextextended('idstitch keep ' || current_schema() || ' ' || %s, 0)"
"""The advisory lock key that says a process keeps a custom projection (per schema, as the
projection leases' keys are)."""


class AdvisoryHolds:
    """The keep holds of one workspace's custom projections on one PostgreSQL schema."""

    def __init__(self, conninfo: str, schema: str | None) -> None:
        self._conninfo, self._schema = conninfo, schema
        self._keeper: psycopg.Connection[Any] | None = None
        self._kept: set[str] = set()

    def keep(self, name: str) -> None:
        """Hold the projection's keep key shared (a lost session loses them: a forget elsewhere
        may then drop the tables, which this process builds afresh at its next catch-up, where
        it calls this again)."""
        with translated("cannot hold a custom projection's keep key"):
            if self._keeper is None or self._keeper.closed:
                self._keeper = psycopg.connect(self._conninfo, autocommit=True,
                                               connect_timeout=10)
                if self._schema:
                    self._keeper.execute(sql.SQL("SET search_path TO {}").format(
                        sql.Identifier(self._schema)))
                self._kept.clear()
            if name not in self._kept:
                self._keeper.execute(f"SELECT pg_advisory_lock_shared({KEEP_KEY})", (name,))
                self._kept.add(name)

    @contextmanager
    def unkept(self, name: str, connection: Callable[[], psycopg.Connection[Any]]
               ) -> Iterator[bool]:
        """The keep key taken exclusively on ``connection``'s session, without waiting: True
        while held (nobody keeps the projection)."""
        with translated("cannot look at a custom projection's keep key"):
            conn = connection()
            row = conn.execute(f"SELECT pg_try_advisory_lock({KEEP_KEY})", (name,)).fetchone()
        if row is None or not row[0]:
            yield False
            return
        try:
            yield True
        finally:
            with translated("cannot release a custom projection's keep key"):
                conn.execute(f"SELECT pg_advisory_unlock({KEEP_KEY})", (name,))

    def close(self) -> None:
        """Close the session, which releases the holds."""
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None
        self._kept.clear()


__all__ = ["KEEP_KEY", "AdvisoryHolds"]
