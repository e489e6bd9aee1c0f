"""What a bulk ingest reads and what it reports: the input's formats, the report, and the
error that stops an ingest when its progress callback raises."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from idstitch.domain.commands import Command
from idstitch.domain.errors import IdstitchError


@dataclass
class IngestReport:
    """What a bulk ingest did: counts, and each rejected message's index and reason.

    Counts and indexes are of messages: the messages of a batch envelope are counted (and
    numbered) one by one, as if each were a line of its own, so a rejected index is the
    message's position in the flattened input (0-based). An envelope that cannot be read whole
    (``batch`` not a list, a bad ``sentAt``) is one rejected message. Blank and whitespace-only
    lines are no messages: they take no index and are counted in ``blank`` only, so
    ``accepted + duplicates + ignored + len(rejected)`` is the number of messages read."""

    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    blank: int = 0
    """Blank or whitespace-only lines skipped."""


class IngestInterrupted(IdstitchError):
    """The ``progress`` callback raised, after its batch was committed: the ingest stopped there.

    ``report`` is what the ingest did up to and including that batch: each message before the
    interruption is counted once, as accepted, a duplicate, ignored or rejected (so their sum is
    the index of the first message it did not settle: resume from there), and every message it
    counts as accepted is recorded. The callback's exception is the ``__cause__``."""

    def __init__(self, report: IngestReport) -> None:
        self.report = report
        settled = report.accepted + report.duplicates + report.ignored + len(report.rejected)
        super().__init__(f"the progress callback raised: ingest stopped after {settled} messages "
                         f"({report.accepted} accepted, {report.duplicates} duplicates, "
                         f"{report.ignored} ignored, {len(report.rejected)} rejected)")


class ProgressRaised(Exception):
    """Carries the callback's exception out of the run (not an IdstitchError: the run must not
    take it for one message's rejection)."""


Message = dict[str, Any] | str | bytes
"""One input line: a parsed dict, or JSON text."""


class Format(NamedTuple):
    """How input lines become commands (the Segment adapter, wired in by the composition root):
    ``decode`` a line, then map it ``to_commands`` (None: a message ingest ignores). Both raise
    InvalidCommand naming the field for a line they refuse. ``unwrap``: the messages of an item
    that is a batch envelope (each decoded, or the error refusing it), None for a message; it
    raises for an envelope that cannot be read whole."""

    decode: Callable[[Message], Any]
    to_commands: Callable[[Any], Sequence[Command] | None]
    unwrap: Callable[[Message], Sequence[Any] | None]


def reporting(progress: Callable[[int], None]) -> Callable[[int], None]:
    """The caller's callback, its failure told apart from the ingest's own."""
    def call(count: int) -> None:
        try:
            progress(count)
        except Exception as e:
            raise ProgressRaised from e

    return call
