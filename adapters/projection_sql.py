"""Custom projections' tables in the workspace's database: namespaces, isolation, tracking.

Every version of a custom projection gets its own table namespace: the names its SQL gives
(``push_reachable``) are rewritten to names of that version (``p_push_reachable_v1_push_reachable``
on SQLite; ``v1_push_reachable`` in the projection's own schema ``<schema>_p_push_reachable`` on
PostgreSQL). A new version is then built beside the live one, and readers keep the old tables
until the swap. The rewrite is a tokenizer, not a parser: a word (or a double-quoted name) equal
to one of the projection's tables is renamed wherever it stands, consistently, string literals
and comments excepted; ``?`` placeholders become ``%s`` on PostgreSQL. Values reach SQL only as
parameters.

Isolation from the built-in tables (and from other projections):

- SQLite (file and ``memory:``): an authorizer callback refuses, while a projection's SQL runs,
  every access to a table outside its namespace (reads of ``sqlite_master`` excepted),
  transaction control, PRAGMA, ATTACH and temporary objects. Enforced.
- PostgreSQL: the projection's statements run with ``search_path`` set to its own schema, so an
  unqualified name does not reach a built-in table (unless its SQL changes the search path
  through a function such as ``set_config``: not refused). A schema-qualified name
  (``public.idstitch_rows``) is *not* refused: the connection's role can read the whole
  database. Give projections a role of their own if that matters.

Tracking (``idstitch_custom``: name, version, position, live) sits beside the tables and moves
in the same transaction as the projection's rows. ``idstitch_custom_made`` (name, version,
made_at) holds the head of the log when a version's tables were made (see
:attr:`idstitch.projections.custom.Tracked.made_at`): a table of its own, so that a store it was
added to stays usable by an idstitch from before it (which never reads it; a version tracked
without a row there is "not known", as every version of a store from before it is). Such an
idstitch folding the same store at the same time as this one does not forget a version's
made_at when it folds it, as this one does when it cannot vouch for its keys.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from idstitch.adapters import urls
from idstitch.domain.errors import InvalidCommand, StoreError
from idstitch.projections.custom import CustomTables

T = TypeVar("T")
LIVE_TRIES = 3
"""How many times a ``projection_db`` read is tried on the tables live at the time (see
:class:`LiveDatabase`): another process swapping versions twice under one read is rare."""

_TOKENS = re.compile(
    # PostgreSQL's E'...' (backslash escapes) and $tag$...$tag$ strings are strings too:
    # nothing in them is a table name, a placeholder or a '%' for the driver.
    r"[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\$([A-Za-z_][A-Za-z0-9_]*|)\$.*?\$\1\$"
    r"|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|[A-Za-z_][A-Za-z0-9_$]*|\s+|.",
    re.S)
_CREATES = {"table", "index", "view", "trigger"}
_RUNNERS = {"begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release",
            "set", "reset", "discard", "prepare", "deallocate", "listen", "unlisten", "notify",
            "do", "call", "copy", "vacuum", "attach", "detach", "pragma"}
"""First words of statements a projection may not run: its transaction and session are the
runner's (a COMMIT mid-batch would split its rows from its tracking; on PostgreSQL a COMMIT
then a write would leave a read-only reader's transaction), and code blocks, COPY and the like
reach past its tables."""
_SKIPPED = {"temp", "temporary", "unique", "if", "not", "exists"}


class Tracked:
    """One tracked version of a custom projection."""

    __slots__ = ("live", "made_at", "position", "version")

    def __init__(self, version: int, position: int, live: bool, made_at: int | None = None
                 ) -> None:
        self.version, self.position, self.live = version, position, live
        self.made_at = made_at

    def __repr__(self) -> str:
        return (f"Tracked(version={self.version}, position={self.position}, live={self.live}, "
                f"made_at={self.made_at})")


class Namespace:
    """The names of one version of a projection, and the rewrite of its SQL."""

    def __init__(self, prefix: str, tables: set[str], postgres: bool,
                 foreign: tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        self.foreign = foreign
        """Longer prefixes of other projections that begin with this one (SQLite, where a
        prefix is not unique): names that begin with them are not this namespace's."""
        self.tables = tables
        """The projection's own names (lower case, as its SQL gives them)."""
        self._postgres = postgres
        self._rewritten: dict[str, str] = {}
        """Statements already rewritten (a handler runs the same few over and over)."""

    def rewrite(self, sql: str) -> str:
        """The statement with the projection's names in its namespace."""
        try:
            return self._rewritten[sql]
        except (KeyError, TypeError):
            pass
        if not isinstance(sql, str):
            raise InvalidCommand("sql", f"must be a string, got {type(sql).__name__}")
        known = len(self.tables)
        out = self._rewrite(sql)
        if len(self.tables) != known:
            self._rewritten.clear()  # a new table: statements seen before may name it
        elif len(self._rewritten) < 1_000:
            self._rewritten[sql] = out
        return out

    def _rewrite(self, sql: str) -> str:
        tokens = [m.group() for m in _TOKENS.finditer(sql)]
        words = [(i, t.lower()) for i, t in enumerate(tokens)
                 if t[0].isalpha() or t[0] in '_"']
        _one_statement(tokens, words, postgres=self._postgres)
        # CREATE [TEMP] [UNIQUE] TABLE|INDEX|VIEW|TRIGGER [IF NOT EXISTS] name: a new name of ours.
        for n, (_, word) in enumerate(words):
            if word == "create":
                rest = [w for _, w in words[n + 1:]]
                while rest and rest[0] in _SKIPPED:
                    rest.pop(0)
                if len(rest) >= 2 and rest[0] in _CREATES:
                    tail = [w for w in rest[1:] if w not in _SKIPPED]
                    if tail:
                        self.tables.add(tail[0].strip('"').replace('""', '"'))
        out: list[str] = []
        for token in tokens:
            first = token[0]
            if self._postgres and ((first in "'$" and len(token) > 1)
                                   or (first in "Ee" and token[1:2] == "'")):
                # psycopg reads every '%' of the text as the start of a placeholder, in
                # string literals too: doubled, it is the '%' the string holds.
                token = token.replace("%", "%%")
            elif first.isalpha() or first == "_":
                if token.lower() in self.tables:
                    token = self.quoted(token.lower())
            elif first == '"':
                inner = token[1:-1].replace('""', '"')
                if inner.lower() in self.tables:
                    token = self.quoted(inner.lower())
                if self._postgres:
                    token = token.replace("%", "%%")  # as in a string: the driver's reading
            elif token.startswith(("--", "/*")):
                token = " "
            elif self._postgres and token == "?":
                token = "%s"
            elif self._postgres and token == "%":
                token = "%%"
            out.append(token)
        return "".join(out)

    def quoted(self, table: str) -> str:
        """The double-quoted name of one of the projection's tables in this namespace."""
        return '"' + (self.prefix + table).replace('"', '""') + '"'


def _one_statement(tokens: list[str], words: list[tuple[int, str]], *, postgres: bool) -> None:
    """Refuse what a projection's SQL may not be: several statements (every store the same:
    SQLite's driver refuses them, PostgreSQL's simple protocol would run them all), or a
    statement of the runner's (:data:`_RUNNERS`)."""
    if not postgres and [w for _, w in words[:4] if w not in _SKIPPED][:2] == [
            "create", "trigger"]:
        # A SQLite trigger's body is statements between BEGIN and END: the driver still
        # refuses anything after the one CREATE TRIGGER, and the authorizer checks the body.
        # (PostgreSQL's trigger runs a function: one statement, no exception.)
        return
    ended = False
    for token in tokens:
        if token == ";":
            ended = True
        elif ended and not token.isspace() and not token.startswith(("--", "/*")):
            raise InvalidCommand("sql", "one statement at a time: a projection's SQL may not "
                                        "hold several")
    if words and words[0][1] in _RUNNERS:
        raise InvalidCommand("sql", f"{words[0][1].upper()} is not allowed in a projection's "
                                    "SQL: its transaction and session are the runner's")


def check_params(params: Any) -> tuple[Any, ...]:
    """Parameters as a tuple (a list or tuple given; anything else is an InvalidCommand)."""
    if not isinstance(params, (tuple, list)):
        raise InvalidCommand("params", f"must be a tuple or list of values, got "
                                       f"{type(params).__name__}")
    return tuple(params)


class Database:
    """A ProjectionDB: one projection version's statements on a connection (SQLite or
    PostgreSQL), through its namespace, inside its store's transaction."""

    def __init__(self, namespace: Namespace, run: Callable[[str, tuple[Any, ...], bool], Any]
                 ) -> None:
        self.namespace = namespace
        self._run = run
        self._rewritten = namespace._rewritten  # (cleared in place, never replaced)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement; ``?`` placeholders."""
        # A handler runs the same few statements with a tuple, Change after Change: those
        # skip two calls (the namespace's cache read here, the tuple taken as it is).
        try:
            statement = self._rewritten[sql]
        except (KeyError, TypeError):
            statement = self.namespace.rewrite(sql)
        self._run(statement, params if type(params) is tuple else check_params(params), False)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one query; its rows as tuples."""
        rows: list[tuple[Any, ...]] = self._run(self.namespace.rewrite(sql),
                                                check_params(params), True)
        return rows


class LiveDatabase(Database):
    """``projection_db``: the live version's tables, found again when they are gone because
    another process swapped in a new version or rebuilt the projection since this reader
    found them (a read then fails on a missing table: it is tried once more on the tables
    live now, the statement rewritten for them)."""

    def __init__(self, resolve: Callable[[], Database]) -> None:
        self._resolve = resolve
        self._take(resolve())

    def _take(self, db: Database) -> None:
        self.namespace, self._run, self._rewritten = db.namespace, db._run, db._rewritten

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement; ``?`` placeholders."""
        self._live(lambda: Database.execute(self, sql, params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one query; its rows as tuples."""
        return self._live(lambda: Database.query(self, sql, params))

    def _live(self, call: Callable[[], T]) -> T:
        for _ in range(LIVE_TRIES - 1):
            try:
                return call()
            except StoreError as lost:
                # Its connection lost (PostgreSQL restarted, say): found again on a new one
                # for the next call, which is still told of this one's failure.
                with contextlib.suppress(Exception):  # still unreachable: the next call tries
                    self._take(self._resolve())
                raise lost
            except InvalidCommand as refused:
                try:
                    live = self._resolve()
                except Exception:
                    raise refused from refused.__cause__  # what the caller asked failed
                if (live.namespace.prefix, live.namespace.tables) == (
                        self.namespace.prefix, self.namespace.tables):
                    raise  # the same tables: the statement's own fault
                self._take(live)
        return call()


class CustomTransaction:
    """One custom projection's transaction: the position it starts from, its database, and the
    position it moves to (None until the batch advances it)."""

    def __init__(self, position: int, db: Database, made_at: int | None = None) -> None:
        self.position = position
        self.db = db
        self.made_at = made_at
        self.moved_to: int | None = None
        self.unmarked = False
        """Whether made_at is forgotten when the transaction commits."""

    def advance(self, position: int) -> None:
        """Commit the tracking at ``position`` with the rows."""
        self.moved_to = position

    def unmark(self) -> None:
        """Forget the version's made_at with the rows."""
        self.unmarked = True


def connect(url: str) -> CustomTables:
    """The custom projections' tables of the store a URL names (connected on first use), read
    by the one URL parser the stores use, so both connect to the same place."""
    parsed = urls.parse(url)
    if parsed.postgres is not None:
        from idstitch.adapters.projection_pg import PostgresTables

        return PostgresTables(parsed.postgres)
    from idstitch.adapters.projection_sqlite import SqliteTables

    return SqliteTables(parsed.path if parsed.path is not None else ":memory:")
