"""Commands that prove the log was not rewritten, ``digest`` and ``verify [--digest FILE]``;
and ``upgrade``, which moves a store written by an earlier idstitch to this version's layout.

``idstitch digest`` prints the chain's (position, head) as one line of JSON on stdout, to keep
outside the store: ``idstitch digest > digest-2026-12-06.json``. ``idstitch verify`` recomputes
the chain over the stored log and says whether it holds; with ``--digest FILE`` it also checks
the chain against that digest. Exit status: 0 the log holds, 1 it does not (the first broken
position is named), 2 an error (an unreadable or malformed digest file, an unreachable store).
"""

from __future__ import annotations

import argparse

import msgspec
from rich.console import Console
from rich.text import Text

from idstitch.adapters.urls import redacted
from idstitch.bootstrap import resolve_url
from idstitch.cli.common import open_workspace
from idstitch.cli.output import write_json_line
from idstitch.domain.verification import Digest
from idstitch.errors import InvalidCommand
from idstitch.opening import Access

DIGEST_HELP = ("print the log's digest (its last position and chain hash) as JSON, to keep "
               "outside the store: idstitch digest > digest.json")
VERIFY_HELP = ("recompute the log's hash chain and name the first position where it breaks; "
               "with --digest FILE (printed earlier by idstitch digest), also prove the log up "
               "to that digest was not rewritten (exit 0: holds, 1: broken, 2: error)")
UPGRADE_HELP = ("move a SQLite store written by an earlier idstitch to this version's tables "
                "(what any command that writes does when it opens one; read commands refuse "
                "such a store); positions, the chain and its digests are kept")


def read_digest(path: str) -> Digest:
    """The digest a file holds (what ``idstitch digest`` printed), or an InvalidCommand naming
    ``--digest`` and saying what is wrong with the file."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)  # a digest is ~100 bytes: never read a huge file whole
    except OSError as e:
        raise InvalidCommand("--digest", f"cannot read {path}: {e.strerror or e}") from e
    try:
        return msgspec.json.decode(data, type=Digest)
    except msgspec.DecodeError as e:
        raise InvalidCommand("--digest", f"{path} is not a digest as `idstitch digest` prints "
                                         f"it ({e})") from e


def cmd_digest(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Print the chain's last position and hash as JSON (nothing else on stdout)."""
    with open_workspace(args.db, args.policy, Access.QUERY) as ws:
        digest = ws.digest()
    write_json_line(digest)
    err.print(Text(f"digest of {redacted(ws.url)} at position {digest.position}: keep it "
                   "outside the store, and check later with idstitch verify --digest FILE",
                   style="dim"),
              soft_wrap=True)
    return 0


def cmd_verify(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Recompute the chain (and compare it with a digest): 0 when it holds, 1 when not."""
    # Read before the store is opened: a bad file is an error however the store is.
    against = None if args.digest is None else read_digest(args.digest)
    with open_workspace(args.db, args.policy, Access.QUERY) as ws:
        result = ws.verify(against=against)
    if result.ok:
        console.print(Text(f"ok: {result.reason}", style="green"), soft_wrap=True)
        return 0
    console.print(Text(f"BROKEN at position {result.first_break} ({result.checked:,} "
                       f"positions checked): {result.reason}", style="red"), soft_wrap=True)
    return 1


def cmd_upgrade(args: argparse.Namespace, console: Console, err: Console) -> int:
    """Open the store as a command that writes does (which upgrades a store of an earlier
    layout) and say whether there was anything to do."""
    url = resolve_url(args.db)
    with open_workspace(args.db, args.policy, Access.READ) as ws:
        head = ws.log.head()
        # The open's own word, not a look at the file before it: another process may have
        # upgraded it in between, or the file may not have been readable without writing.
        upgraded = bool(getattr(ws.rows, "upgraded_layout", False))
    if upgraded:
        console.print(Text.assemble(
            ("upgraded ", "bold"),
            f"{redacted(url)}: its {head} events moved to this version's tables "
            "(positions, the chain and its digests kept); programs that write it must run "
            "this version too"))
    else:
        console.print(f"{redacted(url)} already has this version's layout ({head} events): "
                      "nothing to do")
    return 0
