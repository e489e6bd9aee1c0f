"""A process holding many open files (a server with many connections) gives the pipes of its
children descriptors past 1023, which ``select()`` refuses: the projecting child and the
read-ahead child are waited on with ``poll`` and work there as anywhere."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from idstitch.service import background, read_ahead
from idstitch.testing_projections import ChangeLog
from idstitch.workspace import Workspace

from .test_frozen_child import MESSAGES
from .test_read_ahead import Spy, reading_ahead, reference  # noqa: F401 (the fixture used)

WorkspaceFactory = Callable[..., Workspace]


@contextmanager
def past_1023() -> Iterator[None]:
    """Every descriptor up to 1100 taken (then given back): a new pipe's is past 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        assert r > 1023
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_ingest_projects_in_its_child_past_descriptor_1023(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = make_durable_ws(None)
    there = make_durable_ws(None)
    expected = here.ingest(MESSAGES, batch_size=100, parallel=False)
    children: list[background.BackgroundProjector] = []
    start = background.BackgroundProjector.__init__

    def kept(self: background.BackgroundProjector, *args: Any, **kwargs: Any) -> None:
        start(self, *args, **kwargs)
        children.append(self)

    monkeypatch.setattr(background.BackgroundProjector, "__init__", kept)
    with past_1023():
        report = there.ingest(MESSAGES, batch_size=100, parallel=True)
    assert len(children) == 1 and children[0].failed is None  # the child folded, no error
    assert report == expected
    assert there.dump() == here.dump()


@pytest.mark.usefixtures("reading_ahead")
def test_a_catch_up_reads_ahead_past_descriptor_1023(
    make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 10**9)  # not while the store fills
    url, expected = reference(make_durable_ws)
    monkeypatch.setattr(read_ahead, "READ_AHEAD_EVENTS", 1)
    ws = make_durable_ws(url, projections=[ChangeLog()])
    with past_1023():
        ws.rebuild(["change_log"])
    [ahead] = [a for a in Spy.made if a.served]
    assert ahead.failed is None and ahead.served > len(expected) // 2
    assert ChangeLog.rows_of(ws) == expected
