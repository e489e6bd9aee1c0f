"""``idstitch serve``: the HTTP endpoint the Segment and Customer.io clients already speak.

    from idstitch.serve import app
    asgi = app("sqlite:///identity.db", write_keys=["my-write-key"])   # run with uvicorn, mount, ...

POST ``/v1/batch``, ``/v1/identify``, ``/v1/track``, ``/v1/screen``, ``/v1/page``, ``/v1/alias``
and ``/v1/group`` as Segment's HTTP Tracking API and Customer.io's Data Pipelines accept them.
A 200 means the messages are committed to the store; the messages refused inside a batch are
listed in the answer and appended to the rejects log. Needs the ``serve`` extra
(``pip install 'idstitch[serve]'``: Starlette, uvicorn, httptools, uvloop).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from starlette.applications import Starlette

from idstitch.bootstrap import resolve_url
from idstitch.errors import InvalidCommand
from idstitch.serve.endpoint import Gate, build
from idstitch.serve.envelope import BATCH_LIMIT, MESSAGE_LIMIT, unwrap_batch
from idstitch.serve.process import WriterProcess
from idstitch.serve.rejects import RejectsLog, default_path
from idstitch.serve.writer import GROUP_MESSAGES, Writer
from idstitch.workspace import Workspace

CAPACITY = 64
"""Requests admitted at once by default (read, queued or being written): at most ~32 MB of bodies."""
QUEUE_TIMEOUT = 10.0
"""Seconds a request waits for a slot by default before it is answered 503."""


def app(
    ws_or_url: Workspace | str | None, write_keys: Iterable[str], *,
    rejects: str | os.PathLike[str] | None = None, capacity: int = CAPACITY,
    queue_timeout: float = QUEUE_TIMEOUT, group_messages: int = GROUP_MESSAGES,
    external: bool = False, create: bool = True,
) -> Starlette:
    """The ASGI app that records the messages posted to it in a workspace.

    ``ws_or_url``: a store URL (or None for ``IDSTITCH_DATABASE_URL``), opened by the app's
    writer process (:mod:`idstitch.serve.process`) at startup and closed at shutdown; or an
    open Workspace, which a writer thread of this process then uses alone (do not use it
    elsewhere while the app runs; its owner closes it).
    Either way, on a store another process can open, a projecting child process follows the
    log while the app runs (see :mod:`idstitch.serve.keeping`).
    ``write_keys``: the keys a request may present (at least one). ``rejects``: the NDJSON
    file refused messages are appended to (default: ``<file>.rejects.ndjson`` beside a SQLite
    store, else ``./idstitch-rejects.ndjson``). ``capacity``: requests admitted at once;
    ``queue_timeout``: seconds a request waits for a slot before a 503. ``group_messages``: at
    most this many messages of waiting requests are committed together. ``external``: with a
    URL, open the store with ``projections="external"``: the writer only appends (a request
    waits for its group's commit alone) and an ``idstitch project`` process keeps the read
    models; with a Workspace, the workspace's own mode decides. ``create``: with a URL, the
    writer's first start may start a new store where there is none (``idstitch serve`` only
    with ``--create``); a writer restarted after it died never does (503 until the store is
    back).
    """
    if isinstance(write_keys, (str, bytes)):
        raise InvalidCommand("write_keys", "must be a list of keys, not one string")
    keys = list(write_keys)
    if not keys or not all(isinstance(k, str) and k.strip() for k in keys):
        raise InvalidCommand("write_keys", "must hold at least one key, each a non-empty string")
    if type(capacity) is not int or capacity < 1:
        raise InvalidCommand("capacity", f"must be an integer of at least 1, got {capacity!r}")
    if type(group_messages) is not int or group_messages < 1:
        raise InvalidCommand("group_messages", f"must be an integer of at least 1, got {group_messages!r}")
    if not isinstance(queue_timeout, (int, float)) or not queue_timeout > 0:
        raise InvalidCommand("queue_timeout", f"must be a positive number of seconds, got {queue_timeout!r}")
    if rejects is not None and not Path(rejects).absolute().parent.is_dir():
        # Checked now: appending there would fail every request with a refusal in it (500).
        raise InvalidCommand("rejects", f"the folder of {str(rejects)!r} does not exist")
    writer: Writer | WriterProcess
    if isinstance(ws_or_url, Workspace):
        ws = ws_or_url
        writer = Writer(lambda: ws, owned=False, rejects=RejectsLog(rejects or default_path(ws.url)),
                        group_messages=group_messages)
    elif ws_or_url is None or isinstance(ws_or_url, str):
        url = ws_or_url
        path = rejects or default_path(resolve_url(url))
        writer = WriterProcess(url, external=external, rejects=RejectsLog(path),
                               group_messages=group_messages, create=bool(create))
    else:
        raise InvalidCommand("ws_or_url",
                             f"must be a Workspace or a store URL, got {type(ws_or_url).__name__}")
    return build(Gate(writer, [k.strip() for k in keys], capacity, float(queue_timeout)))


def rejects_path(asgi: Starlette) -> Path:
    """Where an app made by :func:`app` appends the messages it refused."""
    gate: Gate = asgi.state.gate
    return gate.writer.rejects.path


__all__ = ["BATCH_LIMIT", "CAPACITY", "MESSAGE_LIMIT", "QUEUE_TIMEOUT", "app", "rejects_path",
           "unwrap_batch"]
