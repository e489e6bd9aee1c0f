"""The writer process: the writer of :mod:`idstitch.serve.writer`, in an interpreter of its own.

Started by :class:`idstitch.serve.process.WriterProcess` (``python -P -c "from
idstitch.serve.worker import main; main()"``). It reads the configuration, opens the store,
says ``ready``, then takes submissions from its stdin and answers each on its stdout once its
group is committed. It ends when told to stop, or when its stdin ends (the HTTP process is
gone, ``kill -9`` say): it answers what it had taken (nobody reads the answers then), leaves
the projections at the head and closes the store.

SIGINT and SIGTERM are ignored: Ctrl-C in a terminal, and a service manager stopping the
whole group, signal every process of it, and this one must drain, not die mid-commit. The HTTP
process stops it when its own shutdown has answered every request.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from concurrent.futures import Future
from types import FrameType
from typing import Literal

import msgspec

from idstitch.opening import Access, check_store
from idstitch.serve import frames
from idstitch.serve.rejects import RejectsLog
from idstitch.serve.writer import Outcome, Submission, Writer
from idstitch.workspace import open as open_workspace


def _ignored(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM: the HTTP process decides when this one stops."""


def main() -> None:
    """Serve the HTTP process on stdin and stdout until it says stop or goes away."""
    # Handlers that do nothing rather than SIG_IGN: an ignored signal stays ignored in the
    # processes this one starts (the projecting child must still end on its SIGTERM).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignored)
    logging.basicConfig(level=logging.WARNING, format="idstitch serve (writer): %(message)s")
    requests, replies = sys.stdin.fileno(), sys.stdout.fileno()
    config = frames.read_config(requests)
    if config is None:
        return
    mode: Literal["external"] | None = "external" if config.external else None
    try:
        url = check_store(config.url, Access.CREATE if config.create else Access.READ)
        ws = open_workspace(url, projections=mode)
    except Exception as e:
        frames.write(replies, frames.Failed(f"{type(e).__name__}: {e}"))
        return
    writer = Writer(lambda: ws, owned=True, rejects=RejectsLog(config.rejects),
                    group_messages=config.group_messages)
    try:
        writer.start()
    except Exception as e:
        frames.write(replies, frames.Failed(f"{type(e).__name__}: {e}"))
        return
    frames.write(replies, frames.Ready())
    lock = threading.Lock()

    def answer(id: int, done: Future[Outcome]) -> None:
        error = done.exception()
        if error is None:
            outcome = done.result()
            reply = frames.Answer(id, outcome.received, outcome.rejected, writer.groups)
        else:
            reply = frames.Answer(id, 0, [], writer.groups, failed=f"{type(error).__name__}: {error}")
        # OSError: the HTTP process is gone, nobody waits for this answer.
        with lock, contextlib.suppress(OSError):
            frames.write(replies, reply)

    try:
        while True:
            frame = frames.read_to_writer(requests)
            if frame is None or isinstance(frame, frames.Stop):
                break
            writer.expect(frame.coming)
            submission = Submission(
                endpoint=frame.endpoint, received_at=frame.received_at,
                # The JSON line is the message as the rejects log shows it.
                messages=[msgspec.Raw(line) for line in frame.lines], lines=frame.lines,
                indices=frame.indices, names_person=frame.names_person,
                refused=[(index, reason, msgspec.Raw(text)) for index, reason, text in frame.refused])
            writer.submit(submission).add_done_callback(functools.partial(answer, frame.id))
    finally:
        writer.stop()


__all__ = ["main"]
