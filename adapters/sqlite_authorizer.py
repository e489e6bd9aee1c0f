"""The SQLite authorizer that keeps a custom projection's statements to its own tables (see
:mod:`idstitch.adapters.projection_sql` for the namespaces, and what each store enforces)."""

from __future__ import annotations

import sqlite3

_TABLE_ACTIONS = {
    sqlite3.SQLITE_READ: 0, sqlite3.SQLITE_UPDATE: 0, sqlite3.SQLITE_INSERT: 0,
    sqlite3.SQLITE_DELETE: 0, sqlite3.SQLITE_CREATE_TABLE: 0, sqlite3.SQLITE_DROP_TABLE: 0,
    sqlite3.SQLITE_CREATE_INDEX: 1, sqlite3.SQLITE_DROP_INDEX: 1, sqlite3.SQLITE_CREATE_VIEW: 0,
    sqlite3.SQLITE_DROP_VIEW: 0, sqlite3.SQLITE_CREATE_TRIGGER: 1, sqlite3.SQLITE_DROP_TRIGGER: 1,
    sqlite3.SQLITE_ALTER_TABLE: 1, sqlite3.SQLITE_ANALYZE: 0, sqlite3.SQLITE_REINDEX: 0,
}
"""Actions on a table, and which argument names it."""
_FREE = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_READS = {sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION,
          sqlite3.SQLITE_RECURSIVE}




class Authorizer:
    """The connection's one authorizer: while a projection's statement is prepared, it admits
    only that projection's namespace (and reads of the schema); otherwise (idstitch's own
    statements) everything.

    Installed once: SQLite expires every prepared statement when the authorizer is set, and
    authorizes a statement when it is prepared, not each time it runs. So a statement keeps the
    verdict it was prepared under; the texts of idstitch's statements and of each scope's (a
    comment naming the projection's prefix, read-only or not, and the longer prefixes it
    must not reach, ends every one) never coincide."""

    def __init__(self) -> None:
        self.scope: tuple[str, bool, tuple[str, ...]] | None = None
        """(the namespace's prefix, whether writes are allowed, the longer prefixes of other
        projections that begin with it), or None: idstitch itself."""

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None,
                 trigger: str | None) -> int:
        if self.scope is None:
            return sqlite3.SQLITE_OK
        prefix, writable, foreign = self.scope
        if not writable and action not in _READS:
            return sqlite3.SQLITE_DENY
        if action in _FREE:
            return sqlite3.SQLITE_OK
        if db not in (None, "main"):
            return sqlite3.SQLITE_DENY
        index = _TABLE_ACTIONS.get(action)
        if index is None:
            return sqlite3.SQLITE_DENY  # transactions, PRAGMA, ATTACH, temporary objects
        table = (arg1, arg2)[index] or ""
        # The schema table: SQLite itself writes it for CREATE and DROP (and refuses a
        # statement's own writes to it, PRAGMA writable_schema being refused here).
        if (table.startswith(prefix) and not table.startswith(foreign)) or table in (
                "sqlite_master", "sqlite_schema"):
            return sqlite3.SQLITE_OK
        # Inside a trigger too: its body runs with the statement that fired it, and must reach
        # no more than that statement may.
        return sqlite3.SQLITE_DENY


__all__ = ["Authorizer"]
