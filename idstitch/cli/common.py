"""What every command shares: opening the store, the not-found line, readable merge labels."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable

from rich.console import Console
from rich.text import Text

from idstitch.bootstrap import Clock
from idstitch.opening import Access, open_store
from idstitch.projections.views import Profile
from idstitch.render import merges_blocks, merges_table, person_label
from idstitch.render.jsonstyle import printable
from idstitch.workspace import Workspace

Handler = Callable[[argparse.Namespace, Console, Console], int]
"""A command: its parsed arguments, the stdout console and the stderr console -> exit status."""


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535 (the OS would wrap a larger one silently)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, got {text}")
    return value


def open_workspace(url: str | None, policy: str | None = None,
                   access: Access = Access.CREATE, clock: Clock | None = None) -> Workspace:
    """Open the store for a command (see :func:`~idstitch.opening.open_store`).

    A command that only reads passes ``Access.QUERY``: it never creates, upgrades or rewrites a
    store (``Access.READ``: needs one, may write to it). Every access
    refuses a file that is not an idstitch store, and a ``policy`` other than the store's
    (only ``rebuild`` changes it)."""
    return open_store(url, policy, access, clock)


def not_found(err: Console, identifier: str, when: str = "") -> int:
    """Say that nobody was found (on stderr) and give the exit status for it, 1."""
    err.print(Text(f"no person found for {printable(identifier)}{when}", style="yellow"))
    return 1


def labels(ws: Workspace, ids: Iterable[str]) -> dict[str, str]:
    """Readable names for merge sources and targets (person ids and anonymous ids)."""
    out: dict[str, str] = {}
    for ident in ids:
        if ident in out:
            continue
        profile = ws.profile(ident)
        if profile is None:
            continue
        if profile.person_id == ident:
            out[ident] = person_label(profile)
        elif ident in profile.anonymous_ids:
            out[ident] = "anonymous id"
        else:
            # A person id that resolves to someone else was retired by a merge into them.
            out[ident] = "retired person"
    return out


def show_merges(console: Console, ws: Workspace, profile: Profile, identifier: str) -> None:
    """The table of a person's conversions, merges and switches."""
    merges = ws.merges(profile.person_id)
    ids = [i for m in merges for i in (m.source, m.target)]
    names, heading = labels(ws, ids), f"merges of {printable(identifier)}"
    table = merges_table(merges, title=heading, labels=names)
    natural = console.measure(table, options=console.options.update_width(10**6)).maximum
    if console.is_terminal and natural > console.width:
        # Squeezed to fit, the table would cut words and drop its last columns.
        console.print(merges_blocks(merges, title=heading, labels=names))
        return
    console.print(table)


def title(identifier: str, profile: Profile) -> str:
    """A profile's heading: its label, and the anonymous id it was found by if that differs."""
    label = person_label(profile)
    if label == identifier or profile.identified:
        return label
    return f"{label} (found by anonymous id {identifier[:8]})"
