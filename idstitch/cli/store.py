"""Commands on the store as a whole: the demo, ingest and rebuild."""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from idstitch.adapters.urls import redacted
from idstitch.cli.common import open_workspace, show_merges, title
from idstitch.cli.failures import REJECTED
from idstitch.cli.projecting import load_projections, register
from idstitch.cli.rejects import check_rejects_path, located, write_rejects
from idstitch.demo import HEADING, INDENT, StoryClock, run_demo
from idstitch.errors import InvalidCommand
from idstitch.opening import Access, check_sqlite_file, open_store, stored_policy
from idstitch.projections.views import Profile
from idstitch.render import person_label, profile_renderable
from idstitch.service.withholding import forgotten_check

PROGRESS_LINES = 1000
"""How many lines read between two moves of ingest's progress bar."""
SHOWN_REJECTS = 10
"""Rejected lines whose reasons ingest prints on stderr (``--rejects`` keeps them all)."""
DEMO_FILE = "idstitch-demo.db"
DEMO_URL = f"sqlite:///{DEMO_FILE}"


def cmd_demo(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Play the seed stories on a fresh store and show the profiles and merges they leave."""
    url: str | None = args.db
    if url is None:
        url = DEMO_URL
        # A rerun must tell the same story, so the demo's own file starts empty every time;
        # a file of that name that is not an idstitch store (another application's database,
        # a text file) is refused, never deleted.
        check_sqlite_file(DEMO_FILE, Access.CREATE)
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(DEMO_FILE + suffix)
    clock = StoryClock()
    with open_workspace(url, args.policy, Access.CREATE, clock) as ws:
        if ws.log.head() > 0:
            raise InvalidCommand(
                "db", f"the demo needs an empty store; {redacted(url)} already holds "
                      f"{ws.log.head()} events"
                      " (leave out --db to use a fresh ./idstitch-demo.db)")

        def say(line: str) -> None:
            if line.startswith(HEADING):
                console.print()
                console.rule(Text(line[len(HEADING):], style="bold"), align="left")
                return
            # A grid gives the call and outcome a hanging indent when the terminal is narrow.
            grid = Table.grid()
            grid.add_column(width=INDENT, no_wrap=True)
            grid.add_column(overflow="fold")
            for part in line.split("\n"):
                prefix, rest = part[:INDENT], part[INDENT:]
                clock, _, device = prefix.partition("  ")
                grid.add_row(Text.assemble((clock, "dim"), "  ", (device, "cyan")),
                             Text(rest, style="green" if rest.startswith("→") else ""))
            console.print(grid)

        shown: set[str] = set()
        profiles: list[tuple[str, Profile]] = []
        for identifier in run_demo(ws, say, clock):
            profile = ws.profile(identifier)
            if profile is not None and profile.person_id not in shown:
                shown.add(profile.person_id)
                profiles.append((identifier, profile))

        console.print()
        console.rule(Text("Resulting profiles", style="bold"), align="left")
        for identifier, profile in profiles:
            console.print(profile_renderable(profile, title=title(identifier, profile)))
            if profile.identified:
                show_merges(console, ws, profile, person_label(profile))
        console.print()
        console.print(Text.assemble(
            "demo: ", (str(ws.log.head()), "bold"), " events written to ", (redacted(url), "bold"),
            f" (anonymous_merge={ws.anonymous_merge})"))
        if ws._services.stores.shared_url is not None:  # (memory: is gone once it ends)
            console.print(Text.assemble(
                "next: ", (f"idstitch --db {redacted(url)} merges lee-100", "cyan")))
    return 0


def cmd_rebuild(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Replay the whole log into fresh projections, with a progress bar; ``--policy`` changes
    the store's anonymous_merge policy (the only command that may), and it says so."""
    before = None
    if args.policy is not None:
        with open_store(args.db, None, Access.REBUILD) as ws:
            before = stored_policy(ws)
    custom = load_projections(getattr(args, "projection", None) or [])
    with open_store(args.db, args.policy, Access.REBUILD) as ws:
        register(ws, custom)
        known = [p.name for p in ws.projections] + [p.name for p in custom]
        if unknown := [n for n in args.names or [] if n not in known]:
            # Before the bar is drawn: an error, not a replay that never began.
            raise InvalidCommand("names", f"unknown projections {unknown}, expected some of "
                                          f"{sorted(known)}")
        total = ws.log.head()
        replayed = 0
        columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("replay", total=total)

            def advance(applied: int) -> None:
                nonlocal replayed
                replayed += applied
                bar.advance(task, applied)

            if args.names or not custom:
                position = ws.rebuild(args.names or None, progress=advance)
            else:
                # Every projection: the built-in ones, then the custom ones on a bar of their
                # own (one rebuild's progress counts the log once, and theirs fold after).
                ws.rebuild([p.name for p in ws.projections], progress=advance)
                own = bar.add_task("replay", total=total)
                position = ws.rebuild([p.name for p in custom],
                                      progress=lambda n: bar.advance(own, n))
        console.print(Text.assemble(
            "replayed ", (str(replayed), "bold"), " events; the projections are at ",
            f"position {position} (anonymous_merge={ws.anonymous_merge})"))
        if before is not None and before != ws.anonymous_merge:
            console.print(Text.assemble(
                ("changed the store's policy: ", "bold"),
                f"anonymous_merge {before} -> {ws.anonymous_merge}"))
    return 0


def _count_lines(path: str) -> int:
    """The file's lines as iterating over it gives them: a last line without its newline
    counts too."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        first = next(f, None)
        if first is None:
            return
        # A byte order mark that Windows tools put first is no part of the first message.
        yield first.removeprefix(b"\xef\xbb\xbf")
        yield from f


def cmd_ingest(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Ingest an NDJSON file of Segment-spec messages with a progress bar and a report.

    Everything that can be refused is refused before the first message is read: the input,
    the store, the policy, and the ``--rejects`` file (not the input, nor the store, in a
    folder that exists)."""
    path: str = args.file
    if not os.path.isfile(path):
        raise InvalidCommand("FILE", f"{path!r} is not a readable file")
    if args.rejects is not None:
        check_rejects_path(args.rejects, path, args.db)
    total = _count_lines(path)
    started = time.perf_counter()
    with open_workspace(args.db, args.policy, Access.CREATE) as ws:
        head_before = ws.log.head()
        columns = (TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} msg/s"), TextColumn("eta"),
                   TimeRemainingColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("ingest", total=total, rate="-")
            # The bar counts the file's lines as ingest reads them (a batch envelope holds
            # many messages, a blank line none); the rate, the messages committed.
            read = committed = 0

            def lines() -> Iterator[bytes]:
                nonlocal read
                for line in _lines(path):
                    read += 1
                    if not read % PROGRESS_LINES:
                        bar.update(task, completed=read)
                    yield line

            def advance(n: int) -> None:
                nonlocal committed
                committed += n
                rate = committed / max(time.perf_counter() - started, 1e-9)
                bar.update(task, completed=read, rate=f"{rate:,.0f}")

            report = ws.ingest(lines(), batch_size=args.batch, progress=advance)
            bar.update(task, completed=total)
        elapsed = time.perf_counter() - started
        events = ws.log.head() - head_before
        summary = Table(title=f"ingest {path}", show_header=False, box=None)
        messages = report.accepted + report.duplicates + report.ignored + len(report.rejected)
        for name, value in (("lines", total), ("messages", messages), ("accepted", report.accepted),
                            ("duplicates", report.duplicates), ("ignored", report.ignored),
                            ("rejected", len(report.rejected)), ("events recorded", events),
                            ("seconds", f"{elapsed:.2f}"),
                            ("messages/s", f"{messages / max(elapsed, 1e-9):,.0f}")):
            summary.add_row(name, str(value))
        console.print(summary)
        rejected = report.rejected
        # The first reasons before the rejects file is written: were it to fail (a full
        # disk), they are still shown.
        reasons = dict(rejected[:SHOWN_REJECTS])
        for index, number, place, _ in located(_lines(path), reasons):
            where = f"line {number}" + ("" if place is None
                                        else f", message {place + 1} of its batch")
            err.print(Text(f"{where}: {reasons[index]}", style="yellow"), soft_wrap=True)
        if len(rejected) > SHOWN_REJECTS:
            err.print(Text(f"... and {len(rejected) - SHOWN_REJECTS} more", style="yellow"))
        if args.rejects is not None:
            # Written while the store is open: a rejected message naming a forgotten person
            # is told by the store's forgotten identifiers (through the cipher: the facade
            # has no public handle on it), and written without its text.
            forgotten = forgotten_check(ws._services.stores.cipher) if rejected else None
            write_rejects(_lines(path), args.rejects, rejected, forgotten)
    if args.rejects is not None:
        err.print(Text(f"rejected lines with their reasons ({len(rejected)}): {args.rejects}",
                       style="yellow" if rejected else "dim"), soft_wrap=True)
    elif rejected:
        where = ("above" if len(rejected) <= SHOWN_REJECTS
                 else f"the first {SHOWN_REJECTS} above")
        err.print(Text(f"{len(rejected)} rejected: their reasons are {where} (not kept; "
                       "--rejects FILE writes every rejected line with its reason)",
                       style="yellow"), soft_wrap=True)
    if rejected and not args.allow_rejects:
        return REJECTED
    return 0
