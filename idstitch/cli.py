"""The ``idstitch`` command line: demo, profile, merges, rebuild.

The store is ``--db URL``, else ``IDSTITCH_DATABASE_URL``, else ``./idstitch.db`` (the demo has
its own default, see ``idstitch demo --help``). Errors idstitch raises on purpose are printed as
one line, ``error: ...``, with exit status 2; a person that is not found gives exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import cast

import msgspec
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

import idstitch
from idstitch.demo import HEADING, INDENT, run_demo
from idstitch.errors import IdstitchError, InvalidCommand
from idstitch.projections.identity import POLICIES
from idstitch.projections.views import Profile
from idstitch.render import merges_table, person_label, profile_renderable
from idstitch.service.ingest import INGEST_BATCH
from idstitch.workspace import Workspace

DEMO_FILE = "idstitch-demo.db"
DEMO_URL = f"sqlite:///{DEMO_FILE}"

Handler = Callable[[argparse.Namespace, Console, Console], int]


def open_workspace(url: str | None, policy: str | None = None) -> Workspace:
    """Open the store; without ``policy`` it keeps the policy its projection was built under."""
    if policy is not None and policy not in POLICIES:
        raise InvalidCommand("policy", f"must be one of {', '.join(POLICIES)}")
    return idstitch.open(url, anonymous_merge=policy)


def _not_found(err: Console, identifier: str) -> int:
    err.print(Text(f"no person found for {identifier}", style="yellow"))
    return 1


def _labels(ws: Workspace, ids: Sequence[str]) -> dict[str, str]:
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


def _show_merges(console: Console, ws: Workspace, profile: Profile, identifier: str) -> None:
    merges = ws.merges(profile.person_id)
    ids = [i for m in merges for i in (m.source, m.target)]
    console.print(merges_table(merges, title=f"merges of {identifier}", labels=_labels(ws, ids)))


def cmd_demo(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Play the seed stories on a fresh store and show the profiles and merges they leave."""
    url: str | None = args.db
    if url is None:
        url = DEMO_URL
        # A rerun must tell the same story, so the demo's own file starts empty every time.
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(DEMO_FILE + suffix)
    with open_workspace(url, args.policy) as ws:
        if ws.log.head() > 0:
            raise InvalidCommand(
                "db", f"the demo needs an empty store; {url} already holds {ws.log.head()} events"
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
        for identifier in run_demo(ws, say):
            profile = ws.profile(identifier)
            if profile is not None and profile.person_id not in shown:
                shown.add(profile.person_id)
                profiles.append((identifier, profile))

        console.print()
        console.rule(Text("Resulting profiles", style="bold"), align="left")
        for identifier, profile in profiles:
            console.print(profile_renderable(profile, title=_title(identifier, profile)))
            if profile.identified:
                _show_merges(console, ws, profile, person_label(profile))
        console.print()
        console.print(Text.assemble(
            "demo: ", (str(ws.log.head()), "bold"), " events written to ", (url, "bold"),
            f" (anonymous_merge={ws.anonymous_merge})"))
        console.print(Text.assemble("next: ", (f"idstitch --db {url} merges lee-100", "cyan")))
    return 0


def _title(identifier: str, profile: Profile) -> str:
    label = person_label(profile)
    if label == identifier or profile.identified:
        return label
    return f"{label} (found by anonymous id {identifier[:8]})"


def cmd_profile(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Show the person an identifier finds."""
    with open_workspace(args.db, args.policy) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return _not_found(err, args.id)
        console.print(profile_renderable(profile))
    return 0


def cmd_merges(args: argparse.Namespace, console: Console, err: Console) -> int:
    """List the conversions, merges and switches of a person."""
    with open_workspace(args.db, args.policy) as ws:
        profile = ws.profile(args.id)
        if profile is None:
            return _not_found(err, args.id)
        _show_merges(console, ws, profile, args.id)
    return 0


def cmd_rebuild(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Replay the whole log into fresh projections, with a progress bar."""
    with open_workspace(args.db, args.policy) as ws:
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

            position = ws.rebuild(progress=advance)
        console.print(Text.assemble(
            "replayed ", (str(replayed), "bold"), " events; the projections are at ",
            f"position {position} (anonymous_merge={ws.anonymous_merge})"))
    return 0


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


def cmd_ingest(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Ingest an NDJSON file of Segment-spec messages with a progress bar and a report."""
    path: str = args.file
    if not os.path.isfile(path):
        raise InvalidCommand("FILE", f"{path!r} is not a readable file")
    total = _count_lines(path)
    started = time.perf_counter()
    with open_workspace(args.db, args.policy) as ws:
        head_before = ws.log.head()
        columns = (TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} msg/s"), TextColumn("eta"),
                   TimeRemainingColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("ingest", total=total, rate="-")

            def advance(n: int) -> None:
                bar.advance(task, n)
                done = bar.tasks[0].completed
                bar.update(task, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f}")

            report = ws.ingest(_lines(path), batch_size=args.batch, progress=advance)
            bar.update(task, completed=total)
        elapsed = time.perf_counter() - started
        events = ws.log.head() - head_before
    summary = Table(title=f"ingest {path}", show_header=False, box=None)
    for name, value in (("messages", total), ("accepted", report.accepted),
                        ("duplicates", report.duplicates), ("ignored", report.ignored),
                        ("rejected", len(report.rejected)), ("events recorded", events),
                        ("seconds", f"{elapsed:.2f}"), ("messages/s", f"{total / elapsed:,.0f}")):
        summary.add_row(name, str(value))
    console.print(summary)
    if report.rejected:
        for index, reason in report.rejected[:10]:
            err.print(Text(f"line {index + 1}: {reason}", style="yellow"), soft_wrap=True)
        if len(report.rejected) > 10:
            err.print(Text(f"... and {len(report.rejected) - 10} more", style="yellow"))
        if args.rejects:
            _write_rejects(path, args.rejects, report.rejected)
            console.print(f"rejected lines with their reasons: {args.rejects}")
    return 0


def _write_rejects(path: str, out: str, rejected: list[tuple[int, str]]) -> None:
    """Each rejected line as JSON: its line number, the reason, and the line itself."""
    reasons = dict(rejected)
    encode = msgspec.json.Encoder().encode
    with open(out, "wb") as f:
        for index, line in enumerate(_lines(path)):
            if index in reasons:
                raw = line.rstrip(b"\n").decode("utf-8", "replace")
                f.write(encode({"line": index + 1, "reason": reasons[index], "raw": raw}) + b"\n")


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
