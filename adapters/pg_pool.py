"""The PostgreSQL store's connections: a pool that queues threads instead of failing them.

A workspace is shared by threads, and some of its units of work hold a connection while they
need a second one (an audit reads the log while its snapshot of the rows is open; a catch-up
reads events while its tracking row is locked). With a bounded pool, four threads each holding
one connection and each waiting for another wait for each other until the pool's timeout, then
fail (``couldn't get a connection after 10.00 sec``), even after their write landed. Two rules
make every wait finite and every thread served:

- a thread that already holds a connection of this pool never waits for another: when the pool
  has none free, it gets an overflow connection of its own, closed when it is done (at most one
  per nesting level of the threads already inside, so bounded by the pool's size);
- a thread that holds none waits in the queue for as long as the pool is busy (every connection
  open and checked out by threads that make progress, by the first rule); it fails only when
  the pool could not open its connections at all (the server is gone), with a StoreError.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

WAIT_SLICE = 10.0
"""Seconds of one wait for a free connection; a busy pool is waited for again, slice by slice."""
NESTED_WAIT = 0.05
"""Seconds a thread already holding a connection waits for a free one before opening its own."""


class QueuedPool:
    """A psycopg pool whose waits never deadlock nested use and never fail a queued thread."""

    def __init__(self, conninfo: str, kwargs: dict[str, Any], max_size: int,
                 wait_slice: float = WAIT_SLICE) -> None:
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._max = max_size
        self._held = threading.local()
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=max_size, kwargs=kwargs,
                                    open=True, timeout=wait_slice)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for the block: from the pool, or (nested, pool exhausted) its own."""
        depth: int = getattr(self._held, "depth", 0)
        overflow = False
        if depth:
            try:
                conn = self._pool.getconn(timeout=NESTED_WAIT)
            except PoolTimeout:
                conn = psycopg.connect(self._conninfo, connect_timeout=10, **self._kwargs)
                overflow = True
        else:
            conn = self._queued()
        self._held.depth = depth + 1
        try:
            # As the pool's own connection(): commit or roll back what the block left open;
            # an overflow connection closes there, a pooled one goes back.
            with conn:
                yield conn
        finally:
            self._held.depth = depth
            if not overflow:
                self._pool.putconn(conn)

    def _queued(self) -> psycopg.Connection[Any]:
        while True:
            try:
                return self._pool.getconn()
            except PoolTimeout:
                stats = self._pool.get_stats()
                # Every connection open and lent out: the pool is busy, not broken; keep our
                # place. Fewer open than the maximum means it cannot connect: fail.
                if stats.get("pool_size", 0) < self._max or self._pool.closed:
                    raise

    def close(self) -> None:
        """Close the pool's connections (overflow ones close with their block)."""
        self._pool.close()
