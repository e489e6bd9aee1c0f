"""The read-ahead child: reads the log ahead of a long catch-up of its parent's, so that the
parent folds while this process reads.

Started by :class:`idstitch.service.read_ahead.ReadAhead`. Reading the log is about two fifths
of a custom projection's catch-up (the rows, decoding them, and unsealing each event's
personal values with its data subject's key); here it runs on another core, and the parent
decodes the events as plain values, about a fifth of what reading them cost it.

On its stdin: the store URL and ``UNTIL PAGE``; once it has written ``R`` (the store is open),
START, the position the parent has read to meanwhile. On its stdout, after the ``R``: frames,
each an 8-byte little-endian length and the msgpack of a list of ``(position, event)``: every
event of the log after START up to UNTIL, in order, PAGE at a time; then a frame of length 0.
A failure (the store, a damaged event) ends it without that last frame: the parent then reads
the rest itself, and meets the failure there if it is one.
"""

from __future__ import annotations

from typing import IO

import msgspec

from idstitch import bootstrap
from idstitch.service.pipe_lines import PipeLines, framed, write_all


def serve(requests: IO[bytes], frames: IO[bytes]) -> None:
    """Read the log from START to UNTIL and write it as frames (see the module)."""
    lines = PipeLines(requests.fileno())
    url = lines.next(None) or ""
    until, page = (int(w) for w in (lines.next(None) or "").split())
    stores = bootstrap.open_stores(url)
    encode = msgspec.msgpack.Encoder().encode
    try:
        write_all(frames.fileno(), b"R")
        after = int(lines.next(None) or until)
        while after < until:
            events = stores.log.read(after, page)
            if events and events[-1].position > until:
                events = [e for e in events if e.position <= until]
            if not events:
                break
            # A LoggedEvent is a named tuple: encoded as the array (position, event).
            _write(frames, encode(events))
            after = events[-1].position
        _write(frames, b"")
    except BrokenPipeError:
        pass  # the parent has what it needed, or is gone
    finally:
        stores.close()


def _write(frames: IO[bytes], data: bytes) -> None:
    # Straight to the descriptor, the frame whole (see write_all).
    write_all(frames.fileno(), framed(data))
