"""Stores (memory, SQLite, PostgreSQL), the msgspec codec, and the URL that picks them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from idstitch.adapters.eventlog import DeviceLog
from idstitch.adapters.memory import MemoryProjectionStore
from idstitch.domain.errors import InvalidCommand
from idstitch.projections.store import ProjectionStore

DEFAULT_URL = "sqlite:///idstitch.db"
ENV_URL = "IDSTITCH_DATABASE_URL"


class ClosableStore(ProjectionStore, Protocol):
    """A projection store that can be closed."""

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class Stores:
    """The event log and the projection store of one workspace, in one database."""

    url: str
    log: DeviceLog
    rows: ClosableStore
    shared_url: str | None = None
    """A URL that opens this same store from another process (whatever its working directory),
    or None when no other process can (``memory:``)."""

    def close(self) -> None:
        """Close both."""
        self.log.close()
        self.rows.close()


def resolve_url(url: str | None) -> str:
    """The explicit url, else ``IDSTITCH_DATABASE_URL``, else ``./idstitch.db``."""
    return url or os.environ.get(ENV_URL) or DEFAULT_URL


def open_stores(url: str | None = None) -> Stores:
    """Build the stores a URL names: ``memory:``, ``sqlite:///path``, ``postgresql://...``.

    SQLite paths follow SQLAlchemy's convention: ``sqlite:///rel/path.db`` is relative to the
    working directory, ``sqlite:////abs/path.db`` absolute.
    """
    url = resolve_url(url)
    if url in ("memory:", "memory://"):
        return Stores(url, DeviceLog({"PERSISTENCE_MODULE": "eventsourcing.popo"}),
                      MemoryProjectionStore())
    if url.startswith("sqlite:///"):
        from idstitch.adapters.sqlite import SqliteProjectionStore

        path = url[len("sqlite:///"):]
        if not path:
            raise InvalidCommand("url", "a sqlite URL needs a file path: sqlite:///path/to/file.db")
        log = DeviceLog({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path,
                         "SQLITE_LOCK_TIMEOUT": "30"})
        try:
            rows = SqliteProjectionStore(path)
        except BaseException:
            log.close()
            raise
        log.fast = rows
        return Stores(url, log, rows, f"sqlite:///{os.path.abspath(path)}")
    if url.startswith(("postgresql://", "postgres://")):
        from idstitch.adapters.postgres import PostgresProjectionStore, ddl_lock

        parts = urlsplit(url)
        query = parse_qs(parts.query)
        schema = query.get("schema", [None])[0]
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
        }
        if schema:
            env["POSTGRES_SCHEMA"] = schema
        # Both stores connect with the same explicit parts, so libpq's own defaults can never
        # send the projection rows to another database than the events.
        conninfo = " ".join(f"{k}='{v}'" for k, v in (
            ("host", env["POSTGRES_HOST"]), ("port", env["POSTGRES_PORT"]),
            ("dbname", env["POSTGRES_DBNAME"]), ("user", env["POSTGRES_USER"]),
            ("password", env["POSTGRES_PASSWORD"])) if v)
        # The projection store opens first: it creates the schema the event table goes into.
        with ddl_lock(conninfo):
            pg_rows = PostgresProjectionStore(conninfo, schema=schema)
            try:
                log = DeviceLog(env, fast=pg_rows)
            except BaseException:
                pg_rows.close()
                raise
        return Stores(url, log, pg_rows, url)
    raise InvalidCommand("url", f"unsupported store URL {url!r}: use memory:, sqlite:///path "
                                "or postgresql://user:pw@host:port/db")
