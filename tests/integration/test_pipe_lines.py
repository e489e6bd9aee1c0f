"""The one reader of the projecting child's pipes (both ends), on a real pipe: lines that
arrive together are each returned, blank lines skipped, a partial line waited for, the end of
the pipe told apart from a timeout; and the parent, reading the child with it, skips a blank
line before ``ready`` instead of taking it for a child that did not start."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idstitch.service import background
from idstitch.service.pipe_lines import PipeLines


@pytest.fixture
def pipe() -> Iterator[tuple[PipeLines, int]]:
    """A reader of a real pipe, and the pipe's write end (closed by the test or afterwards)."""
    r, w = os.pipe()
    yield PipeLines(r), w
    os.close(r)
    with contextlib.suppress(OSError):  # the test closed it (the end of the pipe)
        os.close(w)


def test_lines_written_together_are_each_returned_and_blank_lines_skipped(
    pipe: tuple[PipeLines, int],
) -> None:
    lines, w = pipe
    os.write(w, b"until 5\n\n   \nending\r\nstop 9\n")
    assert [lines.next(0), lines.next(0), lines.next(0)] == ["until 5", "ending", "stop 9"]
    assert lines.next(0) is None  # nothing more has come: a timeout, not the end


def test_a_partial_line_is_waited_for_within_the_timeout(pipe: tuple[PipeLines, int]) -> None:
    lines, w = pipe
    os.write(w, b"at 1")
    began = time.monotonic()
    assert lines.next(0.2) is None
    assert 0.15 < time.monotonic() - began < 5.0
    threading.Timer(0.1, os.write, (w, b"23\n")).start()
    assert lines.next(None) == "at 123"  # no timeout: waits for the rest of the line


def test_the_timeout_bounds_the_whole_wait_not_each_chunk(pipe: tuple[PipeLines, int]) -> None:
    """A writer that sends a byte at a time, never a newline, does not keep the reader past its
    timeout."""
    lines, w = pipe
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.05):
            os.write(w, b"x")

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        began = time.monotonic()
        assert lines.next(0.5) is None
        assert time.monotonic() - began < 2.0
    finally:
        stop.set()
        thread.join()


def test_the_end_of_the_pipe_is_an_empty_string(pipe: tuple[PipeLines, int]) -> None:
    lines, w = pipe
    os.write(w, b"ready\n\nunfinished")
    os.close(w)
    assert lines.next(None) == "ready"
    assert lines.next(None) == ""  # a line the writer never finished is not a line
    assert lines.next(0) == ""


def test_bytes_that_are_not_utf8_are_replaced_not_raised(pipe: tuple[PipeLines, int]) -> None:
    lines, w = pipe
    os.write(w, b"error \xff\xfe\n")
    assert lines.next(0) == "error \ufffd\ufffd"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"],
                                               blacklist_characters="\n"), max_size=20),
                max_size=12),
       st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_any_lines_in_any_chunks_give_the_non_blank_ones_in_order(
    texts: list[str], sizes: list[int]
) -> None:
    data = "".join(t + "\n" for t in texts).encode()
    r, w = os.pipe()
    try:
        lines = PipeLines(r)
        got: list[str | None] = []
        i = 0
        while i < len(data):  # written in chunks of the drawn sizes, each read in between
            size = sizes[len(got) % len(sizes)]
            os.write(w, data[i:i + size])
            i += size
            while (line := lines.next(0)) is not None:
                got.append(line)
        os.close(w)
        while (line := lines.next(0)) != "":
            got.append(line)
    finally:
        os.close(r)
        with contextlib.suppress(OSError):  # closed above, unless a write failed
            os.close(w)
    assert got == [t.strip() for t in texts if t.strip()]


def test_the_parent_skips_a_blank_line_before_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blank line from the child is no answer: the parent reads on to the warning, ``ready``
    and the answer to its request (it took the blank line for a child that did not start, and
    folded everything itself)."""
    monkeypatch.setattr(background, "COMMAND", [
        sys.executable, "-c", "print(flush=True); print('warning cannot fold x'); "
        "print('ready'); print('at 0', flush=True); import time; time.sleep(60)"])
    helper = background.BackgroundProjector("memory:", [])
    try:
        with pytest.warns(RuntimeWarning, match="cannot fold x"):
            assert helper.wait_for(0)
        assert helper.failed is None
    finally:
        helper.close()
