"""The audit commands: history (a paged timeline), explain, export, and ``profile --as-of``.

Each reads what :meth:`Workspace.history`, :meth:`Workspace.explain` and
:meth:`Workspace.profile_as_of` answer; nothing here recomputes the rules.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import BinaryIO

import msgspec
from rich.console import Console, Group, RenderableType
from rich.text import Text

from idstitch.adapters.urls import redacted
from idstitch.cli.common import labels, not_found, open_workspace
from idstitch.errors import InvalidCommand
from idstitch.opening import Access
from idstitch.projections.audit import Change
from idstitch.projections.views import Merge
from idstitch.render import (
    format_time,
    history_renderable,
    person_label,
    provenance_renderable,
    to_json_bytes,
)
from idstitch.render.audit import DATA_WIDTH
from idstitch.render.jsonstyle import printable

PAGE = 50
"""Changes ``history`` shows at once unless told otherwise (``--limit``)."""
_POSITION = re.compile(r"[+-]?\d+")
MAX_POSITION = 2**63 - 1
"""The largest log position a store can hold (a signed 64-bit integer)."""


def parse_as_of(value: str) -> int | datetime:
    """``--as-of``: a log position (an integer) or an ISO-8601 time with a timezone.

    A time without a timezone names no moment (recorded time is kept in UTC), so it is refused
    rather than guessed, as :meth:`Workspace.profile_as_of` refuses a naive datetime."""
    value = value.strip()
    if _POSITION.fullmatch(value):
        digits = value.lstrip("+-").lstrip("0")
        if len(digits) > len(str(MAX_POSITION)) or int(digits or "0") > MAX_POSITION:
            # Checked on the digits first: int() of thousands of them is refused by Python.
            raise InvalidCommand("--as-of", f"a log position is at most {MAX_POSITION}, got "
                                            f"{len(digits)} digits")
        position = int(digits or "0") * (-1 if value.startswith("-") else 1)
        if position < 0:
            raise InvalidCommand("--as-of", f"a log position is 0 or more, got {position}")
        return position
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidCommand(
            "--as-of", f"{value!r} is neither a log position nor an ISO-8601 time "
                       "(e.g. 2026-01-01T09:00:00Z)") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        example = moment.strftime("%Y-%m-%dT%H:%M:%S")
        raise InvalidCommand(
            "--as-of", f"{value!r} has no timezone; recorded time is compared in UTC, so say "
                       f"which moment: {example}Z, or with an offset such as {example}+02:00")
    return moment


def as_of_label(at: int | datetime) -> str:
    """``as of position 7`` or ``as of 2026-01-02 12:00:00Z``."""
    return f"as of position {at}" if isinstance(at, int) else f"as of {format_time(at)}"


def _next_command(args: argparse.Namespace, offset: int) -> str:
    words = ["idstitch"]
    if args.db is not None:
        words += ["--db", redacted(args.db)]
    options = []
    if getattr(args, "device", None) is not None:
        options.append(f"--device={args.device}")  # one word: a value like "-ph" too
    options += ["--offset", str(offset)]
    if args.limit != PAGE:
        options += ["--limit", str(args.limit)]
    named = ([args.id, args.attribute] if getattr(args, "attribute", None) is not None
             else [args.id])
    command = "explain" if len(named) == 2 else "history"
    if any(word.startswith("-") for word in named):
        # An id that looks like an option is one only after "--" (the options before it).
        return shlex.join([*words, command, *options, "--", *named])
    return shlex.join([*words, command, *named, *options])


def _changes(count: int, what: str = "change") -> str:
    return f"{count} {what}" if count == 1 else f"{count} {what}s"


def _extent(shown: int, offset: int, of: int, args: argparse.Namespace,
            what: str = "change") -> Text:
    """The line that says what part of a paged list is shown, and how to see the rest."""
    if of == 0:
        return Text("nothing to show", style="dim")
    if shown == of:
        return Text("showing " + (f"the only {what}" if of == 1 else f"all {of} {what}s"),
                    style="dim")
    if shown == 0:
        return Text(f"showing none of {_changes(of, what)} (--offset {offset} is past the end)",
                    style="yellow")
    span = f"{offset + 1}" if shown == 1 else f"{offset + 1}-{offset + shown}"
    line = Text(f"showing {span} of {_changes(of, what)}", style="bold")
    if offset + shown < of:
        # On a line of its own, so that a narrow terminal does not break the command.
        line.append("; the next page:\n  ")
        line.append(_next_command(args, offset + shown), style="cyan")
    return line


def _pager_keeps_colour() -> bool:
    """Whether the pager shows ANSI colour rather than escape codes (``less -R`` does)."""
    pager = os.environ.get("MANPAGER") or os.environ.get("PAGER") or "less"
    if not pager.split() or os.path.basename(pager.split()[0]) != "less":
        return False
    flags = " ".join([*pager.split()[1:], os.environ.get("LESS", "")])
    return "R" in flags or "-r" in flags


def _pager_runs() -> bool:
    """Whether the pager the environment names can be started: a missing one (a typo in
    PAGER) would lose the output, the shell's "not found" its only trace, and exit 0."""
    named = os.environ.get("MANPAGER") or os.environ.get("PAGER")
    if named is None:
        return True  # pydoc finds one itself, or prints
    words = named.split()
    return bool(words) and shutil.which(words[0]) is not None


def show(console: Console, renderable: RenderableType, *, page: bool) -> None:
    """Print; on a terminal, through the pager when it is taller than the screen."""
    if page and console.is_terminal and _pager_runs():
        height = len(console.render_lines(renderable, pad=False))
        if height > console.height:
            with console.pager(styles=_pager_keeps_colour()):
                console.print(renderable)
            return
    console.print(renderable)


def _elsewhere(merges: list[Merge], changes: list[Change], offset: int, page: list[Change],
               device: str | None) -> list[Merge]:
    """The person's merges caused by events outside its history (a switch that took one of
    its devices away), that fall between this page's first change and the next page's."""
    if not page:
        return []
    mine = {c.position for c in changes}
    low = page[0].position if offset else 0
    after = offset + len(page)
    high = changes[after].position if after < len(changes) else 2**62
    return [m for m in merges if low <= m.position < high and m.position not in mine
            and (device is None or m.device_id == device)]


def cmd_history(args: argparse.Namespace, console: Console, err: Console) -> int:
    """A person's timeline, a page of Changes at a time."""
    with open_workspace(args.db, args.policy, Access.QUERY) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return not_found(err, args.id)
        changes = ws.history(args.id)
        everything = len(changes)
        if args.device is not None:
            changes = [c for c in changes if c.device_id == args.device]
        offset, limit = args.offset, args.limit or len(changes)
        page = changes[offset:offset + limit]
        all_merges = ws.merges(profile.person_id)
        elsewhere = _elsewhere(all_merges, changes, offset, page, args.device)
        # The heading counts them over the whole (filtered) history, as it counts Changes.
        others = len(_elsewhere(all_merges, changes, 0, changes, args.device))
        merges = [m for c in page for m in c.merges] + elsewhere
        names = labels(ws, [i for m in merges for i in (m.source, m.target)]
                       + [r.held_by for c in page for r in c.refused if r.held_by])
    label = person_label(profile)
    head = Text.assemble(("history of ", "bold"), (label, "bold"), " · person ",
                         profile.person_id[:8])
    if args.device is not None:
        # The count is of what is shown: this device's changes; the whole history after it.
        head.append(f" · {_changes(len(changes))} by device {args.device} "
                    f"(of {everything} in all)")
    else:
        head.append(f" · {_changes(everything)}")
    if changes:
        first, last = changes[0].position, changes[-1].position
        head.append(f", positions {first}-{last}" if first != last else f", position {first}")
    if others:
        # Shown among them but not Changes of its own: merges of this person that another
        # person's event made (their positions may lie past its own last Change).
        head.append(f"; and {others} merge{'s' if others > 1 else ''} made by other "
                    "persons' events")
    body = history_renderable(page, person_id=profile.person_id, labels=names,
                              elsewhere=elsewhere,
                              width=DATA_WIDTH if console.is_terminal else None)
    show(console, Group(head, Text(""), body, Text(""),
                        _extent(len(page), offset, len(changes), args)),
         page=not args.no_pager)
    return 0


def cmd_explain(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Where a person's current value of an attribute came from, and what lost to it."""
    with open_workspace(args.db, args.policy, Access.QUERY) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return not_found(err, args.id)
        why = ws.explain(args.id, args.attribute)
        if why is None:
            known = ", ".join(printable(k) for k in sorted(profile.attributes)) or "none"
            err.print(Text(f"{person_label(profile)} has no attribute {args.attribute!r} "
                           f"(its attributes: {known})", style="yellow"), soft_wrap=True)
            return 1
        setter = [c.person_id for c in ws.history(args.id) if c.position == why.position]
    # Paged as history is: a value written 100k times must not become a 100k-row table.
    lost = len(why.overridden)
    offset, limit = args.offset, args.limit or lost
    page = msgspec.structs.replace(why, overridden=why.overridden[offset:offset + limit])
    body = provenance_renderable(
        page, person_id=profile.person_id, set_on=setter[0] if setter else None,
        title=f"{person_label(profile)} · person {profile.person_id[:8]}", lost=lost)
    parts: list[RenderableType] = [body]
    if lost:
        parts += [Text(""), _extent(len(page.overridden), offset, lost, args, "losing write")]
    show(console, Group(*parts), page=not args.no_pager)
    return 0


def write_ndjson(changes: Iterable[Change], out: BinaryIO) -> int:
    """Each Change as one line of JSON in the house style (:func:`~idstitch.render.to_json`:
    compact, keys sorted, times as ISO-8601 strings), in log order; how many."""
    count = 0
    for change in changes:
        out.write(to_json_bytes(change) + b"\n")
        count += 1
    out.flush()
    return count


def cmd_export(args: argparse.Namespace, console: Console, err: Console) -> int:
    """A person's whole history as NDJSON on stdout; what was exported is said on stderr."""
    with open_workspace(args.db, args.policy, Access.QUERY) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return not_found(err, args.id)
        changes = ws.history(args.id)
    # A full disk or a closed pipe raises here; the command line's one handler says so
    # (idstitch.cli.failures), and the count below is not printed for a partial export.
    count = write_ndjson(changes, sys.stdout.buffer)
    err.print(Text(f"exported {_changes(count)} of {person_label(profile)} "
                   f"(person {profile.person_id})", style="dim"), soft_wrap=True)
    return 0
