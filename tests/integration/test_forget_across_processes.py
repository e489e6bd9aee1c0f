"""A forget recorded by one process and honoured by another that keeps custom projections:
the keeper never honours the ``PersonForgotten`` decision over identity rows the forgetting
process has not purged yet (its Changes would say which person each event applied to, and
which merges it caused, as they were before the forget), so that a custom projection kept
elsewhere always ends as a rebuild gives it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from idstitch.domain.commands import ForgetPerson
from idstitch.domain.events import PersonForgotten

from idstitch.service import erasure
from idstitch.service import following as following_module
from idstitch.service.erasure import finish_forgets, shred
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


def traffic(ws: Workspace) -> None:
    """Dana's tablet browses anonymously, then her phone identifies her and the tablet signs
    in with her email: the tablet's anonymous person is merged into hers (a conversion), which
    the forget erases (a rebuild finds neither identify's values)."""
    ws.set_profile_attributes("tablet", {"theme": "dark"}, timestamp=at(1), message_id="m1")
    ws.identify("phone", "dana-user-77", {"email": "dana.secret@example.com"}, timestamp=at(2))
    ws.identify("tablet", "dana.secret@example.com", {"plan": "pro"}, timestamp=at(3))
    ws.identify("laptop", "sam", {"email": "sam@example.com"}, timestamp=at(4))


rows, position = ChangeLog.rows_of, ChangeLog.position_of


def decided(ws: Workspace) -> int:
    """The position of the (one) PersonForgotten decision."""
    return decided_kind(ws, PersonForgotten)


@contextmanager
def purge_held(writer: Workspace, path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    held = Held()
    if path == "purged in place":
        monkeypatch.setattr(erasure, "_purge", held.wrap(erasure._purge))
    else:  # the purge cannot be proved exact: the writer rebuilds every projection
        monkeypatch.setattr(erasure, "_plan", lambda *args: None)
        projector = writer._services.projector
        monkeypatch.setattr(projector, "rebuild", held.wrap(projector.rebuild))
    yield held  # released by deciding(), which starts the decision


@pytest.mark.parametrize("path", ["purged in place", "rebuilt"])
@pytest.mark.parametrize("made", ["before the forget", "while it was unpurged"])
def test_a_keeper_waits_for_the_purge_before_it_honours_a_forget(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch, made: str,
        path: str) -> None:
    """An appending-only writer forgets Dana and is held between its decision and its purge;
    a follower keeping a custom projection (folded again from 0 at a forget: it has no purge
    hook) meets the decision meanwhile. It stops right before it, reporting the lag, and
    honours it once the purge (or the rebuild that replaces it) has landed: its rows then
    equal a rebuild's. Made while the purge was pending (rebuilt then), the projection's
    tables do not count as made after the decision: it is honoured too."""
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    writer = make_durable_ws(keeper.url, projections="external")
    with following(keeper, poll=0.02):
        traffic(writer)
        writer.wait_for(writer.log.head(), timeout=30)
        with purge_held(writer, path, monkeypatch) as held:
            with deciding(held, lambda: writer.forget("dana-user-77", reason="erasure request")):
                decision = decided(keeper)
                if made == "while it was unpurged":
                    keeper.rebuild(["change_log"])  # folded from 0 over the unpurged rows
                waits_right_before(keeper, decision)
            assert [r is True for r in held.results] == [path == "purged in place"]
        reached_head = writer.identify("laptop", "sam", {"plan": "team"}, timestamp=at(8))
        writer.wait_for(reached_head, timeout=30)
        keeper.wait_for(reached_head, timeout=30)
        kept = rows(keeper)
    assert position(keeper) >= reached_head
    keeper.rebuild(["change_log"])
    assert rows(keeper) == kept
    assert not any(s in repr(kept) for s in ("dana-user-77", "dana.secret@"))


def test_a_keeper_waits_for_a_forget_whose_process_stopped_before_its_purge(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forgetting process stops for good after recording its decision: a keeper of a
    custom projection stays right before the decision (its lag says so) until a process
    opens the workspace, which finishes the forget (it rebuilds the rows); the keeper then
    honours the decision and ends as a rebuild. Writers are not held up meanwhile."""
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    stopped = make_durable_ws(keeper.url, projections="external")
    with following(keeper, poll=0.02):
        traffic(stopped)
        stopped.wait_for(stopped.log.head(), timeout=30)
    services = stopped._services
    report = shred(services.stores, services.queries, "dana-user-77")
    services.bus.handle(ForgetPerson(person_id=report.person_id, reason="erasure request"))
    stopped.close()  # no purge: as a process stopped here
    lines: list[str] = []
    follower = Follower(keeper._services.projector, None, report=lines.append)
    follower.step()
    follower.step()
    decision = decided(keeper)
    assert position(keeper) == decision - 1
    assert lines == [f"projection 'change_log' waits at position {decision - 1}: the forget "
                     f"recorded at {decision} is not purged yet (its process purges it, or the "
                     "next open of the store if that process stopped)"]  # said once
    # Meanwhile a merge in an appending-only writer waits for the built-in rows only.
    monkeypatch.setattr(following_module, "HEAD_WAIT_SECONDS", 2.0)
    other = make_durable_ws(keeper.url, projections="external")
    other.identify("desk", "lee", {"email": "lee@example.com"}, timestamp=at(9))
    follower.step()
    other.merge_persons("sam", "lee", reason="the same person")
    follower.step()
    assert position(keeper) == decision - 1
    make_durable_ws(keeper.url)  # the next open finishes the forget
    follower.step()
    assert lines[1:] == [f"projection 'change_log' goes on past the forget at {decision}"]
    assert position(keeper) == keeper.log.head()
    kept = rows(keeper)
    keeper.rebuild(["change_log"])
    assert rows(keeper) == kept


@pytest.mark.parametrize("after", ["new", "existing"])
def test_a_device_left_on_a_forgotten_person_holds_nobody_back(
        make_durable_ws: WorkspaceFactory, after: str) -> None:
    """What remains of Dana under her person id is nameless (identified by identifies that
    read erased), and her phone stays on it. Someone identifies on the phone after the forget
    (no reset): the phone switches to a new user or to an existing one, as on any identified
    device, and Dana's id stays nobody's. The forget's purge has landed all the same: a
    process keeping a custom projection, opened then, folds it to the head, and the next open
    finds no forget to finish."""
    forgetting = make_durable_ws(None)
    traffic(forgetting)
    dana = forgetting.profile("dana-user-77").person_id  # type: ignore[union-attr]
    forgetting.forget("dana-user-77", reason="erasure request")
    assert forgetting.profile_of_device("phone").person_id == dana  # type: ignore[union-attr]
    forgetting.identify("phone", "newbie" if after == "new" else "sam", {}, timestamp=at(9))
    now = forgetting.profile_of_device("phone")
    assert now is not None and now.identified and now.person_id != dana
    assert now.identifiers["id"] == ("newbie" if after == "new" else "sam")
    assert forgetting.profile(dana) is None
    keeper = make_durable_ws(forgetting.url, projections=[ChangeLog()])
    assert position(keeper) == keeper.log.head()
    assert not finish_forgets(keeper._services.stores, keeper._services.projector)
    kept = rows(keeper)
    keeper.rebuild(["change_log"])
    assert rows(keeper) == kept


def burn_a_position(ws: Workspace) -> None:
    """Take the log's next position and never use it, as every PostgreSQL append that is
    rolled back after reserving its positions does (a conflict, a refused check)."""
    schema = parse_qs(urlsplit(ws.url).query)["schema"][0]
    with psycopg.connect(ws.url.split("?")[0], autocommit=True,
                         options=f"-c search_path={schema}") as conn:
        conn.execute("SELECT nextval(pg_get_serial_sequence('idstitch_events', "
                     "'notification_id'))")


@pytest.mark.parametrize("decision", ["forget", "unmerge"])
@pytest.mark.parametrize("durable_kind", ["postgres"], indirect=True)
def test_a_decision_right_after_a_gap_in_the_positions_is_honoured(
        make_durable_ws: WorkspaceFactory, decision: str) -> None:
    """A custom projection folds up to the last event before a decision and stands there: a
    position left unused right before the decision (a rolled-back append) must not read as
    the projection having moved past it (it would keep the forgotten person's values, or
    the merged history)."""
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    writer = make_durable_ws(keeper.url, projections="external")
    with following(keeper, poll=0.02):
        traffic(writer)
        merge_id = writer.merge_persons("dana-user-77", "sam", reason="one person?")
        writer.wait_for(writer.log.head(), timeout=30)
        burn_a_position(writer)
        if decision == "forget":
            writer.forget("dana-user-77", reason="erasure request")
        else:
            writer.unmerge(merge_id, reason="two persons after all")
        writer.identify("desk", "lee", {}, timestamp=at(9))
        writer.wait_for(writer.log.head(), timeout=30)
        keeper.catch_up()
    kept = rows(keeper)
    assert position(keeper) == keeper.log.head()
    if decision == "forget":
        assert not any(s in repr(kept) for s in ("dana-user-77", "dana.secret@"))
    keeper.rebuild(["change_log"])
    assert rows(keeper) == kept


@pytest.mark.parametrize("durable_kind", ["sqlite"], indirect=True)
def test_a_keeper_honouring_a_forget_leaves_no_byte_of_the_person_in_the_files(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch,
        keeper_first: Callable[..., Any]) -> None:
    """The custom projection's tables dropped at the forget (it has no purge hook) leave no
    byte of Dana in the SQLite file or its WAL while both processes still have it open: freed
    pages are zeroed, and the keeper checkpoints once it has honoured the forget (folding
    while the forget waits for it: nothing was left to drop)."""
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    writer = make_durable_ws(keeper.url, projections="external")
    traffic(writer)
    keeper.catch_up()
    assert any("dana.secret@" in change for _, change in rows(keeper))
    monkeypatch.setattr(erasure, "drop_unkept", keeper_first(keeper.catch_up))
    assert writer.forget("dana-user-77", reason="erasure request").dropped == []
    keeper.catch_up()
    assert not any("dana" in change for _, change in rows(keeper))
    path = keeper.url[len("sqlite:///"):]
    for name in (path, path + "-wal"):
        with open(name, "rb") as file:
            assert b"dana.secret@" not in file.read(), name
