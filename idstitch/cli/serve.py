"""``idstitch serve``: run the HTTP endpoint (``idstitch.serve``) with uvicorn.

Imported by the command line whatever extras are installed, so Starlette and uvicorn are
imported only when the command runs: without the ``serve`` extra it says how to get it.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from idstitch.cli.common import Handler, open_workspace, port_number
from idstitch.cli.rejects import check_rejects_path
from idstitch.opening import Access

SHUTDOWN_GRACE = 10
"""Seconds ``serve`` waits, once told to stop, for the requests in flight to finish."""
ENV_KEYS = "IDSTITCH_WRITE_KEYS"
"""Comma-separated write keys, when no ``--write-key`` is given."""


def add_serve(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Register the ``serve`` subcommand through the parser's ``add``."""
    serve = add("serve", cmd_serve,
                "receive Segment / Customer.io SDK traffic over HTTP (POST /v1/batch, /v1/identify, "
                "...) and record it in the store; needs pip install 'idstitch[serve]'")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=8000,
                       help="port to listen on (default 8000)")
    serve.add_argument("--write-key", action="append", dest="write_keys", metavar="KEY",
                       type=write_key,
                       help=f"a write key clients may present; repeatable (default: ${ENV_KEYS}, "
                            "comma-separated)")
    serve.add_argument("--external", action="store_true",
                       help="append only: an `idstitch project` process keeps the read models "
                            "(requests then wait for their commit alone)")
    serve.add_argument("--create", action="store_true",
                       help="start a new store at --db when there is none (a new or empty "
                            "file); without it a SQLite path that does not exist is an error")
    serve.add_argument("--rejects", metavar="FILE",
                       help="NDJSON log of refused messages (default: <db file>.rejects.ndjson "
                            "beside a SQLite store, else ./idstitch-rejects.ndjson)")


def write_key(text: str) -> str:
    """An argparse type: a write key, not blank (a client could never present it)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a write key is not blank")
    return text


def cmd_serve(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Serve until SIGTERM or Ctrl-C; then drain what was accepted and close the store."""
    keys = args.write_keys or [k for k in os.environ.get(ENV_KEYS, "").split(",") if k.strip()]
    if not keys:
        err.print(Text(f"error: give at least one --write-key (or set {ENV_KEYS})", style="red"))
        return 2
    try:
        import uvicorn

        from idstitch.serve import app, rejects_path
    except ImportError as e:
        err.print(Text(f"error: idstitch serve needs the serve extra ({e.name} is missing): "
                       "pip install 'idstitch[serve]'", style="red"), soft_wrap=True)
        return 2
    if args.policy is not None:
        err.print(Text("error: --policy is not taken by serve: the store keeps its own", style="red"))
        return 2
    if args.rejects is not None:
        check_rejects_path(args.rejects, None, args.db)
    # Open the store once here, so that a bad URL or an unreachable server is an error line
    # and exit status 2 (main handles it), not a traceback from the server's startup. A
    # mistyped --db must not send production traffic into a fresh empty file: a new store
    # only when asked for (the writer's own open later would create one silently).
    open_workspace(args.db, None, Access.CREATE if args.create else Access.READ).close()
    try:
        # Bound and let go at once: a taken port or an unknown address is one error line and
        # status 2 here, not uvicorn's log line and its own exit status.
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as e:
        err.print(Text(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}",
                       style="red"), soft_wrap=True)
        return 2
    # The store is there now: the writer process, and any restart of it, only opens it.
    asgi = app(args.db, keys, rejects=args.rejects, external=args.external, create=False)
    err.print(f"idstitch serve: http://{args.host}:{args.port}/v1/batch, {len(keys)} write key(s), "
              f"rejects to {rejects_path(asgi).resolve()}", soft_wrap=True, highlight=False)
    # uvicorn handles SIGTERM and SIGINT: it stops accepting, lets the requests in flight finish,
    # then runs the app's shutdown, which drains the writer and closes the store.
    # A connection still open after SHUTDOWN_GRACE seconds (a client that never sends its body)
    # is closed: the stop cannot hang on it. Requests whose messages reached the writer are
    # still answered by it, and drained before the store is closed.
    uvicorn.run(asgi, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=SHUTDOWN_GRACE)
    return 0


__all__ = ["ENV_KEYS", "add_serve", "cmd_serve"]
