"""What a request's body is: read within its limits, decompressed, parsed, its envelope's own
fields checked; :class:`Refusal` (an answer with an error) when it is not what it must be.
Used by :mod:`idstitch.serve.endpoint`, which answers the refusals."""

from __future__ import annotations

import zlib
from typing import Any

import msgspec
from starlette.requests import Request

from idstitch.adapters import batches
from idstitch.errors import InvalidCommand
from idstitch.serve.lines import Envelope

GZIP_MAGIC = b"\x1f\x8b"
"""The first bytes of every gzip member."""


class Refusal(Exception):
    """A request answered with an error: its status, a code and a message for the JSON body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check_head(box: Envelope) -> dict[str, Any]:
    """A batch envelope's own fields, decoded and checked as ingest checks them (a Refusal,
    400, for a ``sentAt`` or ``context`` that is not what it must be: the whole batch, whose
    clock or context it is, as ``ws.ingest`` refuses the same envelope)."""
    head: dict[str, Any] = {}
    try:
        if box.sent_at:
            head["sentAt"] = msgspec.json.decode(box.sent_at)
        if box.context:
            head["context"] = msgspec.json.decode(box.context)
        batches.check_head(head)
    except (msgspec.DecodeError, RecursionError) as e:
        raise Refusal(400, "invalid_request", f"the body is not JSON: {e}") from None
    except InvalidCommand as e:
        raise Refusal(400, "invalid_request", str(e)) from None
    return head


async def read_body(request: Request, limit: int) -> bytes:
    """The body, decompressed; a Refusal when it is larger than ``limit`` once decompressed."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise Refusal(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: only gzip is accepted")
    gzipped = encoding == "gzip"
    # gzip can grow incompressible data a little; past this the decompressed body is too large.
    cap = limit + limit // 100 + 1024 if gzipped else limit
    too_large = Refusal(413, "payload_too_large",
                        f"the body is larger than {limit // 1024} KB (decompressed)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not gzipped:
        return raw
    # Every member of the stream, as gzip and Python's gzip module read it; zero bytes of
    # padding after the last one are ignored, anything else is no gzip body.
    parts: list[bytes] = []
    size, rest = 0, raw
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as e:
            raise Refusal(400, "invalid_request", f"the body is not valid gzip: {e}") from None
        size += len(part)
        if size > limit:
            raise too_large
        if not inflater.eof:
            raise Refusal(400, "invalid_request", "the gzip body is truncated")
        parts.append(part)
        rest = inflater.unused_data
        if rest and not rest.startswith(GZIP_MAGIC):
            if rest.strip(b"\x00"):
                raise Refusal(400, "invalid_request", "the body has data after its gzip stream")
            break
    return b"".join(parts)


def parse(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object."""
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as e:
        raise Refusal(400, "invalid_request", f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise Refusal(400, "invalid_request", "the body must be a JSON object")
    return body


__all__ = ["GZIP_MAGIC", "Refusal", "check_head", "parse", "read_body"]
