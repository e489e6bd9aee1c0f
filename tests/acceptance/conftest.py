"""The ``cli`` fixture: the installed ``idstitch`` command run as a user runs it, a process of
its own with stdout and stderr on pipes (not a terminal), and what to check of a run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import msgspec
import pytest

IDSTITCH = str(Path(sys.executable).with_name("idstitch"))
if not os.path.exists(IDSTITCH):  # a venv-less run: whichever idstitch is on PATH
    IDSTITCH = shutil.which("idstitch") or IDSTITCH


class Ran(NamedTuple):
    """What a run of the command left: exit status, stdout, stderr."""

    status: int
    out: str
    err: str


def environment() -> dict[str, str]:
    """The caller's environment without what would pick a store or a width for the command."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("IDSTITCH_DATABASE_URL", "COLUMNS", "LINES", "IDSTITCH_DEBUG")}
    env["PYTHONUNBUFFERED"] = "0"
    return env


def idstitch_cmd(*argv: str, cwd: Path | None = None, stdin: str | None = None,
                 timeout: float = 120) -> Ran:
    """Run ``idstitch ARGV...`` to the end; stdout and stderr are pipes."""
    done = subprocess.run([IDSTITCH, *argv], capture_output=True, text=True, cwd=cwd,
                          env=environment(), input=stdin, timeout=timeout, check=False)
    return Ran(done.returncode, done.stdout, done.stderr)


def assert_clean_failure(ran: Ran, status: int, *phrases: str) -> None:
    """A failure as the command line promises: its status, one message, no traceback."""
    assert ran.status == status, ran
    assert "Traceback" not in ran.err and "Traceback" not in ran.out, ran.err
    for phrase in phrases:
        assert phrase in ran.err, (phrase, ran.err)


def house_json(line: str) -> bool:
    """Whether a line is JSON in the command line's one style: compact, keys sorted, UTF-8."""
    value = msgspec.json.decode(line)
    return line == msgspec.json.encode(value, order="sorted").decode()


def files_in(folder: Path) -> list[str]:
    """The names of the files in a folder, sorted."""
    return sorted(p.name for p in folder.iterdir())


class Cli:
    """The command line as a process (the ``cli`` fixture): run it, check what it left."""

    run = staticmethod(idstitch_cmd)
    clean_failure = staticmethod(assert_clean_failure)
    house_json = staticmethod(house_json)
    files_in = staticmethod(files_in)
    path = IDSTITCH


@pytest.fixture
def cli() -> Cli:
    """The ``idstitch`` command, run for real (see :class:`Cli`)."""
    return Cli()
