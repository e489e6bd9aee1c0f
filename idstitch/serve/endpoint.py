"""The ASGI app: Segment's HTTP Tracking API and Customer.io's Data Pipelines, in front of the writer.

A request is checked in the order that costs least to refuse: the Authorization header, a slot
in the queue (the bound on memory: a request is admitted before its body is read), the body
(size, gzip, JSON), a ``writeKey`` in the body when there was no header, each message's size.
Its messages then go to the writer (a process of its own, or a thread), and the answer waits
until they are committed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from idstitch.serve.bodies import Refusal, check_head, parse, read_body
from idstitch.serve.envelope import (
    BATCH_LIMIT,
    MESSAGE_LIMIT,
    encoded,
    single,
    stamp,
    too_large,
    unwrap_batch,
)
from idstitch.serve.lines import NESTED, BadBody, Envelope, envelope, fast, line, names_person
from idstitch.serve.process import WriterProcess
from idstitch.serve.writer import Submission, Writer

log = logging.getLogger("idstitch.serve")


BODY_TIMEOUT = 30.0
"""Seconds a request's body may take to arrive once it holds a slot: 408 after that."""


def error(status: int, code: str, message: str) -> JSONResponse:
    """Every non-2xx answer: ``{"code": ..., "message": ...}`` (the clients read both)."""
    return JSONResponse({"code": code, "message": message}, status_code=status)


def header_key(authorization: str | None) -> str | None:
    """The write key an Authorization header carries: Basic ``base64(key:)`` as Segment sends
    it, or Bearer ``key`` as Customer.io sends it; None without the header."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Refusal(401, "unauthorized", "the Basic credentials are not base64 of 'key:'") from None
        return decoded.partition(":")[0]
    raise Refusal(401, "unauthorized", "Authorization must be Basic base64(writeKey:) or Bearer writeKey")


class Gate:
    """What the requests share: the keys, the slots that bound the queue, the writer."""

    def __init__(self, writer: Writer | WriterProcess, write_keys: list[str], capacity: int,
                 queue_timeout: float) -> None:
        self.writer = writer
        self.keys = [key.encode() for key in write_keys]
        self.capacity = capacity
        self.queue_timeout = queue_timeout
        self.closing = False
        self._slots: asyncio.Semaphore | None = None
        self.admitted = 0
        """Requests holding a slot now (read, queued or being written)."""
        self._starting: asyncio.Lock | None = None

    def known(self, key: object) -> bool:
        """Whether a presented key is one of the configured ones (in constant time)."""
        if not isinstance(key, str) or not key:
            return False
        presented = key.encode()
        found = False
        for k in self.keys:  # every key compared, found or not: the time tells nothing
            found |= hmac.compare_digest(presented, k)
        return found

    def is_closing(self) -> bool:
        """Whether shutdown has begun (new requests are refused)."""
        return self.closing

    @property
    def slots(self) -> asyncio.Semaphore:
        # Made on first use, inside the event loop that serves the requests.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.capacity)
        return self._slots

    async def start(self) -> None:
        """Start the writer (it opens the workspace) (once; also when no lifespan ran)."""
        if self.writer.running:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not self.writer.running:
                await asyncio.to_thread(self.writer.start)

    async def shutdown(self) -> None:
        """Refuse new requests, answer the admitted ones, stop the writer, close the workspace."""
        self.closing = True
        for _ in range(self.capacity):  # holding every slot: no admitted request is left
            await self.slots.acquire()
        await asyncio.to_thread(self.writer.stop)

    async def handle(self, request: Request, kind: str) -> Response:
        """One request to ``/v1/<kind>``: admitted, read, checked, written, answered."""
        if self.closing:
            return error(503, "shutting_down", "the server is shutting down; retry later")
        try:
            key = header_key(request.headers.get("authorization"))
            if key is not None and not self.known(key):
                raise Refusal(401, "unauthorized", "unknown write key")
            await self.start()
        except Refusal as r:
            return error(r.status, r.code, r.message)
        except Exception:
            # The writer could not (re)start: the store cannot be opened now. The clients
            # retry a 503 later; the next request tries again.
            log.exception("the writer could not open the store")
            return error(503, "store_unavailable", "the store cannot be opened now; retry later")
        try:
            await asyncio.wait_for(self.slots.acquire(), self.queue_timeout)
            self.admitted += 1
        except TimeoutError:
            return error(503, "overloaded", f"the write queue stayed full for {self.queue_timeout:g} s; "
                                            "retry later")
        handed_over = False
        self.writer.coming(+1)
        try:
            if self.is_closing():  # it may have started while this request waited
                return error(503, "shutting_down", "the server is shutting down; retry later")
            try:
                submission = await self._read(request, kind, key)
                future = asyncio.wrap_future(self.writer.submit(submission))
            finally:
                self.writer.coming(-1)
            # The slot is the writer's until the messages are answered, even if the client
            # goes away meanwhile: that is what bounds the memory queued for it.
            future.add_done_callback(lambda _: self._release())
            handed_over = True
            outcome = await asyncio.shield(future)
        except Refusal as r:
            return error(r.status, r.code, r.message)
        except ClientDisconnect:
            # Gone before its body arrived: nothing was recorded, nobody reads the answer.
            log.info("a client went away before its request to /v1/%s was read", kind)
            return error(400, "client_disconnected", "the client went away before its body arrived")
        except Exception:
            log.exception("the messages of a request to /v1/%s could not be recorded", kind)
            return error(500, "store_error", "the messages could not be recorded; retry later")
        finally:
            if not handed_over:
                self._release()
        return JSONResponse({
            "success": True, "received": outcome.received,
            "rejected": [{"index": index, "reason": reason} for index, reason in outcome.rejected]})

    def _release(self) -> None:
        self.admitted -= 1
        self.slots.release()

    async def _read(self, request: Request, kind: str, key: str | None) -> Submission:
        try:
            # A slot is taken before the body is read (a key in the body is only known then):
            # a client that never finishes its body must not hold one, nor the shutdown, for ever.
            raw = await asyncio.wait_for(
                read_body(request, BATCH_LIMIT if kind == "batch" else MESSAGE_LIMIT),
                BODY_TIMEOUT)
        except TimeoutError:
            raise Refusal(408, "request_timeout", f"the body did not arrive within "
                                                  f"{BODY_TIMEOUT:g} s") from None
        except asyncio.CancelledError:
            # The server's stop closing a connection whose body had not arrived after its
            # grace period: nothing of it was taken, so it is an answer, not a failure
            # (uvicorn would log the cancellation as an exception of the app).
            raise Refusal(503, "shutting_down", "the server is shutting down; retry later"
                          ) from None
        box: Envelope | None = None
        if kind == "batch":
            try:
                box = envelope(raw)
            except BadBody as e:
                raise Refusal(400, "invalid_request", str(e)) from None
            body_key = box.write_key
        else:
            body = parse(raw)
            body_key = body.get("writeKey")
        if key is None and not self.known(body_key):
            raise Refusal(401, "unauthorized", "a write key is required: Basic, Bearer or writeKey"
                          if body_key is None else "unknown write key")
        received_at = datetime.now(UTC).isoformat()
        submission = Submission(endpoint=f"/v1/{kind}", received_at=received_at, messages=[],
                                lines=[], indices=[])
        if box is None:
            self._add(submission, 0, single(body, kind), received_at, len(raw))
            return submission
        head = check_head(box)
        if fast(box):
            sent_at, received = bytes(box.sent_at), msgspec.json.encode(received_at)
            for index, item in enumerate(box.batch):
                text, reason, person = line(item, sent_at, received)
                if text is None and reason is None:  # a writeKey to take out: the dict path
                    self._add(submission, index, msgspec.json.decode(item), received_at, len(item),
                              sent_at=head.get("sentAt"))
                elif text is None:
                    submission.refused.append((index, reason or "", item))
                else:
                    submission.messages.append(msgspec.Raw(text))
                    submission.lines.append(text)
                    submission.indices.append(index)
                    submission.names_person |= person
            return submission
        # Each message decoded alone, so that one that is not JSON (a byte that is not UTF-8
        # in a string) is refused alone, as on the fast path.
        decoded: list[Any] = []
        unreadable: dict[int, str] = {}
        for index, item in enumerate(box.batch):
            try:
                decoded.append(msgspec.json.decode(item))
            except (msgspec.DecodeError, RecursionError) as e:
                decoded.append(None)
                unreadable[index] = f"message: is not JSON: {e}"
        messages = unwrap_batch({**head, "batch": decoded})
        for index, (message, item) in enumerate(zip(messages, box.batch, strict=True)):
            if index in unreadable:
                submission.refused.append((index, unreadable[index], item))
            else:
                # Sized as the client sent it: its text in the batch, before the batch's
                # context is merged into it.
                self._add(submission, index, message, received_at, len(item))
        return submission

    @staticmethod
    def _add(submission: Submission, index: int, message: Any, received_at: str, size: int,
             sent_at: Any = None) -> None:
        """The dict path for one message: its write key taken out first (a credential, and a
        refused message is logged), sized as the client sent it (``size`` bytes), stamped,
        encoded."""
        if isinstance(message, dict):
            message.pop("writeKey", None)
            inner = message.get("batch")
            for item in inner if isinstance(inner, list) else ():
                if isinstance(item, dict):
                    item.pop("writeKey", None)
        if isinstance(message, dict) and sent_at is not None and message.get("sentAt") is None:
            message["sentAt"] = sent_at  # ingest's rule (adapters.batches.unwrap): null is none
        if isinstance(message, dict) and "batch" in message:
            submission.refused.append((index, NESTED, message))
            return
        if isinstance(message, dict) and (oversized := too_large(size)) is not None:
            submission.refused.append((index, oversized, message))
            return
        stamp([message], received_at)
        line_, reason = encoded(message)
        if line_ is None:
            submission.refused.append((index, reason or "", message))
        else:
            submission.messages.append(message)
            submission.lines.append(line_)
            submission.indices.append(index)
            submission.names_person |= names_person(message.get("userId"))


def build(gate: Gate) -> Starlette:
    """The Starlette app for a gate: seven POST routes, JSON errors, a draining lifespan."""
    async def batch(request: Request) -> Response:
        return await gate.handle(request, "batch")

    def route(kind: str, slash: str = "") -> Route:
        async def one(request: Request) -> Response:
            return await gate.handle(request, kind)
        return Route(f"/v1/{kind}{slash}", one, methods=["POST"])

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own answers (404, 405) get the JSON body the clients expect too.
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error(status, "not_found" if status == 404 else
                     "method_not_allowed" if status == 405 else "error", str(detail))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gate.start()
        try:
            yield
        finally:
            await gate.shutdown()

    # Each path also with a trailing slash, served as it is: Starlette would answer a 307
    # redirect with an empty body (every other answer has a JSON one).
    kinds = ("identify", "track", "screen", "page", "alias", "group")
    routes = [Route("/v1/batch", batch, methods=["POST"]),
              Route("/v1/batch/", batch, methods=["POST"]),
              *(route(kind, slash) for kind in kinds for slash in ("", "/"))]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: http_error})
    app.state.gate = gate
    return app


__all__ = ["Gate", "Refusal", "build", "error", "header_key", "read_body"]
