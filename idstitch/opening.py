"""Opening the store a command names, with the command line's guarantees (also those of
``idstitch serve``'s writer process, which reopens the store after it died).

- A read command (and ``rebuild``) needs an existing store: a SQLite path that does not exist
  is an error, and no file is created (no database, ``-wal``, ``-shm``, lock or lease file).
- A file that is not an idstitch store (not SQLite, an empty file, another application's
  SQLite database) is an error, checked without writing to it; only ``ingest``, ``demo`` and
  ``serve --create`` start a new store, in a new file or an empty one.
- ``--policy`` never rewrites a store outside ``rebuild``: a store whose projections were built
  under another ``anonymous_merge`` policy is refused, with the rebuild command that changes it,
  and a read does not record one on a store that records none (only a command that may start
  or rebuild a store does).
"""

from __future__ import annotations

import os
import sqlite3
from enum import Enum

import idstitch
from idstitch.adapters import sqlite_layout, urls
from idstitch.bootstrap import Clock, resolve_url
from idstitch.errors import InvalidCommand, StoreError
from idstitch.projections.identity import DEFAULT_POLICY, POLICIES, IdentityProjection, Policy
from idstitch.workspace import Workspace

SQLITE_HEADER = b"SQLite format 3\x00"
STORE_TABLES = frozenset({"idstitch_rows", "idstitch_tracking"})
"""The tables every idstitch SQLite store has (the projections'), besides its log's."""
LOG_TABLES = frozenset({"idstitch_events", "stored_events"})
"""The log's table, one of them: ``stored_events`` in a store made before the log's own tables
(upgraded when the store is opened, see idstitch.adapters.sqlite_layout)."""

STARTERS = "`idstitch ingest`, `idstitch demo` and `idstitch serve --create`"
"""The commands that may start a new store (:attr:`Access.CREATE`), as an error names them."""


class Access(Enum):
    """What a command may do to the store it opens."""

    QUERY = "query"
    """Only reads: needs an idstitch store of this version's layout; never creates, upgrades
    or otherwise rewrites one (catching up a lagging projection aside), never changes the
    policy."""
    READ = "read"
    """Needs an idstitch store (one of an earlier layout is upgraded when opened); never creates
    one, never changes the policy."""
    CREATE = "create"
    """May start a new store (a new or empty file); never changes an existing store's policy."""
    REBUILD = "rebuild"
    """Needs an idstitch store; may change its policy (a replay)."""
    FOLLOW = "follow"
    """Needs an idstitch store, which it keeps the projections of (``idstitch project``): as
    READ, and it may record the policy asked for on a store that records none."""


def sqlite_path(url: str) -> str | None:
    """The file a ``sqlite:///`` URL names, or None for other stores."""
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else None


def _tables(path: str) -> tuple[set[str], bool] | None:
    """The table names of a SQLite file, and whether its log is in the former table (see
    :mod:`idstitch.adapters.sqlite_layout`), read without changing anything beside it; None
    when they cannot be read that way but a WAL beside the file says SQLite has used it.

    Without a ``-wal`` file beside it, the database file holds everything, and ``immutable``
    reads it with no lock and no file created; with one (a process has the store open, or
    one was killed), a read-only connection reads through the WAL that is already there."""
    wal = os.path.exists(path + "-wal")
    uri = f"file:{_quote(os.path.abspath(path))}?mode={'ro' if wal else 'ro&immutable=1'}"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            former = sqlite_layout.former_sql(conn.execute(sqlite_layout.FORMER_SQL).fetchone())
        finally:
            conn.close()
    except sqlite3.Error as e:
        if wal:
            # A WAL a killed process left without its -shm index: only a read-write open
            # recovers it, as the store's own open does; that open's errors are the store's.
            return None
        raise StoreError(f"{path} is not an idstitch store: SQLite cannot read it ({e})") from e
    return {str(name) for (name,) in rows}, former


def _quote(path: str) -> str:
    # A URI filename: '?' and '#' would start the query or fragment, '%' an escape.
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def check_sqlite_file(path: str, access: Access) -> None:
    """Refuse what a command must not open; say what the file is and what to do."""
    if not os.path.lexists(path):
        if access is not Access.CREATE:
            raise StoreError(f"no idstitch store at {path}: the file does not exist (only "
                             f"{STARTERS} start a store)")
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise StoreError(f"cannot create a store at {path}: {folder} is not a directory")
        return
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory, not an idstitch store")
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from e
    if not header:
        if access is Access.CREATE:
            return  # an empty file is an empty SQLite database: a new store may start there
        raise StoreError(f"{path} is not an idstitch store: the file is empty (only "
                         f"{STARTERS} start a store in one)")
    if header != SQLITE_HEADER:
        raise StoreError(f"{path} is not an idstitch store: it is not a SQLite database")
    if not os.access(path, os.W_OK):
        # Every command opens the store as a workspace does, read-write: SQLite would then
        # read it read-only but create its -wal and -shm files as this user, and the owner
        # could no longer write the store.
        raise StoreError(f"cannot read {path} without writing to it: this user may not write "
                         "the file (run the command as the user that owns the store; to read "
                         "a read-only copy, such as a backup, copy it somewhere writable)")
    read = _tables(path)
    if read is None:
        if access is Access.QUERY:
            # Only an open that may write could read it, and such an open also upgrades a
            # store of an earlier layout: a read command does neither.
            raise StoreError(f"cannot read {path} without writing to it: SQLite could not "
                             "open it read-only through the -wal file beside it. A command "
                             "that writes (such as `idstitch upgrade`) recovers the file; "
                             "then read it again")
        return
    tables, former = read
    if former and access is Access.QUERY and tables >= STORE_TABLES:
        raise StoreError(f"{path} was written by an earlier idstitch: its log is in eventsourcing's "
                         "stored_events table, which this version moves to its own tables when "
                         "a command that writes opens the store (about 9 s a million events), "
                         "and a read command never rewrites a store. Upgrade it with `idstitch "
                         f"upgrade --db sqlite:///{path}` (and upgrade every program that "
                         "writes it: an earlier idstitch cannot read it afterwards)")
    if ((tables >= STORE_TABLES and tables & LOG_TABLES)
            or (access is Access.CREATE and not tables)):
        return
    if not tables:
        raise StoreError(f"{path} is not an idstitch store: an empty SQLite database (only "
                         f"{STARTERS} start a store in one)")
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreError(f"{path} is not an idstitch store: a SQLite database of another "
                     f"application (tables: {shown})")


def check_postgres_store(url: str) -> None:
    """Refuse a PostgreSQL database (or schema) that holds no idstitch store, before anything
    is created in it: a read command, or one that needs a store, never starts one there (a
    mistyped database or schema would otherwise get a new, empty store)."""
    # Here, not at the top: a SQLite user's command never loads psycopg.
    import psycopg

    from idstitch.adapters.postgres import conninfo_of
    from idstitch.adapters.postgres_log import translated

    target = urls.parse(url).postgres
    assert target is not None
    where = f"database {target.dbname}" + (f", schema {target.schema}" if target.schema else "")
    options = f"-c search_path={target.schema}" if target.schema else ""
    with translated("cannot connect to PostgreSQL"), psycopg.connect(
            conninfo_of(target), autocommit=True, connect_timeout=10, options=options) as conn:
        row = conn.execute("SELECT to_regclass('idstitch_tracking') IS NOT NULL "
                           "OR to_regclass('idstitch_events') IS NOT NULL").fetchone()
    if not (row and row[0]):
        raise StoreError(f"no idstitch store in {where} on {target.host}:{target.port} (only "
                         f"{STARTERS} start a store)")


def check_store(url: str | None, access: Access) -> str:
    """The URL resolved (None: ``IDSTITCH_DATABASE_URL``, else the default file), once the
    store it names is one that a command needing ``access`` may open (StoreError otherwise,
    nothing created)."""
    resolved = resolve_url(url)
    path = sqlite_path(resolved)
    if path is not None and path:
        check_sqlite_file(path, access)
    elif access is not Access.CREATE and resolved.split("://")[0] in urls.POSTGRES_SCHEMES:
        check_postgres_store(resolved)
    return resolved


def stored_policy(ws: Workspace) -> Policy | None:
    """The policy the store's identity projection was built under; None if never built."""
    return IdentityProjection.policy_of(ws.rows.meta(IdentityProjection.name))


def open_store(url: str | None, policy: str | None, access: Access,
               clock: Clock | None = None) -> Workspace:
    """Open the store for a command that needs ``access`` (see :class:`Access`); ``clock``
    stamps what it records (the workspace default, the system's UTC time, for None).

    A READ or CREATE open keeps the policy the store was built under: ``policy`` must match it,
    or the store must be new. A REBUILD open applies ``policy`` (a different one replays the
    identity projection as the store opens)."""
    if policy is not None and policy not in POLICIES:
        raise InvalidCommand("policy", f"must be one of {', '.join(POLICIES)}")
    resolved = check_store(url, access)
    if policy is None:
        return idstitch.open(resolved, clock=clock)
    ws = idstitch.open(resolved, clock=clock)
    try:
        built_under = stored_policy(ws)
    except BaseException:
        ws.close()
        raise
    if built_under == policy:
        return ws
    if built_under is None and access in (Access.QUERY, Access.READ):
        # A store that records no policy folds under the default, and recording one is a
        # change of the store that only a command that may write it makes (a user's later
        # plain open would stitch by what a read had asked for).
        if policy == DEFAULT_POLICY:
            return ws
        ws.close()
        raise InvalidCommand(
            "policy", f"the store records no anonymous_merge policy, so it is folded under "
                      f"{DEFAULT_POLICY}; a read never sets one: leave out --policy, or set it "
                      f"with `idstitch rebuild --policy {policy}`")
    ws.close()
    if built_under is not None and access is not Access.REBUILD:
        raise InvalidCommand(
            "policy", f"the store was built under anonymous_merge={built_under}; only "
                      f"`idstitch rebuild --policy {policy}` changes it (other commands never "
                      "rewrite the store): leave out --policy, or rebuild first")
    return idstitch.open(resolved, anonymous_merge=policy, clock=clock)


__all__ = ["Access", "check_sqlite_file", "check_store", "open_store", "sqlite_path",
           "stored_policy"]
