"""Projections as processes of their own: ``idstitch project`` and ``idstitch projections``.

``project`` keeps every projection (the built-in ones and the custom ones named with
``--projection module:Class``) at the head of the log until it is stopped (SIGTERM or
Ctrl-C end it cleanly; a kill -9 loses nothing: rows and positions commit together). Several
may run for the same store: one folds each projection at a time (its lease), the others wait
and take over when it dies. ``projections`` shows where each projection stands.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Callable, Sequence
from types import FrameType

from rich.console import Console
from rich.table import Table
from rich.text import Text

from idstitch.adapters.urls import redacted
from idstitch.cli.common import Handler, seconds
from idstitch.cli.output import write_json_line
from idstitch.errors import InvalidCommand, PolicyMismatch, ProjectionFailed
from idstitch.opening import Access, open_store
from idstitch.projections.base import import_topic
from idstitch.projections.custom import Projection, check_projection
from idstitch.service.following import Follower
from idstitch.workspace import Workspace

PROJECT_HELP = ("run the projections as a process of its own: follow the log as writers "
                "append it (writers opened with projections=\"external\" only append)")
PROJECTIONS_HELP = "list every projection with its version, committed position and lag"


def load_projections(topics: Sequence[str]) -> list[Projection]:
    """Instances of the custom projection classes named ``module:Class``; InvalidCommand
    naming ``--projection`` when one cannot be imported or is no idstitch.Projection."""
    found: list[Projection] = []
    for topic in topics:
        if ":" not in topic:
            raise InvalidCommand("--projection", f"{topic!r} must be module:Class")
        try:
            cls = import_topic(topic)
        except Exception as e:
            raise InvalidCommand("--projection", f"cannot import {topic}: "
                                                 f"{type(e).__name__}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Projection)):
            raise InvalidCommand("--projection", f"{topic} is not an idstitch.Projection "
                                                 "subclass")
        found.append(cls())
    return found


def register(ws: Workspace, projections: Sequence[Projection]) -> None:
    """Register custom projections (their tables made, not caught up: the follower does that
    in batches, and a SIGTERM stops it after the batch it is committing); one whose handler
    fails stays registered, and the follower reports it (once, as it reports every failure)
    and retries it: never fatal."""
    for projection in projections:
        with contextlib.suppress(ProjectionFailed):
            ws._services.projector.register(check_projection(projection), catch_up=False)


def cmd_project(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Follow the log until stopped."""
    stopping: list[Follower] = []
    terminated: list[bool] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        terminated.append(True)
        if not stopping:
            raise KeyboardInterrupt  # still opening: nothing folded yet to finish
        stopping[0].stop()

    signal.signal(signal.SIGTERM, stop)
    custom = load_projections(args.projection or [])
    while True:
        try:
            follow(args, custom, stopping, err)
            return 0
        except KeyboardInterrupt:
            if terminated:
                return 0  # SIGTERM is how a supervisor stops it: not a failure (Ctrl-C is)
            raise
        except PolicyMismatch as e:
            if args.policy is not None:
                raise
            # Opened without a policy, it follows the store's: one recorded after it opened
            # (a writer opening a store nothing was folded in yet, with its policy) is adopted.
            err.print(Text(f"{e}; following the store's policy", style="yellow"),
                      soft_wrap=True)
            stopping.clear()


def follow(args: argparse.Namespace, custom: list[Projection], stopping: list[Follower],
           err: Console) -> None:
    """Open the store and follow it until stopped (``stopping`` holds the follower)."""
    # A store to follow, not one to start: a mistyped --db would follow an empty new file
    # forever while the writers' log grows elsewhere.
    with open_store(args.db, args.policy, Access.FOLLOW) as ws:
        if ws._services.stores.shared_url is None:
            raise InvalidCommand("--db", "memory: cannot be followed: no other process can "
                                         "write to it (a SQLite file or PostgreSQL)")
        register(ws, custom)
        services = ws._services
        follower = Follower(services.projector, services.stores.listen, poll=args.poll,
                            report=lambda line: err.print(Text(line, style="yellow"),
                                                          soft_wrap=True))
        stopping.append(follower)
        names = [p.name for p in ws.projections] + [p.name for p in custom]
        err.print(Text(f"projecting {', '.join(names)} of {redacted(ws.url)} "
                       f"(anonymous_merge={ws.anonymous_merge})", style="dim"), soft_wrap=True)
        with contextlib.suppress(KeyboardInterrupt):
            follower.run()
        err.print(Text(f"stopped at position {follower.reached}", style="dim"))


def cmd_projections(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Where every projection stands (never catches anything up)."""
    with open_store(args.db, args.policy, Access.QUERY) as ws:
        head = ws.log.head()
        found = ws.projection_status()
    if args.json:
        write_json_line({"head": head, "projections": [
            {"name": s.name, "version": s.version, "position": s.position, "lag": s.lag,
             "custom": s.custom} for s in found]})
        return 0
    table = Table(title=f"projections (log head {head})")
    for column in ("name", "kind", "version", "position", "lag"):
        table.add_column(column, justify="right" if column in ("version", "position", "lag")
                         else "left")
    for s in found:
        table.add_row(s.name, "custom" if s.custom else "built-in", str(s.version),
                      str(s.position), Text(str(s.lag), style="yellow" if s.lag else "green"))
    console.print(table)
    return 0


def add_projecting(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``project`` and ``projections`` to the parser (``add`` as in build_parser)."""
    project = add("project", cmd_project, PROJECT_HELP)
    project.add_argument("--projection", action="append", metavar="module:Class",
                         help="a custom projection to keep too (repeatable); its module must "
                              "be importable by this process")
    project.add_argument("--poll", type=seconds, default=None, metavar="SECONDS",
                         help="look at the log at least this often (default: 1 on PostgreSQL, "
                              "which also wakes on every append; 0.05 on SQLite)")
    add("projections", cmd_projections, PROJECTIONS_HELP).add_argument(
        "--json", action="store_true", help="one JSON object on stdout")
