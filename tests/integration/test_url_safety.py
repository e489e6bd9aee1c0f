"""Issue 9, item 3: no text of a connection URL reaches SQL or libpq's conninfo unquoted."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.testing import TemporaryPostgres


def tables(url: str, schema: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = %s", (schema,)).fetchall()
    return {name for (name,) in rows}


@pytest.mark.parametrize("schema", [
    'x"; CREATE TABLE public.pwned(x int); --',
    "a -c default_transaction_read_only=on",
    "Upper",
    "1starts_with_a_digit",
    "x" * 64,
])
def test_a_schema_that_is_not_a_plain_name_is_refused(
    postgres: TemporaryPostgres, schema: str
) -> None:
    url = postgres.url("idstitch_tests") + "?schema=" + quote(schema)
    with pytest.raises(InvalidCommand) as caught:
        idstitch.open(url)
    assert caught.value.field == "url" and "schema" in caught.value.reason
    assert "pwned" not in tables(postgres.url("idstitch_tests"), "public")


def test_a_plain_schema_name_works(postgres: TemporaryPostgres) -> None:
    with idstitch.open(postgres.url("idstitch_tests") + "?schema=plain_name_1") as ws:
        ws.identify("d", "u")
    assert "idstitch_events" in tables(postgres.url("idstitch_tests"), "plain_name_1")


@pytest.mark.parametrize("password", ["x' dbname='other", "x' host='192.0.2.1", "a'b\\c d"])
def test_a_password_cannot_change_the_database_or_the_host(
    postgres: TemporaryPostgres, password: str
) -> None:
    """The test server trusts every local connection, so any password is accepted: what
    matters is where the rows go. Pasted into a conninfo string, ``x' dbname='other`` sent the
    projection rows to another database than the events, and ``host=`` elsewhere."""
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'other'").fetchone()
        if exists is None:
            conn.execute('CREATE DATABASE "other"')
    schema = f"pw{abs(hash(password)) % 10_000}"
    url = (f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{postgres.port}"
           f"/idstitch_tests?schema={schema}")
    with idstitch.open(url) as ws:
        ws.identify("d", "u", {"a": 1})
        assert ws.profile("u").attributes == {"a": 1}  # type: ignore[union-attr]
    assert {"idstitch_events", "idstitch_rows", "idstitch_tracking"} <= tables(
        postgres.url("idstitch_tests"), schema)
    assert tables(postgres.url("other"), schema) == set()


# Issue 16, item 10: a URL idstitch cannot honour exactly is refused before anything connects.

PG = "postgresql://postgres@127.0.0.1:{port}/idstitch_tests"
REFUSED_PG = [
    ("%00 in the user", "postgresql://postgres%00nobody@127.0.0.1:{port}/idstitch_tests",
     "user holds a NUL"),
    ("%00 in the password", "postgresql://postgres:secret%00rest@127.0.0.1:{port}/idstitch_tests",
     "password holds a NUL"),
    ("%00 in the database", "postgresql://postgres@127.0.0.1:{port}/idstitch_tests%00x",
     "database name holds a NUL"),
    ("bad UTF-8 in the user", "postgresql://post%ffgres@127.0.0.1:{port}/idstitch_tests",
     "user is not valid UTF-8"),
    ("information_schema", PG + "?schema=information_schema", "PostgreSQL's own"),
    ("pg_catalog", PG + "?schema=pg_catalog", "PostgreSQL's own"),
    ("pg_toast", PG + "?schema=pg_toast", "PostgreSQL's own"),
    ("any pg_ name", PG + "?schema=pg_mine", "PostgreSQL's own"),
    ("an empty schema", PG + "?schema=", "schema is empty"),
    ("a schema without a value", PG + "?schema", "schema is empty"),
    ("a repeated schema", PG + "?schema=a&schema=b", "schema is given 2 times"),
    ("port 0", "postgresql://postgres@127.0.0.1:0/idstitch_tests", "port 0 is not a port"),
    ("port 65536", "postgresql://postgres@127.0.0.1:65536/idstitch_tests", "port"),
    ("port 99999", "postgresql://postgres@127.0.0.1:99999/idstitch_tests", "port"),
    ("a port that is no number", "postgresql://postgres@127.0.0.1:5x/idstitch_tests", "port"),
    ("an empty port", "postgresql://postgres@127.0.0.1:/idstitch_tests", "port is empty"),
    ("an unknown parameter", PG + "?sslmode=require", "unknown parameter 'sslmode'"),
    ("unknown parameters beside the schema", PG + "?schema=ok&connect_timeout=1&b=2",
     "unknown parameters 'b', 'connect_timeout'"),
    ("a fragment", "postgresql://postgres:pa#ss@127.0.0.1:{port}/idstitch_tests", "fragment"),
]


@pytest.mark.parametrize(("name", "template", "why"), REFUSED_PG, ids=[c[0] for c in REFUSED_PG])
def test_a_postgres_url_that_cannot_mean_what_it_says_is_refused_before_connecting(
    postgres: TemporaryPostgres, name: str, template: str, why: str
) -> None:
    url = template.format(port=postgres.port)
    before = schemas(postgres)
    with pytest.raises(InvalidCommand) as caught:
        idstitch.open(url)
    assert caught.value.field == "url" and why in caught.value.reason, caught.value
    assert "secret" not in str(caught.value)  # a password is never echoed
    assert schemas(postgres) == before


def schemas(postgres: TemporaryPostgres) -> set[str]:
    with psycopg.connect(postgres.url("idstitch_tests"), autocommit=True) as conn:
        rows = conn.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    return {name for (name,) in rows}


REFUSED_SQLITE = [
    ("in-memory", "sqlite:///:memory:", "not a file"),
    ("a shared in-memory URI", "sqlite:///file::memory:", "not a file"),
    ("a file: URI", "sqlite:///file:{dir}/x.db", "not a file"),
    ("a parameter", "sqlite:///{dir}/x.db?mode=ro", "no parameters ('mode' given)"),
    ("a fragment", "sqlite:///{dir}/x.db#y", "no fragment"),
]


@pytest.mark.parametrize(("name", "template", "why"), REFUSED_SQLITE,
                         ids=[c[0] for c in REFUSED_SQLITE])
def test_a_sqlite_url_that_cannot_mean_what_it_says_is_refused_before_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, template: str, why: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidCommand) as caught:
        idstitch.open(template.format(dir=tmp_path))
    assert caught.value.field == "url" and why in caught.value.reason, caught.value
    assert list(tmp_path.iterdir()) == []  # no file made, under any name


def test_an_empty_url_is_refused_not_taken_for_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty string opened ./idstitch.db, as None does: an unset variable in the caller's
    configuration then wrote to a store nobody chose."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IDSTITCH_DATABASE_URL", raising=False)
    with pytest.raises(InvalidCommand) as caught:
        idstitch.open("")
    assert caught.value.field == "url"
    assert list(tmp_path.iterdir()) == []


def test_the_urls_around_the_refused_ones_still_open(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    for url in (postgres.url("idstitch_tests") + "?schema=pgx_not_system",
                f"postgresql://postgres@127.0.0.1:{postgres.port}/idstitch_tests?schema=_p",
                f"postgres://postgres:@127.0.0.1:{postgres.port}/idstitch_tests?schema=short_scheme",
                f"sqlite:///{tmp_path}/memory.db", "memory:", "memory://"):
        with idstitch.open(url) as ws:
            ws.identify("d", "u")
            assert ws.profile("u") is not None
