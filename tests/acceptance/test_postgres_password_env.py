"""libpq's environment reaches every connection idstitch opens (docs/howto/postgresql.md): a
URL without a password, on a server that asks for one, connects with ``PGPASSWORD`` (the
event store's connections once sent an empty password instead, which overrides it: 30 s of
retries, then an error). A real PostgreSQL server, a role that must give its password."""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

import idstitch
from idstitch.errors import IdstitchError
from idstitch.testing import TemporaryPostgres

ROLE, PASSWORD = "op_pw", "s3cret-pw"


@pytest.fixture(scope="module")
def guarded_url(postgres: TemporaryPostgres) -> Iterator[str]:
    """A database owned by a role that must authenticate with its password."""
    url = postgres.create_database("password_env")
    hba = os.path.join(postgres.data, "pg_hba.conf")
    with open(hba) as file:
        before = file.read()
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"ALTER DATABASE password_env OWNER TO {ROLE}")
        with open(hba, "w") as file:  # first match wins: this role alone asks for it
            file.write(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + before)
        conn.execute("SELECT pg_reload_conf()")
    port = urlsplit(url).port
    try:
        yield f"postgresql://{ROLE}@127.0.0.1:{port}/password_env"
    finally:
        with open(hba, "w") as file:
            file.write(before)
        with psycopg.connect(postgres.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


def test_pgpassword_reaches_the_event_store_too(guarded_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with idstitch.open(guarded_url) as ws:
        assert ws.identify("phone", "kim") is not None
        profile = ws.profile("kim")
        assert profile is not None and profile.devices[0].device_id == "phone"


def test_without_it_the_server_refuses(guarded_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(IdstitchError, match="password"):
        idstitch.open(guarded_url)
