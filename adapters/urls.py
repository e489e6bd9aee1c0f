"""Store URLs, parsed in one place: ``memory:``, ``sqlite:///path``, ``postgresql://...``.

Every part of a URL is judged here, before anything connects, and whatever the URL cannot mean
is an ``InvalidCommand("url", reason)``: a URL that would silently connect somewhere else than
it says (the OS user because a ``%00`` cut the user name short, ``public`` because the schema
was empty, port 5432 because the port was 0), open a store that cannot work (an in-memory
SQLite database, which each connection would see empty), write into PostgreSQL's own schemas,
or ignore what the caller asked for (a parameter idstitch does not know, such as ``sslmode``,
would otherwise be dropped without a word). No psycopg import: SQLite users do not pay for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from idstitch.domain.errors import InvalidCommand

MEMORY_URLS = ("memory:", "memory://")
SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
DEFAULT_PORT = 5432
POSTGRES_PARAMETERS = frozenset({"schema"})
"""The query parameters a PostgreSQL URL may carry; any other is refused, by name."""
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""Schema names a URL may give: PostgreSQL's unquoted identifiers, lower case, so that the
quoted name (eventsourcing's tables) and the search_path setting name the same schema, and no
text of the URL ever reaches SQL or the server's options unquoted."""
SYSTEM_SCHEMAS = re.compile(r"pg_.*|information_schema")
"""PostgreSQL's own schemas (``pg_catalog``, ``pg_toast``, every ``pg_`` name is reserved)."""


def url_error(reason: str) -> InvalidCommand:
    """The one error of a URL."""
    return InvalidCommand("url", reason)


@dataclass(frozen=True)
class PostgresTarget:
    """Where a PostgreSQL URL points, each part decoded and checked."""

    host: str
    port: int
    dbname: str
    user: str
    password: str
    schema: str | None


@dataclass(frozen=True)
class StoreUrl:
    """A parsed store URL: ``kind`` says which of the other fields applies."""

    kind: str
    """``memory``, ``sqlite`` or ``postgres``."""
    path: str | None = None
    """The SQLite file (as written: relative to the working directory unless absolute)."""
    postgres: PostgresTarget | None = None


def parse(url: str) -> StoreUrl:
    """Parse and check a store URL (see the module docstring); InvalidCommand("url") if bad."""
    if url in MEMORY_URLS:
        return StoreUrl("memory")
    if url.startswith(SQLITE_PREFIX):
        return StoreUrl("sqlite", path=_sqlite_path(url[len(SQLITE_PREFIX):]))
    scheme, sep, _ = url.partition("://")
    if sep and scheme in POSTGRES_SCHEMES:
        return StoreUrl("postgres", postgres=_postgres(url))
    raise url_error(f"unsupported store URL {redacted(url)!r}: use memory:, sqlite:///path "
                    "or postgresql://user:pw@host:port/db")


def _sqlite_path(path: str) -> str:
    if not path:
        raise url_error("a sqlite URL needs a file path: sqlite:///path/to/file.db")
    if "#" in path.partition("?")[0]:
        raise url_error("a sqlite URL takes no fragment ('#' given): the path ends the URL")
    if "?" in path:
        names = [name for name, _ in parse_qsl(path.partition("?")[2].partition("#")[0],
                                               keep_blank_values=True)]
        raise url_error(f"a sqlite URL takes no parameters ({', '.join(map(repr, names)) or '?'} "
                        "given): the path ends the URL")
    if ":memory:" in path or path.startswith("file:"):
        # Each connection would open an empty database of its own (the events and the rows
        # are two), or a file: URI would be read as a URI by one and a file name by the other.
        raise url_error(f"{path!r} is not a file: a store must be one that every connection "
                        "opens; use memory: for a store that lives in this process")
    return path


def _decoded(part: str, what: str) -> str:
    """A percent-decoded part of a PostgreSQL URL: UTF-8 text without NUL (libpq's conninfo
    ends at a NUL: the rest, password included, would be dropped without a word)."""
    try:
        value = unquote(part, errors="strict")
    except UnicodeDecodeError:
        raise url_error(f"the {what} is not valid UTF-8 once percent-decoded") from None
    if "\x00" in value:
        raise url_error(f"the {what} holds a NUL (%00)")
    return value


def _postgres(url: str) -> PostgresTarget:
    parts = urlsplit(url)
    if parts.fragment:
        raise url_error("has a fragment (#...): write a # in a password as %23")
    try:
        port = parts.port
    except ValueError as e:
        raise url_error(f"bad port: {e}") from None
    if port is None:
        if parts.netloc.rpartition("@")[2].endswith(":"):
            raise url_error("the port is empty: leave out the colon for 5432")
        port = DEFAULT_PORT
    elif not 1 <= port <= 65535:
        raise url_error(f"port {port} is not a port (1 to 65535)")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({name for name, _ in pairs} - POSTGRES_PARAMETERS)
    if unknown:
        raise url_error(f"unknown parameter{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}: a PostgreSQL URL takes only "
                        f"{', '.join(sorted(POSTGRES_PARAMETERS))}")
    schemas = [value for name, value in pairs if name == "schema"]
    schema = None
    if len(schemas) > 1:
        raise url_error(f"schema is given {len(schemas)} times: give it once")
    if schemas:
        schema = schemas[0]
        if not schema:
            raise url_error("schema is empty: leave it out for the default (public)")
        if not SCHEMA_NAME.fullmatch(schema):
            raise url_error(f"schema {schema!r} must be a lower-case name of letters, digits "
                            "and underscores (at most 63), not starting with a digit")
        if SYSTEM_SCHEMAS.fullmatch(schema):
            raise url_error(f"schema {schema!r} is one of PostgreSQL's own: choose another name")
    return PostgresTarget(
        host=parts.hostname or "127.0.0.1", port=port,
        dbname=_decoded(parts.path.lstrip("/"), "database name") or "postgres",
        user=_decoded(parts.username or "", "user") or "postgres",
        password=_decoded(parts.password or "", "password"),
        schema=schema)


def redacted(url: str) -> str:
    """The URL as it may be shown (a terminal, a log, a hint to copy): a password in it
    replaced by ``***``, the rest as written (also a URL idstitch refuses: its error shows
    what was given)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, tail = _AUTHORITY.match(rest).groups()  # type: ignore[union-attr]
    user, at, host = netloc.rpartition("@")
    if not at or ":" not in user:
        return url
    return f"{scheme}{sep}{user.partition(':')[0]}:***@{host}{tail}"


_AUTHORITY = re.compile(r"([^/?#]*)(.*)", re.S)


__all__ = ["PostgresTarget", "StoreUrl", "parse", "redacted", "url_error"]
