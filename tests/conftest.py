"""Fixtures shared by every kind of test.

``stores`` parametrizes a test over the three stores: memory, a real SQLite file, and a real
PostgreSQL server that this test run starts from the machine's binaries (never skipped: if it
cannot start, the run fails).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

import idstitch
from idstitch.service import erasure
from idstitch.testing import FrozenClock, TemporaryPostgres
from idstitch.workspace import Workspace

STORES = ("memory", "sqlite", "postgres")
_schemas = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    """One PostgreSQL server for the whole run."""
    server = TemporaryPostgres().start()
    try:
        server.create_database("idstitch_tests")
        yield server
    finally:
        server.stop()


def store_url(kind: str, tmp_path_factory: pytest.TempPathFactory,
              postgres: Callable[[], TemporaryPostgres]) -> str:
    """A fresh, empty store of a kind."""
    if kind == "memory":
        return "memory:"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/identity.db"
    return postgres().url("idstitch_tests") + f"?schema=t{next(_schemas)}"


WorkspaceFactory = Callable[..., Workspace]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """memory, sqlite or postgres."""
    return str(request.param)


@pytest.fixture
def clock() -> FrozenClock:
    """A clock the test moves."""
    return FrozenClock(datetime(2026, 1, 1, 9, tzinfo=UTC))


@pytest.fixture(params=("sqlite", "postgres"))
def durable_kind(request: pytest.FixtureRequest) -> str:
    """sqlite or postgres: stores that outlive a workspace and can be shared by several."""
    return str(request.param)


@pytest.fixture
def make_ws(
    store_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    clock: FrozenClock,
) -> Iterator[WorkspaceFactory]:
    """Opens workspaces on fresh stores of the parametrized kind; closes them after the test."""
    yield from _opener(store_kind, request, tmp_path_factory, clock)


@pytest.fixture
def make_durable_ws(
    durable_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    clock: FrozenClock,
) -> Iterator[WorkspaceFactory]:
    """Like make_ws, over SQLite and PostgreSQL only."""
    yield from _opener(durable_kind, request, tmp_path_factory, clock)


def _opener(
    store_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    clock: FrozenClock,
) -> Iterator[WorkspaceFactory]:
    opened: list[Workspace] = []

    def factory(url: str | None = None, **kwargs: object) -> Workspace:
        url = url or store_url(store_kind, tmp_path_factory,
                               lambda: request.getfixturevalue("postgres"))
        kwargs.setdefault("clock", clock)
        ws = idstitch.open(url, **kwargs)  # type: ignore[arg-type]
        opened.append(ws)
        return ws

    yield factory
    for ws in opened:
        ws.close()


@pytest.fixture
def ws(make_ws: WorkspaceFactory) -> Workspace:
    """A workspace on a fresh store (merge policy)."""
    return make_ws()


@pytest.fixture(params=("sqlite", "postgres"))
def durable_url_factory(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """Like url_factory, over SQLite and PostgreSQL only: stores several workspaces share."""
    def make() -> str:
        return store_url(str(request.param), tmp_path_factory,
                         lambda: request.getfixturevalue("postgres"))
    return make


@pytest.fixture(params=STORES)
def url_factory(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """Makes URLs of fresh, empty stores of the parametrized kind, any number per test (a
    hypothesis property opens new ones for every example)."""
    def make() -> str:
        return store_url(str(request.param), tmp_path_factory,
                         lambda: request.getfixturevalue("postgres"))
    return make


@pytest.fixture
def former_log() -> Callable[[Path], None]:
    """A function that puts a SQLite store's log back into the layout of stores written by
    idstitch before it numbered streams and topics (eventsourcing's ``stored_events``)."""
    return _former_log


def _former_log(path: Path) -> None:
    """Put the file's log back into the layout of stores made before streams were numbered:
    eventsourcing's own ``stored_events`` table (the 32-hex id in every row and its key)."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TABLE stored_events")  # the tombstone
        db.execute("DROP VIEW idstitch_log")
        db.execute("CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, "
                   "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))")
        db.execute("INSERT INTO stored_events (rowid, originator_id, originator_version, topic, "
                   "state) SELECT e.position, s.id, e.originator_version, t.topic, e.state "
                   "FROM idstitch_events AS e JOIN idstitch_streams AS s ON s.number = e.stream "
                   "JOIN idstitch_topics AS t ON t.code = e.topic_code ORDER BY e.position")
        for table in ("idstitch_events", "idstitch_streams", "idstitch_topics"):
            db.execute(f"DROP TABLE {table}")


KeeperFirst = Callable[[Callable[[], object]], Callable[..., list[str]]]


@pytest.fixture
def keeper_first() -> KeeperFirst:
    """``erasure.drop_unkept`` with another process's keeper folding first (``step``: a
    custom projection's keeper stepped by hand in the test), as a live ``idstitch project``
    folds past a forget moments after it; patch it in with
    ``monkeypatch.setattr(erasure, "drop_unkept", keeper_first(step))``."""
    def wrap(step: Callable[[], object]) -> Callable[..., list[str]]:
        real = erasure.drop_unkept

        def dropping(*args: object, **kwargs: object) -> list[str]:
            step()
            return real(*args, **kwargs)  # type: ignore[arg-type]
        return dropping
    return wrap
