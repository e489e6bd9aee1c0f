"""A PostgreSQL connection lost under a workspace (a server restart, a failover, an idle
killer): the calls that meet it fail with a typed StoreError, and the ones after get a new
connection, in an external writer, with custom projections, and in `idstitch serve`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import pytest

import idstitch
from idstitch.errors import StoreError
from idstitch.testing import TemporaryPostgres
from idstitch.testing_projections import Counter

T = TypeVar("T")
_databases = itertools.count()


def drop_connections(server: TemporaryPostgres, database: str) -> int:
    """Terminate every connection to ``database`` (as a restart would); how many."""
    with psycopg.connect(server.url(), autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s AND pid <> pg_backend_pid()",
                             (database,)).fetchall()
    return len(rows)


def soon(call: Callable[[], T], tries: int = 8) -> T:
    """The call's answer once it has connections again: each connection a process kept
    fails the first call that meets it (typed), never every one after."""
    for attempt in range(tries):
        try:
            return call()
        except StoreError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def test_an_external_writer_and_custom_projections_get_a_new_connection(
        postgres: TemporaryPostgres) -> None:
    database = f"conn_loss_{next(_databases)}"
    url = postgres.create_database(database)
    with idstitch.open(url, projections=[Counter()]) as keeper, \
            idstitch.open(url, projections="external") as writer:
        writer.identify("phone", "ann")
        keeper.catch_up()
        assert writer.lag() == 0
        kept = keeper.projection_db("counter")  # a handle kept across the loss
        assert kept.query("SELECT n FROM counts WHERE event = ?", ("Identified",)) == [(1,)]
        assert drop_connections(postgres, database) > 0
        position = soon(lambda: writer.identify("tablet", "bob"))
        assert position is not None
        # Before: psycopg's own errors, for ever (the custom tables' connection was kept).
        soon(keeper.catch_up)
        assert soon(writer.lag) == 0
        assert soon(lambda: writer.wait_for(position, timeout=10)) >= position
        assert soon(lambda: writer.merge_persons("ann", "bob", reason="one")) is not None
        counted: Any = soon(lambda: kept.query(
            "SELECT n FROM counts WHERE event = ?", ("Identified",)))
        assert counted and counted[0][0] >= 2


@pytest.mark.parametrize("mode", ["embedded", "external"])
def test_serve_answers_after_a_lost_connection(postgres: TemporaryPostgres, serve: Any,
                                               mode: str) -> None:
    """The writer thread died on the lost connection before a group with a cio_ id, and every
    later request hung, SIGTERM too."""
    import requests

    database = f"conn_loss_{next(_databases)}"
    url = postgres.create_database(database)
    with idstitch.open(url) as ws:
        ws.identify("phone", "ann")
        ann = ws.profile("ann")
        assert ann is not None
    server = serve(url, external=mode == "external")

    def post(message: dict[str, Any]) -> int:
        body = {"batch": [{"type": "identify", **message}]}
        return requests.post(server.url + "/v1/batch", json=body, auth=("test-key", ""),
                             timeout=60).status_code

    assert post({"userId": "u-0", "context": {"device": {"id": "d-0"}}}) == 200
    assert drop_connections(postgres, database) > 0
    cio = {"userId": f"cio_{ann.person_id}", "context": {"device": {"id": "d-9"}}}
    answers = [post(cio) for _ in range(3)]
    assert answers[-1] == 200 and set(answers) <= {200, 500}
    assert post({"userId": "u-1", "context": {"device": {"id": "d-1"}}}) == 200
    server.stop()


def test_a_lease_lost_with_its_connection_is_no_longer_taken_for_held(
        postgres: TemporaryPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its holder kept answering 'held' (an idle connection is known lost only when used)
    while another process took the lease too: both folded the same projection."""
    from idstitch.adapters import postgres as store

    monkeypatch.setattr(store, "LEASE_CHECK_SECONDS", 0.0)
    database = f"conn_loss_{next(_databases)}"
    url = postgres.create_database(database)
    with idstitch.open(url) as a, idstitch.open(url) as b:
        a.identify("phone", "ann")
        first: Any = a._services.stores.rows
        second: Any = b._services.stores.rows
        assert first.try_lease("identity") and not second.try_lease("identity")
        assert drop_connections(postgres, database) > 0
        assert soon(lambda: second.try_lease("identity"))
        assert not soon(lambda: first.try_lease("identity"))
