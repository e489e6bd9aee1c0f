"""Projection rows in the PostgreSQL database that holds the events, through a psycopg pool."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from idstitch.adapters.sqlstore import Cursor, SqlProjectionStore
from idstitch.domain.errors import StoreError
from psycopg_pool import ConnectionPool


class PostgresProjectionStore(SqlProjectionStore):
    """``SELECT ... FOR UPDATE`` on the tracking row serialises catch-ups across processes."""

    param = "%s"
    blob = "BYTEA"
    lock_suffix = " FOR UPDATE"

    def __init__(self, conninfo: str, schema: str | None = None, pool_size: int = 4) -> None:
        kwargs: dict[str, Any] = {}
        if schema:
            kwargs["options"] = f"-c search_path={schema}"
        try:
            if schema:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, kwargs=kwargs,
                                        open=True, timeout=10)
            with self._pool.connection() as conn:
                for ddl in self.schema():
                    conn.execute(ddl)
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL projection store: {e}") from e

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Cursor]:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as e:
            raise StoreError(f"PostgreSQL is unavailable: {e}") from e

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()
