"""The log's hash chain: what each position's hash is, and the walk that checks a stored log.

Every stored event row gets a hash, written with it in the same transaction (each store's
append path calls :func:`link`; the SQL stores keep an append's hashes as one run, see
:mod:`idstitch.adapters.sqlchain`)::

    h(0) = GENESIS
    h(p) = SHA-256(h(previous row) || msgpack([position, originator id, version, topic, state]))

over exactly what is stored: the originator id as its 32 lower-case hex digits, the topic as
stored, the state's bytes as stored (ciphertext, once events are encrypted, so destroying a key
leaves the chain valid). "Previous row" is the row before in position order: PostgreSQL's
positions have gaps where an append was refused, and the chain links the rows that exist.

:func:`verify` recomputes the chain from the first row, a page at a time, and compares it with
the stored hashes (see docs/explanation/verifiable-log.md for what that proves, and what not).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from typing import Protocol

import msgspec
from idstitch.domain.verification import Digest, Verification

GENESIS = hashlib.sha256(b"idstitch log chain v1").digest()
"""h(0): the hash every chain starts from (a constant, so an empty log has a digest too)."""

PAGE = 10_000
"""Rows a verification reads at a time: its memory stays bounded whatever the log's length."""

Row = tuple[str, int, str, bytes]
"""An event row as the append paths hold it: (originator id hex, version, topic, state)."""
StoredRow = tuple[int, str, int, str, bytes]
"""An event row as stored: (position, originator id hex, version, topic, state)."""
Entry = tuple[int, bytes]
"""A chain entry: (position, hash)."""
Run = tuple[int, bytes]
"""Chain entries of consecutive positions: (first position, their hashes concatenated, 32
bytes each). An entry is a run of one."""
SIZE = 32
"""Bytes of a hash."""

_encode = msgspec.msgpack.Encoder().encode


def link(prev: bytes, positions: Sequence[int], rows: Sequence[Row]) -> list[bytes]:
    """The hashes of rows appended at these positions after the entry whose hash is ``prev``.

    On the ingest path (thousands of rows a transaction): one msgpack encode (in C) and one
    SHA-256 per row, ~1 us a row on the development machine."""
    sha = hashlib.sha256
    encode = _encode
    out: list[bytes] = []
    append = out.append
    h = prev
    for position, (aggregate, version, topic, state) in zip(positions, rows, strict=True):
        h = sha(h + encode((position, aggregate, version, topic, state))).digest()
        append(h)
    return out


def runs_of(positions: Sequence[int], hashes: Sequence[bytes]) -> list[Run]:
    """Entries as runs of consecutive positions (an append's positions are consecutive; a
    PostgreSQL log read back has gaps where appends were refused)."""
    out: list[Run] = []
    start = 0
    for i in range(1, len(positions) + 1):
        if i == len(positions) or positions[i] != positions[i - 1] + 1:
            out.append((positions[start], b"".join(hashes[start:i])))
            start = i
    return out


class ChainedLog(Protocol):
    """What a store gives the chain's checks: its stored rows and chain entries, by position."""

    def stored_rows(self, after: int, limit: int) -> list[StoredRow]:
        """Up to ``limit`` event rows after a position, in position order."""
        ...

    def chain_runs(self, after: int, until: int) -> list[Run]:
        """The runs of chain entries that hold any position in ``after < position <= until``,
        in position order."""
        ...

    def chain_after(self, after: int) -> int | None:
        """The position of the first chain entry after a position (None: there is none)."""
        ...

    def chain_tail(self) -> Entry:
        """The last chain entry; (0, GENESIS) when the chain is empty."""
        ...

    def chain_start(self) -> int:
        """The first position whose entry was computed when its event was written (the rows
        before it were chained when the store was upgraded to the chain)."""
        ...


def digest(log: ChainedLog) -> Digest:
    """The chain's last entry, to keep elsewhere."""
    position, head = log.chain_tail()
    return Digest(position=position, head=head.hex())


def verify(log: ChainedLog, against: Digest | None = None, page: int = PAGE) -> Verification:
    """Recompute the chain over the stored rows and compare it with the stored entries (and,
    with ``against``, with a digest kept elsewhere); stops at the first break."""
    sha = hashlib.sha256
    encode = _encode
    h = GENESIS
    checked = 0
    after = 0
    while rows := log.stored_rows(after, page):
        until = rows[-1][0]
        runs = log.chain_runs(after, until)
        hashes: list[bytes] = []
        append = hashes.append
        for row in rows:
            h = sha(h + encode(row)).digest()
            append(h)
        found = None
        if not _matches(rows, hashes, runs, after, until):
            found = _locate([(r[0], x) for r, x in zip(rows, hashes, strict=True)],
                            _entries(runs, after, until))
        miss = _against(against, rows, hashes, after, until)
        if miss is not None and (found is None or miss[1] < found[1]):
            return _broken(checked + miss[0], miss[1], miss[2])
        if found is not None:
            return _broken(checked + found[0], found[1], found[2])
        checked += len(rows)
        after = until
    orphan = log.chain_after(after)
    if orphan is not None:
        return _broken(checked + 1, orphan, _deleted(orphan))
    if against is not None and against.position > after:
        return _broken(checked, after + 1,
                       f"the log ends at position {after}, before the digest's position "
                       f"{against.position}: events were removed from its end (or the digest "
                       "is of another store)")
    if against is not None and against.position == 0 and against.head != GENESIS.hex():
        return _broken(0, 0, "the digest does not start from this chain's genesis hash: it "
                             "is not a digest of an idstitch log")
    return Verification(ok=True, checked=checked, first_break=None,
                        reason=_proven(checked, after, against, log.chain_start()))


def _matches(rows: list[StoredRow], hashes: list[bytes], runs: list[Run], after: int,
             until: int) -> bool:
    """Whether a page's recomputed hashes are its stored entries, position for position: the
    runs, cut to the page, must cover exactly the rows' positions (rows ascend, so a run of k
    positions matches k rows when its first and last positions do), and their bytes must be
    the recomputed hashes joined: one comparison in C for the whole page."""
    i = 0
    parts: list[bytes] = []
    for first, blob in runs:
        lo, hi = max(first, after + 1), min(first + len(blob) // SIZE - 1, until)
        if lo > hi:
            continue
        k = hi - lo + 1
        if len(blob) % SIZE or i + k > len(rows) or rows[i][0] != lo or rows[i + k - 1][0] != hi:
            return False
        parts.append(blob[(lo - first) * SIZE : (hi - first + 1) * SIZE])
        i += k
    return i == len(rows) and b"".join(parts) == b"".join(hashes)


def _entries(runs: list[Run], after: int, until: int) -> list[Entry]:
    """The entries of these runs with ``after < position <= until`` (to find a break)."""
    return [(first + i, blob[i * SIZE : (i + 1) * SIZE]) for first, blob in runs
            for i in range(max(after + 1 - first, 0), min(until - first + 1, len(blob) // SIZE))]


def _against(against: Digest | None, rows: list[StoredRow], hashes: list[bytes], after: int,
             until: int) -> tuple[int, int, str] | None:
    """The break a digest whose position falls in this page shows: (positions walked,
    position, reason)."""
    if against is None or not after < against.position <= until:
        return None
    i = bisect_left([r[0] for r in rows], against.position)
    if rows[i][0] != against.position:
        return i + 1, against.position, (f"the digest's position {against.position} holds no "
                                         "event: it was deleted, with its chain entry")
    if hashes[i].hex() != against.head:
        return i + 1, against.position, (f"the log up to position {against.position} is not "
                                         "the log the digest was taken of: it was rewritten "
                                         "(and its chain recomputed)")
    return None


def _locate(expected: list[Entry], entries: list[Entry]) -> tuple[int, int, str]:
    """Where a page's recomputed entries and stored entries first differ: (entries walked,
    including the break; position; reason)."""
    i = j = 0
    while True:
        e = expected[i] if i < len(expected) else None
        c = entries[j] if j < len(entries) else None
        walked = i + 1  # the pairs that matched, and this one
        if e is not None and (c is None or e[0] < c[0]):
            return walked, e[0], (f"the event at position {e[0]} has no chain entry: it was "
                                  "inserted, or appended by something other than idstitch")
        if c is not None and (e is None or c[0] < e[0]):
            return walked, c[0], _deleted(c[0])
        # The pages differ, so both cannot end here.
        assert e is not None
        assert c is not None
        if e[1] != c[1]:
            return walked, e[0], (f"the event at position {e[0]} does not match its chain "
                                  "entry: it (or its chain entry) was changed, or events were "
                                  "moved between positions")
        i += 1
        j += 1


def _deleted(position: int) -> str:
    return f"position {position} is in the chain but its event is gone: it was deleted"


def _broken(checked: int, position: int, reason: str) -> Verification:
    return Verification(ok=False, checked=checked, first_break=position, reason=reason)


def _proven(checked: int, last: int, against: Digest | None, start: int) -> str:
    if checked == 0:
        said = "the log is empty"
    else:
        said = f"the chain holds over all {checked:,} events (up to position {last})"
    if against is not None:
        said += f"; it matches the digest at position {against.position}"
    if start > 1 and checked:
        said += (f"; the events before position {start} were chained when the store was "
                 "upgraded to the chain, not as they were written: the chain proves nothing "
                 "about changes made to them before the upgrade")
    return said


__all__ = ["GENESIS", "PAGE", "SIZE", "ChainedLog", "Entry", "Row", "Run", "StoredRow", "digest",
           "link", "runs_of", "verify"]
