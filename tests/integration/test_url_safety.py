"""Issue 9, item 3: no text of a connection URL reaches SQL or libpq's conninfo unquoted."""

from __future__ import annotations

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
