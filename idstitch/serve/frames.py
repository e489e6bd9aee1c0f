"""The frames the HTTP process and the writer process exchange over the writer's stdin and
stdout: a 4-byte big-endian length, then a msgpack map (msgspec: bytes travel as bytes, the
messages' JSON lines are not encoded again).

HTTP process -> writer: the configuration (first), then submissions, then ``stop``.
Writer -> HTTP process: ``ready`` (or ``error``), then one answer a submission, in any order.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
_LENGTH = struct.Struct(">I")


class Config(msgspec.Struct):
    """What the writer process opens, and how it groups."""

    url: str | None
    external: bool
    rejects: str
    group_messages: int
    create: bool
    """Whether it may start a new store (its first start, when the app was asked to); a
    restarted writer never does: the store it wrote is gone (moved, deleted, a mistyped path
    after a restart of the database server) and traffic must not go into a new empty one."""


class Sent(msgspec.Struct, tag="submit"):
    """One request's messages (see :class:`idstitch.serve.writer.Submission`): each message as
    the JSON line ingest reads, and the ones refused before as (index, reason, JSON)."""

    id: int
    endpoint: str
    received_at: str
    lines: list[bytes]
    indices: list[int]
    refused: list[tuple[int, str, bytes]]
    names_person: bool
    coming: int
    """Requests the HTTP process has admitted and is still reading (the writer lingers)."""


class Stop(msgspec.Struct, tag="stop"):
    """Answer everything sent so far, close the store, exit."""


class Ready(msgspec.Struct, tag="ready"):
    """The store is open; submissions are taken."""


class Failed(msgspec.Struct, tag="error"):
    """The store could not be opened (the process then exits)."""

    reason: str


class Answer(msgspec.Struct, tag="answer"):
    """What became of one submission (``failed``: the store failed, nothing is reported
    recorded); ``groups``: commits made so far."""

    id: int
    received: int
    rejected: list[tuple[int, str]]
    groups: int
    failed: str | None = None


ToWriter = Sent | Stop
FromWriter = Ready | Failed | Answer
_to_writer = msgspec.msgpack.Decoder(ToWriter)
_from_writer = msgspec.msgpack.Decoder(FromWriter)


def write(fd: int, frame: Any) -> None:
    """Write one frame whole (blocking); OSError (BrokenPipeError) if the other side is gone."""
    body = _encoder.encode(frame)
    view = memoryview(_LENGTH.pack(len(body)) + body)
    while view:
        view = view[os.write(fd, view):]


def _read(fd: int) -> bytes | None:
    """One frame's body; None at the end of the stream (the other side is gone)."""
    head = _exactly(fd, _LENGTH.size)
    if head is None:
        return None
    return _exactly(fd, _LENGTH.unpack(head)[0])


def _exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        try:
            chunk = os.read(fd, min(left, 1 << 20))
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_config(fd: int) -> Config | None:
    """The first frame the writer process reads."""
    body = _read(fd)
    return None if body is None else msgspec.msgpack.decode(body, type=Config)


def read_to_writer(fd: int) -> ToWriter | None:
    """The next frame for the writer process; None once the HTTP process is gone."""
    body = _read(fd)
    return None if body is None else _to_writer.decode(body)


def read_from_writer(fd: int) -> FromWriter | None:
    """The next frame from the writer process; None once it is gone."""
    body = _read(fd)
    return None if body is None else _from_writer.decode(body)


__all__ = ["Answer", "Config", "Failed", "FromWriter", "Ready", "Sent", "Stop", "ToWriter",
           "read_config", "read_from_writer", "read_to_writer", "write"]
