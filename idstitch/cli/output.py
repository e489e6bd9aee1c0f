"""Where the command line writes: consoles for a terminal and for a pipe, and its JSON.

On a terminal, output is laid out for the terminal's width (and paged where a command says).
Piped or redirected, nothing is cut to a width: each print is as wide as what it prints needs,
and no line carries trailing spaces (a table pads its cells; the padding is dropped), so
``grep``, ``awk`` and ``diff`` see the values whole.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from typing import Any, TextIO, cast

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.rule import Rule
from rich.segment import Segment

from idstitch.render import to_json_bytes
from idstitch.render.jsonstyle import printable

PIPE_WIDTH = 100_000
"""The most a print is laid out to when piped: in effect, no limit (a value is never cut)."""
CHUNK_LINES = 256
"""Lines a piped console passes on at a time (see TrimmedLines.write)."""
FILL_WIDTH = 80
"""The width, piped, of what fills whatever width it is given (a rule) rather than needing one."""


class TrimmedLines(io.TextIOBase):
    """A text stream that drops the spaces at the end of each line before passing it on.

    A partial line is held until its newline (or the end), since spaces written at the end of
    one write may be followed by more text in the next."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self._out = out
        self._partial = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        # In pieces: a single write of megabytes to a pipe whose reader left midway (`| head`)
        # can end without an error; the next piece then fails, as it should.
        for start in range(0, len(lines), CHUNK_LINES):
            self._out.write("".join(line.rstrip(" ") + "\n"
                                    for line in lines[start:start + CHUNK_LINES]))
            self._out.flush()
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def finish(self) -> None:
        """Write what is left of the last line (without its trailing spaces) and flush."""
        if self._partial:
            self._out.write(self._partial.rstrip(" "))
            self._partial = ""
        self._out.flush()


class CliConsole(Console):
    """A console whose closed pipe is the command line's to handle (rich would exit 1), and
    that never sends a terminal a control character that came from the data it shows."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError("the reader of the output went away")

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        # Every text segment passes here on its way out (rich's own escape sequences are
        # added after, from the styles, and its control segments are left alone): one place
        # that escapes what SDK traffic put into a value, an id or a key, whichever renderer
        # showed it. (render.printable escapes line breaks in values as well, where a value
        # is shown.)
        return super()._render_buffer(
            Segment(text if control else printable(text, lines=True), style, control)
            for text, style, control in buffer)


class PipeConsole(CliConsole):
    """A console for output that is not a terminal: every print as wide as it needs."""

    def print(self, *objects: Any, width: int | None = None, **kwargs: Any) -> None:
        if width is None and objects:
            # What a renderable would fill (a rule, a panel that expands) is not what it needs:
            # measure what it holds, so a table or a profile keeps its natural width.
            widths = [PIPE_WIDTH if isinstance(o, Rule)
                      else Measurement.get(self, self.options, self._renderable(o)).maximum
                      for o in objects]
            needed = sum(widths) + len(objects) - 1
            width = FILL_WIDTH if needed >= PIPE_WIDTH else max(1, needed)
        super().print(*objects, width=width, **kwargs)

    def _renderable(self, value: Any) -> RenderableType:
        return self.render_str(value) if isinstance(value, str) else value


def console_for(stream: TextIO, *, stderr: bool = False) -> Console:
    """A console on ``stream``: laid out for the terminal, or unbounded and trimmed when piped."""
    if stream.isatty():
        return CliConsole(file=stream, highlight=False, stderr=stderr)
    return PipeConsole(file=cast(TextIO, TrimmedLines(stream)), highlight=False, width=PIPE_WIDTH,
                       soft_wrap=False, stderr=stderr)


def finish(console: Console) -> None:
    """Flush a console's last partial line (a piped console holds it back to trim it)."""
    if isinstance(console.file, TrimmedLines):
        console.file.finish()
    else:
        console.file.flush()


def write_json_line(value: Any) -> None:
    """One JSON document as one line on stdout, in the command line's one JSON style."""
    sys.stdout.flush()  # whatever a console wrote first stays first
    sys.stdout.buffer.write(to_json_bytes(value) + b"\n")
    sys.stdout.buffer.flush()


__all__ = ["FILL_WIDTH", "PIPE_WIDTH", "CliConsole", "PipeConsole", "TrimmedLines", "console_for", "finish",
           "write_json_line"]
