"""Issue 9, item 4: a ``progress`` callback that raises after its batch committed stops the ingest
with IngestInterrupted, whose report says what was recorded; on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from idstitch.errors import IngestInterrupted, InvalidCommand
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def identify(n: int, user: str | None = None) -> dict[str, Any]:
    return {"type": "identify", "anonymousId": f"device-{n}", "userId": user or f"user-{n}",
            "traits": {"n": n}, "messageId": f"m{n}", "timestamp": (T0 + timedelta(seconds=n)).isoformat()}


class Boom(Exception):
    """The caller's own failure."""


def failing_on(call: int, error: BaseException) -> Callable[[int], None]:
    """A progress callback that raises ``error`` on its ``call``-th call."""
    calls: list[int] = []

    def progress(count: int) -> None:
        calls.append(count)
        if len(calls) == call:
            raise error

    return progress


def settled(report: Any) -> int:
    return int(report.accepted + report.duplicates + report.ignored + len(report.rejected))


def test_the_report_counts_every_committed_batch_and_the_callbacks_error_is_the_cause(
    make_ws: WorkspaceFactory,
) -> None:
    ws = make_ws()
    messages: list[Any] = [
        b"{not json",                                          # 0: rejected
        identify(1), identify(2),                              # batch 1
        {"type": "screen", "anonymousId": "device-1", "name": "Home"},  # 3: ignored
        identify(4), identify(5),                              # batch 2: its progress call raises
        identify(6), identify(7),                              # never read
    ]
    error = Boom("the progress bar broke")
    with pytest.raises(IngestInterrupted) as caught:
        ws.ingest(messages, batch_size=2, progress=failing_on(2, error))
    report = caught.value.report
    assert caught.value.__cause__ is error
    assert (report.accepted, report.duplicates, report.ignored) == (4, 0, 1)
    assert [index for index, _ in report.rejected] == [0]
    assert settled(report) == 6  # the first message not settled: resume there
    assert "4 accepted" in str(caught.value)
    # What the report counts as accepted is recorded and readable; nothing after it.
    assert [ws.profile(f"user-{n}") is not None for n in (1, 2, 4, 5, 6, 7)] == [True] * 4 + [False] * 2
    resumed = ws.ingest(messages[settled(report):])
    assert (resumed.accepted, resumed.rejected) == (2, [])
    again = ws.ingest(messages)  # the whole input once more: every message was recorded once
    assert (again.accepted, again.duplicates) == (0, 6)


def test_a_callback_that_raises_on_the_last_batch_still_leaves_everything_readable(
    make_ws: WorkspaceFactory,
) -> None:
    ws = make_ws()
    with pytest.raises(IngestInterrupted) as caught:
        ws.ingest([identify(1), identify(2), identify(3)], batch_size=2, progress=failing_on(2, Boom()))
    assert (caught.value.report.accepted, settled(caught.value.report)) == (3, 3)
    assert ws.profile("user-3") is not None
    assert ws.catch_up() == ws.log.head()


def test_a_callback_that_raises_an_idstitch_error_is_not_a_rejected_message(
    make_ws: WorkspaceFactory,
) -> None:
    """A ``cio_`` reference commits the batch before it (so the person is current), which calls
    the callback in the middle of that message: its error is still the callback's, not the
    message's."""
    ws = make_ws()
    ws.identify("device-0", "user-0")
    profile = ws.profile("user-0")
    assert profile is not None
    error = InvalidCommand("elsewhere", "the caller's own check failed")
    with pytest.raises(IngestInterrupted) as caught:
        ws.ingest([identify(1), identify(2, f"cio_{profile.person_id}"), identify(3)],
                  progress=failing_on(1, error))
    report = caught.value.report
    assert caught.value.__cause__ is error
    assert (report.accepted, report.rejected) == (1, [])
    assert settled(report) == 1  # message 1 (the cio_ one) was not settled
    assert ws.profile("user-1") is not None
    assert ws.device("device-2") is None

