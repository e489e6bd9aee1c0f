"""A command's projection rows in its append's statement (PostgreSQL): the rows a single
command's events make are folded once the append has reserved their positions, and written by
the statement that inserts the events, each projection's behind its own compare-and-set of the
tracking row. An identify then takes three round trips (the reservation, the insert, COMMIT)
where the rows' own statement after the append made four.

Where the rows cannot land (a projection is behind the log, its first commit, a fold that
fails), nothing of them goes in the statement and the catch-up after the append folds them, as
it always did. A compare-and-set that finds another commit since the fold (another process's
catch-up, which never takes the events table's lock) writes nothing for that projection: the
command is told its rows did not land (``AppendCheck.abandoned``), every cache is dropped, and
the catch-up after the append goes on from what the store holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple


class CapturedWrite(NamedTuple):
    """One projection's ``write_if``, held back to go in the append's statement."""

    name: str
    expected: tuple[int, str | None]
    rows: Mapping[tuple[str, str], bytes | None]
    position: int
    meta: str | None


class NotLandable(Exception):
    """A write that cannot go in the append's statement (a projection's first commit, which
    copies into an empty table in a transaction of its own)."""


@lru_cache(maxsize=8)
def with_rows(insert: str, count: int) -> str:
    """``insert`` (the append's WITH ... SELECT statement) with ``count`` projections' rows
    and tracking compare-and-sets added; the SELECT then also returns whether each was
    written. Data-modifying CTEs run to completion whether read or not; each projection's rows
    are written only if its tracking row still held what the fold began from."""
    head, _, select = insert.rpartition(" SELECT ")
    parts = [head]
    for i in range(count):
        parts.append(
            f", t{i} AS (UPDATE idstitch_tracking SET position = %s, meta = %s::text "
            "WHERE name = %s AND position = %s AND meta IS NOT DISTINCT FROM %s::text "
            f"RETURNING 1), up{i} AS (INSERT INTO idstitch_rows (kind, key, doc) SELECT u.* "
            "FROM unnest(%b::text[], %b::text[], %b::bytea[]) AS u "
            f"WHERE EXISTS (SELECT FROM t{i}) ON CONFLICT (kind, key) DO UPDATE SET "
            f"doc = excluded.doc), gone{i} AS (DELETE FROM idstitch_rows USING "
            "unnest(%b::text[], %b::text[]) AS g(kind, key) WHERE idstitch_rows.kind = g.kind "
            f"AND idstitch_rows.key = g.key AND EXISTS (SELECT FROM t{i}))")
    written = ", ".join(f"EXISTS (SELECT FROM t{i})" for i in range(count))
    return "".join(parts) + f" SELECT {select}, {written}"


def rows_params(writes: list[CapturedWrite]) -> list[Any]:
    """The parameters :func:`with_rows` adds, in its order. Every row goes as an upsert (a
    plain INSERT of rows taken for new would fail the whole statement, the events with it,
    if one existed after all)."""
    params: list[Any] = []
    for w in writes:
        upserts = [(k, key, doc) for (k, key), doc in w.rows.items() if doc is not None]
        gone = [(k, key) for (k, key), doc in w.rows.items() if doc is None]
        params += [w.position, w.meta, w.name, w.expected[0], w.expected[1],
                   [r[0] for r in upserts], [r[1] for r in upserts], [r[2] for r in upserts],
                   [r[0] for r in gone], [r[1] for r in gone]]
    return params


__all__ = ["CapturedWrite", "NotLandable", "rows_params", "with_rows"]
