"""Person-level decisions from the command line: ``merge A B --reason TEXT``,
``unmerge MERGE_ID --reason TEXT`` and ``forget ID --reason TEXT``.

``idstitch merge PRIMARY SECONDARY --reason TEXT`` merges two identified persons (any identifier
of each: user id, email, cio_<person_id>, person id) and prints the merge's id alone on stdout,
so a script can keep it: ``MERGE=$(idstitch merge ann ann@example.com --reason "one customer")``.
A merge changes a store, so it needs one (it never creates one): an unknown person, the same
person twice or a blank reason is an error (exit 2) and records nothing.

``idstitch unmerge MERGE_ID --reason TEXT`` undoes a merge (one ``merge`` printed, or one of
kind ``merged`` that ``idstitch merges`` lists): both persons become what they would be had it
never been recorded. An unknown id, a conversion or switch, or a merge undone already is an
error (exit 2).

``idstitch forget ID --reason TEXT`` erases a person (the right to erasure; any identifier of
it): its keys are destroyed, its identifiers refused from then on, the projections rebuilt
without it. An unknown person, one forgotten already or a blank reason is an error (exit 2)
and changes nothing. The reason is kept in the log for good: no personal data in it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from idstitch.cli.common import Handler, open_workspace
from idstitch.opening import Access

MERGE_HELP = ("merge two identified persons: the secondary's identifiers, devices and "
              "attributes join the primary, whose values win; prints the merge id")


def cmd_merge(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Merge SECONDARY into PRIMARY and print the merge id (nothing else on stdout)."""
    with open_workspace(args.db, args.policy, Access.READ) as ws:
        merge_id = ws.merge_persons(args.primary, args.secondary, reason=args.reason)
    print(merge_id)
    err.print(Text(f"merged {args.secondary} into {args.primary}", style="dim"), soft_wrap=True)
    return 0


UNMERGE_HELP = ("undo a merge exactly (an explicit one, or an anonymous person's merge on "
                "identify): both persons as if it had never been recorded")


def cmd_unmerge(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Undo a merge; say so on stderr (stdout stays empty)."""
    with open_workspace(args.db, args.policy, Access.READ) as ws:
        ws.unmerge(args.merge_id, reason=args.reason)
    err.print(Text(f"merge {args.merge_id} undone", style="dim"), soft_wrap=True)
    return 0


SCRUB_HELD = ("warning: another connection's read snapshot (a backup, a replication tool, a "
              "long query) kept the database file from being checkpointed: old pages of the "
              "person's rows may stay in the file until a checkpoint runs to the end (tried "
              "again at every later write and close of a workspace on it)")
FORGET_HELP = ("erase a person (right to erasure): its personal values become unreadable "
               "everywhere and its identifiers are refused from then on")


def cmd_forget(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Forget a person; say so on stderr (stdout stays empty)."""
    with open_workspace(args.db, args.policy, Access.READ) as ws:
        report = ws.forget(args.identifier, reason=args.reason)
    err.print(Text(f"forgot {args.identifier}: its identifiers are refused from now on",
                   style="dim"), soft_wrap=True)
    for name in report.dropped:
        err.print(Text(f"custom projection {name!r}: kept by no open process, so its tables "
                       "were dropped; it is built afresh from the log when a process "
                       "registers it again", style="yellow"), soft_wrap=True)
    if not report.scrubbed:
        err.print(Text(SCRUB_HELD, style="yellow"), soft_wrap=True)
    return 0


def add_decisions(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Register the decision commands on the CLI's parser."""
    merge = add("merge", cmd_merge, MERGE_HELP)
    merge.add_argument("primary", metavar="PRIMARY")
    merge.add_argument("secondary", metavar="SECONDARY")
    merge.add_argument("--reason", required=True, metavar="TEXT",
                       help="why (kept with the merge, shown by `idstitch merges`)")
    unmerge = add("unmerge", cmd_unmerge, UNMERGE_HELP)
    unmerge.add_argument("merge_id", metavar="MERGE_ID")
    unmerge.add_argument("--reason", required=True, metavar="TEXT",
                         help="why (kept with the merge record, shown by `idstitch merges`)")
    forget = add("forget", cmd_forget, FORGET_HELP)
    forget.add_argument("identifier", metavar="ID")
    forget.add_argument("--reason", required=True, metavar="TEXT",
                        help="why (kept in the log for good: no personal data)")
