"""The command line's one choke point for failures: every way a command can fail becomes a
message on stderr and an exit status, never a traceback.

- 0: done
- 1: nothing found: no such person, device, or attribute of the person
- 2: an error: a bad argument, a store that is missing or not an idstitch store, a store error,
  output that could not be written (``> /dev/full``), anything unexpected (``IDSTITCH_DEBUG=1``
  shows the traceback of that)
- 3: ``ingest`` finished but rejected lines (``--allow-rejects`` makes that 0)
- 130: interrupted (Ctrl-C)
- 141: stdout was closed early (``| head``): nothing more is printed, as other Unix tools do
  when their reader goes away
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from idstitch.cli.output import finish
from idstitch.errors import IdstitchError

OK, NOT_FOUND, ERROR, REJECTED, INTERRUPTED, PIPE_CLOSED = 0, 1, 2, 3, 130, 141


class CommandFailed(Exception):
    """A command cannot go on: its message (printed as ``error: ...``) and exit status."""

    def __init__(self, message: str, status: int = ERROR) -> None:
        super().__init__(message)
        self.status = status


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit of what is still buffered for a closed
    or full stdout neither fails nor prints a second complaint."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def _say(err: Console, message: str, style: str = "red") -> None:
    # One line, whatever the error's text holds (a driver's hint on a line of its own): a
    # script reading stderr line by line gets the whole failure.
    message = _LINE_BREAKS.sub(" ", message.strip())
    with contextlib.suppress(OSError, ValueError):
        err.print(Text(message, style=style), soft_wrap=True)
        finish(err)


def run_guarded(handler: Callable[[argparse.Namespace, Console, Console], int],
                args: argparse.Namespace, console: Console, err: Console) -> int:
    """Run a command; turn every failure into a message and its exit status (see the module)."""
    try:
        try:
            return handler(args, console, err)
        finally:
            finish(console)
    except BrokenPipeError:
        _silence_stdout()
        return PIPE_CLOSED
    except KeyboardInterrupt:
        _say(err, "interrupted")
        return INTERRUPTED
    except CommandFailed as e:
        _say(err, f"error: {e}")
        return e.status
    except IdstitchError as e:
        if isinstance(e.__cause__, KeyboardInterrupt):
            # Ctrl-C during an ingest's progress report: what was committed is said.
            _say(err, f"interrupted: {e}")
            return INTERRUPTED
        _say(err, f"error: {e}")
        return ERROR
    except OSError as e:
        if e.filename is None:
            # No file named: it was the output (a full disk, a closed terminal).
            _silence_stdout()
            _say(err, f"error: cannot write the output: {e.strerror or e}")
        else:
            _say(err, f"error: {e.filename}: {e.strerror or e}")
        return ERROR
    except Exception as e:  # a bug or an untyped store failure: still no traceback
        if os.environ.get("IDSTITCH_DEBUG"):
            raise
        _say(err, f"error: unexpected {type(e).__name__}: {e}")
        return ERROR


__all__ = ["ERROR", "INTERRUPTED", "NOT_FOUND", "OK", "PIPE_CLOSED", "REJECTED", "CommandFailed",
           "run_guarded"]
