"""Waking a projecting process when writers append (PostgreSQL LISTEN/NOTIFY).

Every append transaction notifies ``idstitch_events`` (see
:mod:`idstitch.adapters.postgres_log`); a :class:`Listener` waits for such a notification on a
connection of its own, at most ``timeout`` seconds: a notification lost (the listener's
connection dropped and came back, a writer on an older version) costs at most one poll
interval, never a stall.
"""

from __future__ import annotations

from typing import Any

import psycopg
from idstitch.adapters.postgres_log import NOTIFY_CHANNEL, translated


class Listener:
    """A LISTEN connection; :meth:`wait` returns on a notification or a timeout."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._conn

    def wait(self, timeout: float) -> bool:
        """Block until an append is notified (True) or ``timeout`` seconds pass (False).
        Notifications that arrived meanwhile are drained: one wake-up covers them all."""
        try:
            with translated("cannot listen for appends"):
                conn = self._connection()
                woken = False
                for _ in conn.notifies(timeout=timeout, stop_after=1):
                    woken = True
                if woken:
                    # Drain what is already queued without waiting.
                    for _ in conn.notifies(timeout=0):
                        pass
                return woken
        except Exception:
            # The connection broke: poll instead this once; the next wait reconnects.
            self.close()
            raise

    def close(self) -> None:
        """Close the connection (UNLISTEN implied)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
