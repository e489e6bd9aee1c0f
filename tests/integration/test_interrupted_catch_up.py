"""An exception anywhere in a catch-up or a rebuild leaves the committed state consistent
(issue 16 item 2): a progress callback that raises between a fold and its commit, a
KeyboardInterrupt, and the next query folds from what was committed, never twice."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


class Boom(Exception):
    """The callback's failure."""


def raising(_: int) -> None:
    raise Boom("progress callback failed")


def interrupting(_: int) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("callback", [raising, interrupting])
def test_a_rebuild_whose_progress_raises_leaves_the_rows_consistent(
        make_ws: WorkspaceFactory, callback: Callable[[int], None]) -> None:
    ws = make_ws()
    ws.identify("phone", "user-7")
    ws.identify("tablet", "user-7")
    ws.set_profile_attributes("tablet", {"plan": "pro"})
    before, merges = ws.dump(), ws.merges("user-7")
    with pytest.raises((Boom, KeyboardInterrupt)):
        ws.rebuild(progress=callback, parallel=False)
    profile = ws.profile("user-7")
    assert profile is not None
    assert sorted(d.device_id for d in profile.devices) == ["phone", "tablet"]
    assert profile.attributes == {"plan": "pro"}
    assert ws.merges("user-7") == merges
    assert ws.dump() == before


def test_a_reopen_after_a_raising_rebuild_gives_the_rebuilt_rows(
        make_durable_ws: WorkspaceFactory) -> None:
    ws = make_durable_ws()
    for i in range(30):
        ws.identify(f"d{i % 7}", f"u{i % 4}", {"k": i})
        ws.set_device_attributes(f"d{i % 7}", {"n": i})
    before = ws.dump()
    with pytest.raises(Boom):
        ws.rebuild(progress=raising, parallel=False)
    ws.catch_up()
    assert ws.dump() == before
    again = make_durable_ws(ws.url)
    assert again.dump() == before
