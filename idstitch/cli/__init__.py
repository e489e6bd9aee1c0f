"""The ``idstitch`` command line: demo, ingest, profile, merges, rebuild.

The store is ``--db URL``, else ``IDSTITCH_DATABASE_URL``, else ``./idstitch.db`` (the demo has
its own default, see ``idstitch demo --help``). Errors idstitch raises on purpose are printed as
one line, ``error: ...``, with exit status 2; a person that is not found gives exit status 1.

The commands live by what they look at: :mod:`~idstitch.cli.store` (the store as a whole:
demo, ingest, rebuild) and :mod:`~idstitch.cli.persons` (one person as it stands).
"""

from __future__ import annotations

import argparse
from typing import cast

from rich.console import Console
from rich.text import Text

from idstitch.cli.common import Handler, open_workspace
from idstitch.cli.persons import cmd_merges, cmd_profile
from idstitch.cli.store import DEMO_FILE, cmd_demo, cmd_ingest, cmd_rebuild
from idstitch.errors import IdstitchError
from idstitch.projections.identity import POLICIES
from idstitch.service.ingest import INGEST_BATCH


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    # --db and --policy are accepted before or after the subcommand; SUPPRESS keeps a
    # subcommand that was not given them from overwriting the global value with its default.
    # (No set_defaults for them: parents share action objects, so it would undo SUPPRESS.)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", default=argparse.SUPPRESS,
                        help="store URL: memory:, sqlite:///path, postgresql://... "
                             "(default: $IDSTITCH_DATABASE_URL, else sqlite:///idstitch.db)")
    common.add_argument("--policy", choices=POLICIES, default=argparse.SUPPRESS,
                        help="anonymous_merge policy (default: the one the store was built "
                             "under, else merge); a different one rebuilds the projection")

    parser = argparse.ArgumentParser(
        prog="idstitch", parents=[common],
        description="Event-sourced identity for mobile-SDK backends: inspect and replay a store.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    add("demo", cmd_demo,
        "play the Customer.io and Adapty seed stories and show the profiles and merges "
        f"(default store: a fresh ./{DEMO_FILE}, deleted first; an explicit --db must be empty)")
    add("profile", cmd_profile,
        "show a person: by user id, email, cio_<person_id>, person id or anonymous id"
        ).add_argument("id", metavar="ID")
    add("merges", cmd_merges,
        "list a person's conversions, merges and switches").add_argument("id", metavar="ID")
    add("rebuild", cmd_rebuild, "replay the log from position 0 into fresh projections")
    ingest = add("ingest", cmd_ingest,
                 "ingest an NDJSON file of Segment-spec messages (Customer.io mobile SDK traffic)")
    ingest.add_argument("file", metavar="FILE.ndjson")
    ingest.add_argument("--batch", type=int, default=INGEST_BATCH, metavar="N",
                        help=f"messages per transaction (default {INGEST_BATCH})")
    ingest.add_argument("--rejects", metavar="FILE",
                        help="write rejected lines with their reasons to FILE (JSON lines)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status (0 ok, 1 not found, 2 error)."""
    args = build_parser().parse_args(argv)
    for name in ("db", "policy"):
        if not hasattr(args, name):
            setattr(args, name, None)
    # Consoles are made per call so they write to the sys.stdout/sys.stderr of that moment.
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    handler = cast(Handler, args.handler)
    try:
        return handler(args, console, err)
    except IdstitchError as e:
        err.print(Text(f"error: {e}", style="red"), soft_wrap=True)
        return 2


__all__ = ["build_parser", "main", "open_workspace"]
