"""The ``idstitch`` command line: demo, ingest, profile, device, merges, history, explain,
export, rebuild, project, projections.

The store is ``--db URL``, else ``IDSTITCH_DATABASE_URL``, else ``./idstitch.db`` (the demo has
its own default, see ``idstitch demo --help``). A read command never creates or rewrites a
store (see :mod:`~idstitch.opening`). Every failure is one line on stderr, ``error: ...``,
and an exit status, never a traceback: 1 nothing found, 2 an error (so is a bad argument, by
argparse), 3 ingest rejected lines; the full list is in :mod:`~idstitch.cli.failures`.
Piped output is never cut to a width and carries no trailing spaces (:mod:`~idstitch.cli.output`).

The audit commands answer an auditor from the log:

- ``history ID``: the person's timeline, a block per event (client time, recorded time where it
  differs, device, event, its data in short, ``key: old -> new``, merges and refused
  identifiers marked), ``--limit``/``--offset`` pages with a line saying what is shown of how
  many, ``--device`` for one device's part; on a terminal a page taller than the screen goes
  through the pager (``$PAGER``; colour with ``less -R``).
- ``profile ID --as-of POS|TIME``: the profile as the log stood at a position or at an
  ISO-8601 time with a timezone (a time without one is an error naming ``--as-of``).
- ``explain ID ATTR``: the current value, the event that set it, the writes that lost to it
  (paged as ``history`` is: ``--limit``/``--offset``).
- ``export ID``: every Change of the history as one JSON line on stdout, nothing else there
  (the count goes to stderr): ``idstitch export dana@example.com > subject.ndjson``.

The commands live by what they look at: :mod:`~idstitch.cli.store` (the store as a whole:
demo, ingest, rebuild), :mod:`~idstitch.cli.persons` (one person or device: profile, merges,
device) and :mod:`~idstitch.cli.audit` (how a person came to be: history, explain, export).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import version
from typing import cast

from idstitch.cli.audit import PAGE, cmd_explain, cmd_export, cmd_history
from idstitch.cli.common import Handler, open_workspace
from idstitch.cli.decisions import add_decisions
from idstitch.cli.failures import ERROR, run_guarded
from idstitch.cli.integrity import (
    DIGEST_HELP,
    UPGRADE_HELP,
    VERIFY_HELP,
    cmd_digest,
    cmd_upgrade,
    cmd_verify,
)
from idstitch.cli.output import console_for
from idstitch.cli.persons import cmd_device, cmd_merges, cmd_profile
from idstitch.cli.projecting import add_projecting
from idstitch.cli.serve import add_serve
from idstitch.cli.store import DEMO_FILE, cmd_demo, cmd_ingest, cmd_rebuild
from idstitch.projections.identity import POLICIES
from idstitch.service.ingest import INGEST_BATCH


def _count(value: str) -> int:
    """A whole number, 0 or more (argparse reports anything else as a usage error)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


def _positive(value: str) -> int:
    """A whole number, 1 or more (argparse reports anything else as a usage error)."""
    number = _count(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return number


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
                        help="anonymous_merge policy of a new store (default: the one the "
                             "store was built under, else merge); only `rebuild --policy` "
                             "changes an existing store's, other commands refuse a different one")

    parser = argparse.ArgumentParser(
        prog="idstitch", parents=[common],
        description="Event-sourced identity for mobile-SDK backends: inspect and replay a store.")
    parser.add_argument("--version", action="version", version=f"idstitch {version('idstitch')}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    add("demo", cmd_demo,
        "play the Customer.io and Adapty seed stories and show the profiles and merges "
        f"(default store: a fresh ./{DEMO_FILE}, a former demo's replaced; an explicit --db must "
        "be empty)")
    profile = add("profile", cmd_profile,
                  "show a person: by user id, email, cio_<person_id>, person id or anonymous "
                  "id; with --as-of, as the log stood then")
    profile.add_argument("id", metavar="ID")
    profile.add_argument("--as-of", metavar="POS|TIME",
                         help="a log position (the log up to and including it), or an ISO-8601 "
                              "time with a timezone, e.g. 2026-01-01T09:00:00Z (the log as "
                              "recorded by then); the identifier resolves as it did then")
    device = add("device", cmd_device,
                 "show a device: token, platform, its person, anonymous id, attributes "
                 "(custom and collected), last used, last push status")
    device.add_argument("id", metavar="DEVICE_ID")
    device.add_argument("--json", action="store_true",
                        help="one JSON object on stdout (compact, keys sorted)")
    add("merges", cmd_merges,
        "list a person's conversions, merges and switches").add_argument("id", metavar="ID")
    history = add("history", cmd_history,
                  "a person's timeline: every event that shaped it, with what it changed "
                  "(old -> new), merges and refused identifiers; paged")
    history.add_argument("id", metavar="ID")
    history.add_argument("--limit", type=_count, default=PAGE, metavar="N",
                         help=f"changes per page (default {PAGE}; 0 for all)")
    history.add_argument("--offset", type=_count, default=0, metavar="N",
                         help="changes to skip first (default 0)")
    history.add_argument("--device", metavar="DEVICE_ID",
                         help="only the events of this device (while it was on the person)")
    history.add_argument("--no-pager", action="store_true",
                         help="never page, even when the page is taller than the terminal")
    explain = add("explain", cmd_explain,
                  "where a person's current value of an attribute came from: the event that "
                  "set it, and the writes that lost to it")
    explain.add_argument("id", metavar="ID")
    explain.add_argument("attribute", metavar="ATTR")
    explain.add_argument("--limit", type=_count, default=PAGE, metavar="N",
                         help=f"losing writes per page (default {PAGE}; 0 for all)")
    explain.add_argument("--offset", type=_count, default=0, metavar="N",
                         help="losing writes to skip first, in log order (default 0)")
    explain.add_argument("--no-pager", action="store_true",
                         help="never page, even when the page is taller than the terminal")
    add("export", cmd_export,
        "a person's whole history as NDJSON on stdout, one Change a line, for a "
        "subject-access request: idstitch export ID > subject.ndjson"
        ).add_argument("id", metavar="ID")
    rebuild = add("rebuild", cmd_rebuild,
                  "replay the log from position 0 into fresh projections (all, or the named "
                  "ones; see `idstitch projections`)")
    rebuild.add_argument("names", nargs="*", metavar="NAME",
                         help="projections to rebuild (default: every one)")
    rebuild.add_argument("--projection", action="append", metavar="module:Class",
                         help="a custom projection to register first (to rebuild it by name)")
    ingest = add("ingest", cmd_ingest,
                 "ingest an NDJSON file of Segment-spec messages (Customer.io mobile SDK traffic)")
    ingest.add_argument("file", metavar="FILE.ndjson")
    ingest.add_argument("--batch", type=_positive, default=INGEST_BATCH, metavar="N",
                        help=f"messages per transaction (default {INGEST_BATCH})")
    ingest.add_argument("--rejects", metavar="FILE",
                        help="write rejected lines with their reasons to FILE (JSON lines; "
                             "not the input file); checked before anything is ingested")
    ingest.add_argument("--allow-rejects", action="store_true",
                        help="exit 0 even when lines were rejected (default: exit 3)")
    add_serve(add)
    add_projecting(add)
    add_decisions(add)
    add("digest", cmd_digest, DIGEST_HELP)
    add("verify", cmd_verify, VERIFY_HELP).add_argument(
        "--digest", metavar="FILE", help="a digest printed earlier by idstitch digest")
    add("upgrade", cmd_upgrade, UPGRADE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status (see :mod:`~idstitch.cli.failures`)."""
    args = build_parser().parse_args(argv)
    for name in ("db", "policy"):
        if not hasattr(args, name):
            setattr(args, name, None)
    # A stream closed before the start (`>&-`, `2>&-`) is None in Python. Without stderr a
    # command still runs (its exit status tells); without stdout it stops before anything,
    # as for any output that cannot be written.
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
    if sys.stdout is None:
        print("error: cannot write the output: stdout is closed", file=sys.stderr)
        return ERROR
    # Consoles are made per call so they write to the sys.stdout/sys.stderr of that moment.
    console = console_for(sys.stdout)
    err = console_for(sys.stderr, stderr=True)
    return run_guarded(cast(Handler, args.handler), args, console, err)


__all__ = ["build_parser", "main", "open_workspace"]
