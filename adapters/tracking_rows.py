"""The projections' tracking rows as both SQL stores and both event logs read them: the
statement that reads them with the log's head, and what the rows read say (a position
checked, a missing row as position 0)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from idstitch.domain.errors import CorruptRow


def tracking_position(name: str, stored: object) -> int:
    """A tracking row's position; CorruptRow when it holds anything but an integer (SQLite
    stores any value in any column): whoever meets it rebuilds the projection."""
    if type(stored) is int and stored >= 0:
        return stored
    raise CorruptRow(f"tracking ({name!r})", f"its position is {stored!r}, not a position")


def tracked_rows(names: Sequence[str], rows: Iterable[Sequence[Any]]
                 ) -> dict[str, tuple[int, str | None]]:
    """The (position, meta) of each of ``names`` from (name, position, meta) tracking rows
    read (a name without a row: (0, None); a row whose name is None, of an outer join: none)."""
    found = {name: (tracking_position(name, position), meta)
             for name, position, meta in rows if name is not None}
    return {name: found.get(name, (0, None)) for name in names}


def head_and_tracking_sql(head_sql: str, marks: str) -> str:
    """The statement reading the log's head (``head_sql``) and the tracking rows whose names
    are ``marks`` (placeholders, or literals) at once."""
    return (f"SELECT ({head_sql}), t.name, t.position, t.meta FROM (SELECT 1) AS one "
            f"LEFT JOIN idstitch_tracking AS t ON t.name IN ({marks})")


def head_and_tracked(names: Sequence[str], rows: Sequence[Sequence[Any]]
                     ) -> tuple[int, dict[str, tuple[int, str | None]]]:
    """The head and tracking rows a :meth:`SqlProjectionStore.head_and_tracking` statement
    read."""
    head = int(rows[0][0] or 0) if rows else 0
    return head, tracked_rows(names, [row[1:] for row in rows])
