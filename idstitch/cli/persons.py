"""Commands that show one person: its profile (now, or as of a position or a time) and merges."""

from __future__ import annotations

import argparse

from rich.console import Console

from idstitch.cli.audit import as_of_label, parse_as_of
from idstitch.cli.common import not_found, open_workspace, show_merges
from idstitch.render import person_label, profile_renderable


def cmd_profile(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Show the person an identifier finds, now or ``--as-of`` a position or a time."""
    # Parsed before the store is opened: a bad --as-of is an error however the store is.
    at = None if args.as_of is None else parse_as_of(args.as_of)
    with open_workspace(args.db, args.policy) as ws:
        if at is None:
            profile = ws.profile(args.id)
            if profile is None:
                return not_found(err, args.id)
            console.print(profile_renderable(profile))
            return 0
        then = ws.profile_as_of(args.id, at)
        if then is None:
            return not_found(err, args.id, f" {as_of_label(at)}")
        console.print(profile_renderable(then, title=f"{person_label(then)} {as_of_label(at)}"))
    return 0


def cmd_merges(args: argparse.Namespace, console: Console, err: Console) -> int:
    """List the conversions, merges and switches of a person."""
    with open_workspace(args.db, args.policy) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return not_found(err, args.id)
        show_merges(console, ws, profile, args.id)
    return 0
