"""An unmerge recorded by one process and honoured by another that keeps custom projections:
the keeper never honours the ``MergeUndone`` decision over identity rows the unmerging process
has not replayed yet (folded again from 0 over them, its Changes would still say the merge
applied), so that a custom projection kept elsewhere always ends as a rebuild gives it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from idstitch.domain.commands import Unmerge
from idstitch.domain.events import MergeUndone
from idstitch.projections.views import Reader

from idstitch.service import erasure
from idstitch.service.erasure import finish_unmerges
from idstitch.service.following import Follower
from idstitch.testing import following
from idstitch.testing_projections import ChangeLog
from idstitch.workspace import Workspace

from .conftest import Held, deciding, waits_right_before
from .conftest import decided as decided_kind

WorkspaceFactory = Callable[..., Workspace]

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def traffic(ws: Workspace, kind: str) -> str:
    """Ann and Anne on two devices, the family tablet's anonymous browsing stitched into Ann
    when it signs in (an automatic merge), Ann and Anne merged by an agent (an explicit
    one), then traffic on both sides while the merge stands; the id of the merge of ``kind``
    (the one to undo)."""
    ws.identify("phone", "ann", {"plan": "pro", "city": "Oslo"}, timestamp=at(1))
    ws.identify("laptop", "anne@example.com", {"plan": "free", "age": 40}, timestamp=at(2))
    ws.set_profile_attributes("tablet", {"show": "Bluey"}, timestamp=at(3), message_id="m3")
    ws.identify("tablet", "ann", {}, timestamp=at(4))
    explicit = ws.merge_persons("ann", "anne@example.com", reason="support ticket 1234")
    ws.set_profile_attributes("laptop", {"age": 41}, timestamp=at(5), message_id="m5")
    ws.set_profile_attributes("tablet", {"show": "Peppa"}, timestamp=at(6), message_id="m6")
    ws.set_profile_attributes("phone", {"city": "Bergen"}, timestamp=at(7), message_id="m7")
    if kind == "explicit":
        return explicit
    [automatic] = [m for m in ws.merges("ann") if m.kind == "merged"]
    return automatic.merge_id


rows, position = ChangeLog.rows_of, ChangeLog.position_of


def decided(ws: Workspace) -> int:
    """The position of the (one) MergeUndone decision."""
    return decided_kind(ws, MergeUndone)


def kind_of(ws: Workspace, merge_id: str) -> str | None:
    """The kind of the merge's record in the identity rows as committed (None: no record)."""
    services = ws._services
    with services.stores.rows.snapshot() as found:
        row = Reader(found, services.projector.registry.row_types).merge_row(merge_id)
    return None if row is None else row.kind


@contextmanager
def replay_held(writer: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    held = Held()
    projector = writer._services.projector
    monkeypatch.setattr(projector, "replay_persons", held.wrap(projector.replay_persons))
    yield held  # released by deciding(), which starts the decision


@pytest.mark.parametrize("kind", ["explicit", "merged"])
@pytest.mark.parametrize("made", ["before the unmerge", "while it was not replayed"])
def test_a_keeper_waits_for_the_replay_before_it_honours_an_unmerge(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch, made: str,
        kind: str) -> None:
    """An appending-only writer undoes a merge and is held between its decision and its
    replay of the identity rows; a follower keeping a custom projection (folded again from 0
    at an unmerge) meets the decision meanwhile. It stops right before it, reporting the lag,
    and honours it once the replay has landed: its rows then equal a rebuild's. Made while
    the replay was pending (rebuilt then), the projection's tables do not count as made after
    the decision: it is honoured too."""
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    writer = make_durable_ws(keeper.url, projections="external")
    with following(keeper, poll=0.02):
        merge_id = traffic(writer, kind)
        writer.wait_for(writer.log.head(), timeout=30)
        with replay_held(writer, monkeypatch) as held:
            with deciding(held, lambda: writer.unmerge(merge_id, reason="two customers")):
                decision = decided(keeper)
                if made == "while it was not replayed":
                    keeper.rebuild(["change_log"])  # folded from 0 over the rows still merged
                waits_right_before(keeper, decision)
                # What the keeper waits for: the record still says the merge (the fold past
                # the decision left it), and only the replay writes it as undone.
                assert kind_of(keeper, merge_id) == kind
            assert len(held.results) == 1
            assert kind_of(keeper, merge_id) == "unmerged"
        reached_head = writer.set_profile_attributes("laptop", {"age": 42}, timestamp=at(9),
                                                     message_id="m9")
        writer.wait_for(reached_head, timeout=30)
        keeper.wait_for(reached_head, timeout=30)
        kept = rows(keeper)
    assert position(keeper) >= reached_head
    keeper.rebuild(["change_log"])
    assert rows(keeper) == kept


def test_a_keeper_waits_for_an_unmerge_whose_process_stopped_before_its_replay(
        make_durable_ws: WorkspaceFactory) -> None:
    """The unmerging process stops for good after recording its decision: a keeper of a
    custom projection stays right before the decision (its lag says so, reported once)
    until a process opens the workspace, which finishes the unmerge (it replays the identity
    rows); the keeper then honours the decision and ends as a rebuild. Writers are not held
    up meanwhile."""
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    stopped = make_durable_ws(keeper.url, projections="external")
    with following(keeper, poll=0.02):
        merge_id = traffic(stopped, "explicit")
        stopped.wait_for(stopped.log.head(), timeout=30)
    stopped._services.bus.handle(Unmerge(merge_id=merge_id, reason="two customers"))
    stopped.close()  # no replay: as a process stopped here
    lines: list[str] = []
    follower = Follower(keeper._services.projector, None, report=lines.append)
    follower.step()
    follower.step()
    decision = decided(keeper)
    assert position(keeper) == decision - 1
    assert lines == [f"projection 'change_log' waits at position {decision - 1}: the unmerge "
                     f"recorded at {decision} is not replayed yet (its process replays the "
                     "persons, or the next open of the store if that process stopped)"]
    # Meanwhile an appending-only writer goes on (its commands wait for the built-in rows).
    other = make_durable_ws(keeper.url, projections="external")
    other.identify("desk", "lee", {"email": "lee@example.com"}, timestamp=at(9))
    follower.step()
    other.merge_persons("ann", "lee", reason="the same person")
    follower.step()
    assert position(keeper) == decision - 1
    assert keeper.profile("ann").person_id == keeper.profile("anne@example.com").person_id
    assert kind_of(keeper, merge_id) == "explicit"
    opened = make_durable_ws(keeper.url)  # the next open finishes the unmerge
    assert opened.profile("ann").person_id != opened.profile("anne@example.com").person_id
    follower.step()
    assert lines[1:] == [f"projection 'change_log' goes on past the unmerge at {decision}"]
    assert position(keeper) == keeper.log.head()
    kept = rows(keeper)
    keeper.rebuild(["change_log"])
    assert rows(keeper) == kept
    # Nothing left to finish: the next open reads the decisions and the merge row only.
    assert not finish_unmerges(opened._services.stores, opened._services.projector)


@pytest.mark.parametrize("path", ["purged in place", "rebuilt"])
def test_a_forget_after_a_stopped_unmerge(make_durable_ws: WorkspaceFactory,
                                          monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """An unmerge's process stopped before its replay; then an appending-only writer forgets
    someone else. Purged in place (the forgotten person's rows only), the unmerge is still
    not replayed: the keeper waits before it until the next open. Rebuilt (the purge could
    not be proved exact), every projection was replayed, the unmerge with them: the keeper
    honours both decisions at once. Either way it ends as a rebuild."""
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    stopped = make_durable_ws(keeper.url, projections="external")
    with following(keeper, poll=0.02):
        merge_id = traffic(stopped, "explicit")
        stopped.identify("desk", "lee", {"email": "lee@example.com"}, timestamp=at(8))
        stopped.wait_for(stopped.log.head(), timeout=30)
    stopped._services.bus.handle(Unmerge(merge_id=merge_id, reason="two customers"))
    stopped.close()
    follower = Follower(keeper._services.projector, None, report=lambda line: None)
    follower.step()
    decision = decided(keeper)
    forgetting = make_durable_ws(keeper.url, projections="external")
    if path == "rebuilt":
        monkeypatch.setattr(erasure, "_plan", lambda *args: None)
    # The keeper keeps its projection (open, registered): left to it, never dropped.
    assert forgetting.forget("lee", reason="erasure request").dropped == []
    follower.step()
    if path == "purged in place":
        assert kind_of(keeper, merge_id) == "explicit"
        assert position(keeper) == decision - 1
        make_durable_ws(keeper.url)  # the next open finishes the unmerge
        follower.step()
    assert kind_of(keeper, merge_id) == "unmerged"
    assert position(keeper) == keeper.log.head()
    kept = rows(keeper)
    keeper.rebuild(["change_log"])
    assert rows(keeper) == kept
