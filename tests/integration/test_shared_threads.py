"""One workspace shared by threads (issue 16, item 1): threads mixing commands with audit
queries are queued for the store's connections, never failed, and a command reports what landed.

On PostgreSQL the pool holds 4 connections; an audit holds one (its snapshot of the rows) while
it reads the log on another, so eight threads used to wait for each other until the pool's
10-second timeout and fail, some after their write had landed."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from idstitch.adapters.pg_pool import QueuedPool

from idstitch.testing import TemporaryPostgres, recorded_events
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
THREADS = 8
ROUNDS = 24
JOIN_TIMEOUT = 240.0
"""Seconds the test waits for the threads: minutes more than the mix needs on a busy machine,
so it trips only on a stall (the old pool failed after 10 s per wait, several times a run)."""


def test_threads_mixing_commands_and_audits_are_served(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    errors: list[str] = []
    positions: dict[str, int | None] = {}
    start = threading.Barrier(THREADS)

    def work(t: int) -> None:
        start.wait()
        for i in range(ROUNDS):
            message_id = f"m{t}-{i}"
            try:
                positions[message_id] = ws.identify(
                    f"dev{t}-{i % 4}", f"user{t}-{i % 3}", {"n": i}, message_id=message_id)
                if i % 2 == 0:
                    ws.profile_as_of(f"user{t}-0", 10**9)
                    ws.history(f"user{t}-{i % 3}")
                    ws.explain(f"user{t}-{i % 3}", "n")
            except Exception as e:
                errors.append(f"{message_id}: {e!r}")

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not [t for t in threads if t.is_alive()], "threads stalled"
    assert errors == []
    # Every command's event is recorded exactly once, where its command said.
    recorded = Counter(e.message_id for _, e in recorded_events(ws))
    assert {m for m, n in recorded.items() if n != 1} == set()
    assert set(recorded) == set(positions)
    at = {e.message_id: n for n, e in recorded_events(ws)}
    assert all(positions[m] == at[m] for m in positions)
    # And the rows hold all of it.
    for t in range(THREADS):
        profile = ws.profile(f"user{t}-0")
        assert profile is not None and profile.attributes["n"] == ROUNDS - 3


def test_a_thread_holding_a_connection_never_waits_for_another(
    postgres: TemporaryPostgres,
) -> None:
    """The class behind the stalls: every pooled connection held by a thread that needs one
    more. Each gets its own at once (the old pool made both wait 10 s, then fail)."""
    pool = QueuedPool(postgres.url("idstitch_tests"), {"autocommit": True}, max_size=2)
    inside = threading.Barrier(3)
    answers: list[int] = []

    def nested() -> None:
        with pool.connection() as outer:
            inside.wait(timeout=60)  # both pooled connections are out
            with pool.connection() as inner:
                row = inner.execute("SELECT 1").fetchone()
                answers.append(row[0] if row else 0)
            outer.execute("SELECT 1")

    try:
        threads = [threading.Thread(target=nested, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        inside.wait(timeout=60)
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        assert answers == [1, 1]
        with pool.connection() as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        pool.close()


def test_a_thread_waits_for_a_busy_pool_past_its_timeout(postgres: TemporaryPostgres) -> None:
    """Queued, not failed: a thread holding no connection waits for as long as the pool is
    busy (here past several of its 0.2 s waits), and gets the connection once it is free."""
    pool = QueuedPool(postgres.url("idstitch_tests"), {"autocommit": True}, max_size=1,
                      wait_slice=0.2)
    taken = threading.Event()
    release = threading.Event()
    got: list[object] = []

    def holder() -> None:
        with pool.connection():
            taken.set()
            release.wait(timeout=60)

    def waiter() -> None:
        with pool.connection() as conn:
            got.append(conn.execute("SELECT 3").fetchone())

    try:
        first = threading.Thread(target=holder, daemon=True)
        first.start()
        assert taken.wait(timeout=60)
        second = threading.Thread(target=waiter, daemon=True)
        second.start()
        second.join(1.0)  # five of the pool's waits: it is still queued, not failed
        assert second.is_alive() and got == []
        release.set()
        second.join(JOIN_TIMEOUT)
        first.join(JOIN_TIMEOUT)
        assert got == [(3,)]
    finally:
        release.set()
        pool.close()
