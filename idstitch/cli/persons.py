"""Commands that show one person as it stands: profile and merges."""

from __future__ import annotations

import argparse

from rich.console import Console

from idstitch.cli.common import not_found, open_workspace, show_merges
from idstitch.render import profile_renderable


def cmd_profile(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Show the person an identifier finds."""
    with open_workspace(args.db, args.policy) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return not_found(err, args.id)
        console.print(profile_renderable(profile))
    return 0


def cmd_merges(args: argparse.Namespace, console: Console, err: Console) -> int:
    """List the conversions, merges and switches of a person."""
    with open_workspace(args.db, args.policy) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return not_found(err, args.id)
        show_merges(console, ws, profile, args.id)
    return 0
