"""Commands that show one person or one device: a profile (now, or as of a position or a
time), a person's merges, a device."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from idstitch.cli.audit import as_of_label, parse_as_of
from idstitch.cli.common import not_found, open_workspace, show_merges
from idstitch.cli.failures import NOT_FOUND
from idstitch.cli.output import write_json_line
from idstitch.opening import Access
from idstitch.render import device_panel, person_label, profile_renderable


def cmd_profile(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Show the person an identifier finds, now or ``--as-of`` a position or a time."""
    # Parsed before the store is opened: a bad --as-of is an error however the store is.
    at = None if args.as_of is None else parse_as_of(args.as_of)
    with open_workspace(args.db, args.policy, Access.QUERY) as ws:
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
    with open_workspace(args.db, args.policy, Access.QUERY) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return not_found(err, args.id)
        show_merges(console, ws, profile, args.id)
    return 0


def cmd_device(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Show a device: its token, platform, person, anonymous id, attributes, last use."""
    with open_workspace(args.db, args.policy, Access.QUERY) as ws:
        device = ws.device(args.id)
        if device is None:
            err.print(Text(f"no device found for {args.id}", style="yellow"), soft_wrap=True)
            return NOT_FOUND
        person = ws.profile(device.person_id)
    if args.json:
        console.file.flush()
        write_json_line(device)
        return 0
    console.print(device_panel(device, person=None if person is None else person_label(person)))
    return 0
