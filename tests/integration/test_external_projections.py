"""Writers that only append (``projections="external"``), a Follower that keeps the
projections, ``wait_for`` and ``lag``; on PostgreSQL, appends that commit in position order
(a held transaction blocks later ones: nothing to skip) and NOTIFY waking the follower."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from idstitch.domain.device import anonymous_id_for, anonymous_person_id

import idstitch
from idstitch.errors import InvalidCommand, PolicyMismatch, ProjectionsBehind
from idstitch.service import following as following_module
from idstitch.testing import TemporaryPostgres, following
from idstitch.testing_projections import ChangeLog, Counter
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


def test_an_external_writer_only_appends_and_says_how_far_behind(
        make_durable_ws: WorkspaceFactory) -> None:
    projector = make_durable_ws()
    writer = make_durable_ws(projector.url, projections="external")
    assert writer.external and not writer.auto_catch_up
    position = writer.identify("phone", "user-7", {"plan": "pro"})
    assert position is not None and position == writer.log.head()
    # Nothing caught up: the read does not block, and the workspace says how far behind.
    assert writer.profile("user-7") is None
    assert writer.lag() == position
    # The device attributes fold none of an identify's events: they hold the log already.
    assert {s.name: s.lag for s in writer.projection_status()} == {
        "identity": position, "device_attributes": 0}
    with pytest.raises(ProjectionsBehind) as behind:
        writer.wait_for(position, timeout=0.1)
    assert behind.value.position == position and behind.value.behind == position
    assert set(behind.value.lagging) == {"identity"}
    assert "idstitch project" in str(behind.value)
    with following(projector):
        assert writer.wait_for(position, timeout=30) >= position
        profile = writer.profile("user-7")
        assert profile is not None and profile.attributes == {"plan": "pro"}
        assert writer.lag() == 0
        # Read-your-writes across processes, write after write.
        for i in range(5):
            reached = writer.set_profile_attributes("phone", {"n": i})
            writer.wait_for(reached, timeout=30)
            again = writer.profile("user-7")
            assert again is not None and again.attributes["n"] == i


def test_wait_for_covers_the_custom_projections_the_store_tracks(
        make_durable_ws: WorkspaceFactory) -> None:
    projector = make_durable_ws(projections=[Counter()])
    writer = make_durable_ws(projector.url, projections="external")
    position = writer.identify("phone", "user-7")
    assert position is not None
    assert [s.name for s in writer.projection_status() if s.custom] == ["counter"]
    with pytest.raises(ProjectionsBehind) as behind:
        writer.wait_for(position, timeout=0.05)
    assert "counter" in behind.value.lagging
    with following(projector):
        writer.wait_for(position, timeout=30)
    rows = projector.projection_db("counter").query("SELECT event, n FROM counts")
    assert sum(n for _, n in rows) == position


def test_external_needs_a_store_another_process_can_open() -> None:
    with pytest.raises(InvalidCommand, match="projections"):
        idstitch.open("memory:", projections="external")
    with pytest.raises(InvalidCommand, match="projections"):
        idstitch.open("memory:", projections="elsewhere")  # type: ignore[arg-type]


def test_wait_for_refuses_bad_arguments_and_returns_at_once_when_current(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    position = ws.identify("phone", "user-7")
    assert position is not None
    assert ws.wait_for(position) == position
    assert ws.wait_for(None) == position
    with pytest.raises(InvalidCommand, match="position"):
        ws.wait_for(-1)
    with pytest.raises(InvalidCommand, match="timeout"):
        ws.wait_for(position, timeout=-1)
    with pytest.raises(InvalidCommand, match="beyond the head"):
        ws.wait_for(position + 1)
    assert ws.lag() == 0


def _events_of(postgres: TemporaryPostgres, schema: str) -> list[tuple[str, int, str, bytes]]:
    """The raw rows of a store's events table (to append them to another through the same
    path its writers take)."""
    with psycopg.connect(postgres.url("idstitch_tests")) as conn:
        rows = conn.execute(
            f"SELECT replace(originator_id::text, '-', ''), originator_version, topic, state "
            f"FROM {schema}.idstitch_events ORDER BY notification_id").fetchall()
    return [(a, int(v), t, bytes(s)) for a, v, t, s in rows]


def test_a_held_append_is_never_skipped_and_never_stalls_the_follower(
        postgres: TemporaryPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    base = postgres.url("idstitch_tests")
    # The held rows are copied into another store as they are stored: in plaintext, since
    # sealed ones would need the template's keys there too.
    monkeypatch.setenv("IDSTITCH_ENCRYPTION", "off")
    template = idstitch.open(base + "?schema=gap_template")
    monkeypatch.delenv("IDSTITCH_ENCRYPTION")
    template.identify("held", "u-held", {"who": "held"})
    template.close()
    held_rows = _events_of(postgres, "gap_template")

    url = base + "?schema=gap_target"
    projecting = idstitch.open(url)
    holder = idstitch.open(url, projections="external")
    writer = idstitch.open(url, projections="external")
    try:
        held, release = threading.Event(), threading.Event()
        positions: dict[str, Any] = {}

        def hold() -> None:
            # The writers' own append path: the table lock, the insert, and no commit until
            # released.
            with holder.rows.exclusive() as insert:  # type: ignore[attr-defined]
                positions["held"] = insert(held_rows)
                held.set()
                release.wait(30)

        def write() -> None:
            positions["later"] = writer.identify("other", "u-other")

        with following(projecting, poll=0.05) as follower:
            holding = threading.Thread(target=hold)
            holding.start()
            assert held.wait(30)
            later = threading.Thread(target=write)
            later.start()
            time.sleep(0.5)
            # The later append waits for the held one's lock: positions commit in the order
            # they were taken, so the follower cannot see a later one before an earlier one.
            assert later.is_alive()
            assert writer.log.head() == 0 and follower.reached == 0
            release.set()
            holding.join(30)
            later.join(30)
            assert positions["later"] > max(positions["held"])
            writer.wait_for(positions["later"], timeout=30)
        assert writer.profile("u-held") is not None  # the held position was not skipped
        other = writer.profile("u-other")
        assert other is not None and other.devices[0].device_id == "other"
    finally:
        for ws in (projecting, holder, writer):
            ws.close()


def test_a_notification_wakes_the_follower_before_its_poll_interval(
        postgres: TemporaryPostgres) -> None:
    url = postgres.url("idstitch_tests") + "?schema=notified"
    projecting = idstitch.open(url)
    writer = idstitch.open(url, projections="external")
    try:
        with following(projecting, poll=60) as follower:
            time.sleep(0.3)  # the follower is asleep on its listener now
            position = writer.identify("phone", "user-7")
            assert position is not None
            started = time.monotonic()
            writer.wait_for(position, timeout=20)
            assert time.monotonic() - started < 10  # far under the 60 s poll
            assert follower.reached >= position
    finally:
        projecting.close()
        writer.close()


def test_decisions_of_an_external_writer_read_the_persons_as_the_whole_log_makes_them(
        make_durable_ws: WorkspaceFactory) -> None:
    """A command that reads about persons (a merge, an unmerge, a ``cio_`` id) waits for the
    projections to reach the head of the log: checked against rows behind it, an unmerge of
    the merge just recorded would be refused as unknown."""
    projector = make_durable_ws()
    writer = make_durable_ws(projector.url, projections="external")
    with following(projector):
        for i in range(20):
            writer.identify(f"phone-{i}", f"user-{i}", {"plan": f"p{i}"})
        # No wait_for: the persons were never read here before the merge names them.
        merge_id = writer.merge_persons("user-1", "user-2", reason="the same human")
        writer.ingest([{"type": "identify", "userId": f"user-{i % 20}", "anonymousId": f"tab-{i}",
                        "traits": {"n": i}, "messageId": f"m{i}",
                        "context": {"device": {"id": f"tab-{i}"}}} for i in range(1000)])
        writer.unmerge(merge_id, reason="a mistake")
        person = writer.wait_for(writer.identify("phone-3", "user-3", {"plan": "max"}), timeout=30)
        assert person == writer.log.head()
        two = writer.profile("user-2")
        assert two is not None and two.identifiers == {"id": "user-2"}
        one = writer.profile("user-1")
        assert one is not None and one.person_id != two.person_id
        # A cio_ id of a person the rows have not folded yet (a converted device keeps its
        # anonymous person's id, which a client can know).
        writer.identify("phone-new", "user-new")
        person_id = anonymous_person_id(anonymous_id_for("phone-new", 0))
        writer.wait_for(writer.identify("tablet-new", f"cio_{person_id}"), timeout=30)
        new = writer.profile("user-new")
        assert new is not None and new.person_id == person_id
        assert {d.device_id for d in new.devices} == {"phone-new", "tablet-new"}
        kept = projector.dump()
    projector.rebuild(parallel=False)
    assert projector.dump() == kept


def test_an_unmerge_right_after_its_merge_works_without_auto_catch_up(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws(None)
    ws.identify("phone", "dana", {"plan": "pro"})
    ws.identify("laptop", "sam", {"plan": "free"})
    ws.auto_catch_up = False
    merge_id = ws.merge_persons("dana", "sam", reason="the same human")
    ws.unmerge(merge_id, reason="a mistake")
    ws.catch_up()
    sam = ws.profile("sam")
    assert sam is not None and sam.attributes == {"plan": "free"}


def test_an_external_ingest_with_nobody_projecting_refuses_its_person_reads_after_one_wait(
        make_durable_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages whose check reads about persons (``cio_`` ids) wait for the projections; when
    nobody keeps them, the first waits HEAD_WAIT_SECONDS and is refused saying so, and the
    later ones of the same ingest are refused at once (a bulk job carries on)."""
    monkeypatch.setattr(following_module, "HEAD_WAIT_SECONDS", 1.0)
    writer = make_durable_ws(None, projections="external")
    writer.identify("phone", "dana")
    person_id = anonymous_person_id(anonymous_id_for("phone", 0))
    messages = [{"type": "identify", "userId": f"cio_{person_id}", "anonymousId": f"tab-{i}",
                 "messageId": f"m{i}", "context": {"device": {"id": f"tab-{i}"}}}
                for i in range(5)]
    messages.append({"type": "identify", "userId": "sam", "anonymousId": "laptop",
                     "context": {"device": {"id": "laptop"}}})
    began = time.monotonic()
    report = writer.ingest(messages)
    assert time.monotonic() - began < 4.0  # one wait, not five
    assert [i for i, _ in report.rejected] == [0, 1, 2, 3, 4]
    assert all("idstitch project" in reason for _, reason in report.rejected)
    assert report.accepted == 1  # the message that reads nothing about persons


def test_a_custom_projection_kept_by_another_process_is_folded_again_after_an_unmerge(
        make_durable_ws: WorkspaceFactory) -> None:
    """An unmerge rewrites both sides' history from the merge on: the process that keeps a
    custom projection of the Changes folds it again from 0 when it meets the decision, and
    ends with what a rebuild gives (here the unmerge is recorded while it is stopped)."""
    keeper = make_durable_ws(None, projections=[ChangeLog()])
    writer = make_durable_ws(keeper.url, projections="external")
    with following(keeper):
        writer.identify("phone", "ann", {"plan": "x"})
        writer.identify("laptop", "bo", {"plan": "y"})
        merge_id = writer.merge_persons("ann", "bo", reason="looked alike")
        writer.set_profile_attributes("laptop", {"k": 1})
        writer.wait_for(writer.log.head(), timeout=30)
    writer.unmerge(merge_id, reason="they are not")  # the rows are at the head: no wait
    with following(keeper):
        writer.wait_for(writer.identify("phone", "ann", {"plan": "z"}), timeout=30)
    query = "SELECT position, change FROM change_log ORDER BY position"
    folded = keeper.projection_db("change_log").query(query)
    keeper.rebuild(["change_log"])
    assert keeper.projection_db("change_log").query(query) == folded


def test_a_follower_folds_with_the_collector_paused_and_leaves_it_as_it_was(
        make_durable_ws: WorkspaceFactory) -> None:
    # A projecting process folds batch after batch over a large working set: the cyclic
    # collector, which would traverse it again and again, sleeps through each catch-up.
    keeper = make_durable_ws()
    writer = make_durable_ws(keeper.url, projections="external")
    writer.ingest({"type": "identify", "userId": f"u{i}", "anonymousId": f"a{i % 50}",
                   "traits": {"n": i}, "messageId": f"m{i}"} for i in range(1_500))
    runs: list[str] = []
    inside: list[bool] = []
    projector = keeper._services.projector
    catch_up = projector.catch_up

    def folding(*args: Any, **kwargs: Any) -> int:
        inside.append(True)
        try:
            return catch_up(*args, **kwargs)
        finally:
            inside.pop()

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and inside:
            runs.append("gc")

    projector.catch_up = folding  # type: ignore[method-assign]
    follower = following_module.Follower(projector, None, report=lambda line: None)
    gc.collect()
    gc.callbacks.append(seen)
    try:
        reached = follower.step()
    finally:
        gc.callbacks.remove(seen)
    assert reached == writer.log.head() and runs == []
    assert gc.isenabled()
    profile = keeper.profile("u1499")
    assert profile is not None and profile.attributes == {"n": 1499}


def test_a_follower_step_leaves_the_young_objects_young(make_durable_ws: WorkspaceFactory) -> None:
    # Steps come every poll: promoting what is alive after each (as a bulk job does once)
    # reset the young generation's count every time, so no collection ever ran between steps
    # and cyclic garbage (a failing custom projection's tracebacks) piled up without bound.
    keeper = make_durable_ws()
    keeper.identify("phone", "ann")
    follower = following_module.Follower(keeper._services.projector, None,
                                         report=lambda line: None)
    follower.step()
    thresholds = gc.get_threshold()
    gc.set_threshold(1_000_000)  # no collection of its own during the test
    try:
        young = [[i] for i in range(1_000)]
        before = gc.get_count()[0]
        follower.step()
        assert gc.get_count()[0] >= before
    finally:
        gc.set_threshold(*thresholds)
    assert len(young) == 1_000


def test_the_embedded_default_lags_nothing_right_after_a_command(
        make_ws: WorkspaceFactory) -> None:
    """Reads see every write after a command: lag() says so too, also when the command's
    events are none of a projection's own (device attributes, which identity does not fold)."""
    ws = make_ws()
    ws.identify("phone", "user-7")
    position = ws.set_device_attributes("phone", {"theme": "dark"})
    assert position is not None and ws.lag() == 0
    status = {s.name: (s.position, s.lag) for s in ws.projection_status()}
    assert status["identity"] == (position, 0)
    assert status["device_attributes"] == (position, 0)


def test_another_process_sees_no_lag_where_nothing_is_left_to_fold(
        make_durable_ws: WorkspaceFactory) -> None:
    """The embedded default leaves a projection's committed position behind over events it
    does not fold (no commit for nothing): another process reading the store sees that it
    holds the log all the same, and wait_for needs no projector to say so."""
    ws = make_durable_ws()
    ws.set_device_attributes("phone", {"theme": "dark"})
    ws.identify("phone", "user-7")
    head = ws.identify("tablet", "user-8")
    assert head is not None
    other = make_durable_ws(ws.url, projections="external")
    assert other.rows.tracked("device_attributes")[0] < head  # what it committed is behind
    status = {s.name: (s.position, s.lag) for s in other.projection_status()}
    assert status == {"identity": (head, 0), "device_attributes": (head, 0)}
    assert other.lag() == 0
    assert other.wait_for(head, timeout=0) == head
    # An event that a projection folds and nobody has folded yet is a lag again: that
    # projection holds the log up to the event before it, the other one past it.
    later = other.set_device_attributes("tablet", {"theme": "light"})
    assert later == head + 1
    status = {s.name: (s.position, s.lag) for s in other.projection_status()}
    assert status == {"identity": (later, 0), "device_attributes": (head, 1)}
    with pytest.raises(ProjectionsBehind):
        other.wait_for(later, timeout=0)


def test_the_policy_of_external_writers_is_the_one_their_projections_are_built_under(
        make_durable_ws: WorkspaceFactory) -> None:
    # A new store written only by writers opened with "switch": the process keeping the
    # projections, opened without a policy, stitches by it (it used to fold under "merge").
    writer = make_durable_ws(projections="external", anonymous_merge="switch")
    writer.identify("p0", "dana")
    writer.set_profile_attributes("p1", {"plan": "trial"})
    position = writer.identify("p1", "dana")
    assert position is not None
    projector = make_durable_ws(writer.url)
    assert projector.anonymous_merge == "switch"
    with following(projector):
        writer.wait_for(position, timeout=30)
    assert [m.kind for m in writer.merges("dana")] == ["converted", "switched"]
    profile = writer.profile("dana")
    assert profile is not None and profile.attributes == {}
    # A writer asking for the other policy is refused at open: its traffic would be
    # stitched by one it did not ask for. Without a policy, it takes the recorded one.
    with pytest.raises(PolicyMismatch, match="anonymous_merge=switch"):
        make_durable_ws(writer.url, projections="external", anonymous_merge="merge")
    assert make_durable_ws(writer.url, projections="external").anonymous_merge == "switch"


def test_a_policy_asked_for_on_a_new_store_is_kept_before_anything_is_recorded(
        make_durable_ws: WorkspaceFactory) -> None:
    ws = make_durable_ws(anonymous_merge="switch")
    url = ws.url
    ws.close()
    reopened = make_durable_ws(url)
    assert reopened.anonymous_merge == "switch"
    # A rebuild keeps it recorded, through its replay too (not only once rows commit).
    reopened.rebuild()
    assert reopened._services.stores.rows.meta("identity") is not None
    reopened.close()
    assert make_durable_ws(url).anonymous_merge == "switch"
    # Of an embedded workspace, another policy is still a replay on open, not a refusal,
    # and the store keeps the new one.
    assert make_durable_ws(url, anonymous_merge="merge").anonymous_merge == "merge"
    assert make_durable_ws(url).anonymous_merge == "merge"
