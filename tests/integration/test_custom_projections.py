"""Custom projections users write themselves (issue 14, section 2), on every store."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import msgspec
import psycopg
import pytest
from idstitch.projections import custom_batches, custom_others

import idstitch
from idstitch.errors import InvalidCommand, ProjectionFailed
from idstitch.testing_projections import ChangeLog, Counter
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


class PushReachable(idstitch.Projection):
    """Devices of identified persons that hold a token (the example of api.md)."""

    name = "push_reachable"
    version = 1
    events = frozenset({"DeviceTokenRegistered", "DeviceTokenRemoved", "Identified",
                        "IdentityCleared"})

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE push_reachable (device_id TEXT PRIMARY KEY, person_id TEXT, "
                   "token TEXT)")
        db.execute("CREATE TABLE tokens (device_id TEXT PRIMARY KEY, token TEXT)")
        db.execute("CREATE TABLE identified (device_id TEXT PRIMARY KEY, person_id TEXT)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        device = change.device_id
        if change.event == "DeviceTokenRegistered":
            # A token lives on one device: registered here, it leaves any other.
            db.execute("DELETE FROM tokens WHERE token = ?", (change.data["token"],))
            db.execute("DELETE FROM push_reachable WHERE token = ?", (change.data["token"],))
            db.execute("INSERT INTO tokens VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE "
                       "SET token = excluded.token", (device, change.data["token"]))
        elif change.event == "DeviceTokenRemoved":
            db.execute("DELETE FROM tokens WHERE device_id = ?", (device,))
        elif change.event == "Identified":
            db.execute("INSERT INTO identified VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE "
                       "SET person_id = excluded.person_id", (device, change.person_id))
        elif change.event == "IdentityCleared":
            db.execute("DELETE FROM identified WHERE device_id = ?", (device,))
        db.execute("DELETE FROM push_reachable WHERE device_id = ?", (device,))
        db.execute("INSERT INTO push_reachable SELECT t.device_id, i.person_id, t.token FROM "
                   "tokens t JOIN identified i ON i.device_id = t.device_id WHERE t.device_id = ?",
                   (device,))


def reachable(ws: Workspace) -> list[tuple[Any, ...]]:
    return ws.projection_db("push_reachable").query(
        "SELECT device_id, token FROM push_reachable ORDER BY device_id")


def traffic(ws: Workspace, seed: int, n: int) -> None:
    """Identifies (merges and switches), clears, tokens moving, attributes, late events."""
    rng = random.Random(seed)
    for i in range(n):
        device = f"d{rng.randrange(12)}"
        at = T0 + timedelta(seconds=i - (rng.randrange(30) if rng.random() < 0.2 else 0))
        kind = rng.random()
        if kind < 0.25:
            ws.identify(device, rng.choice([f"u{rng.randrange(6)}", f"u{rng.randrange(6)}@x.io"]),
                        {"plan": rng.choice(["a", "b"]), "n": i}, timestamp=at)
        elif kind < 0.45:
            ws.set_profile_attributes(device, {"k": rng.randrange(4)}, timestamp=at,
                                      set_once={"first": i}, unset=["n"] if i % 7 == 0 else None)
        elif kind < 0.6:
            ws.register_device_token(device, f"tok{rng.randrange(8)}", platform="ios",
                                     timestamp=at)
        elif kind < 0.68:
            ws.clear_identify(device, timestamp=at)
        elif kind < 0.75:
            ws.remove_device_token(device, f"tok{rng.randrange(8)}", timestamp=at)
        else:
            ws.set_device_attributes(device, {"theme": rng.choice(["dark", "light"])},
                                     timestamp=at)


def test_the_api_example_end_to_end(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.register_device_token("d1", "tok1", platform="ios")
    ws.identify("d1", "u1")
    ws.register_device_token("d2", "tok2", platform="android")  # anonymous: not reachable
    ws.run_projection(PushReachable)
    assert reachable(ws) == [("d1", "tok1")]
    ws.identify("d2", "u2")  # kept current after every write from now on
    ws.register_device_token("d2", "tok1")  # the token moves: d1 loses it
    assert reachable(ws) == [("d2", "tok1")]
    ws.clear_identify("d2")
    assert reachable(ws) == []
    person = ws.profile("u2")
    assert person is not None
    rows = ws.projection_db("push_reachable").query("SELECT person_id FROM identified "
                                                    "WHERE device_id = ?", ["d1"])
    assert rows == [(ws.profile("u1").person_id,)]  # type: ignore[union-attr]


def test_a_projection_given_at_open_is_registered_and_caught_up(make_ws: WorkspaceFactory) -> None:
    first = make_ws()
    traffic(first, 1, 60)
    if first.url == "memory:":
        ws = first
        ws.run_projection(Counter())
    else:
        ws = make_ws(first.url, projections=[Counter()])
    counted = ws.projection_db("counter").query("SELECT sum(n) FROM counts")
    assert counted == [(ws.log.head(),)]


def test_changes_equal_the_history_of_their_positions(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws, 7, 90)
    ws.run_projection(ChangeLog)  # half folded at registration, half as the writes come
    traffic(ws, 8, 90)
    folded = dict(ws.projection_db("change_log").query("SELECT position, change FROM change_log"))
    assert sorted(folded) == list(range(1, ws.log.head() + 1))  # every position, once
    seen = 0
    for user in [f"u{i}" for i in range(6)] + [f"u{i}@x.io" for i in range(6)] + [
            f"d{i}" for i in range(12)]:
        person = ws.profile(user) if not user.startswith("d") else ws.profile_of_device(user)
        if person is None:
            continue
        for change in ws.history(person.person_id):
            assert msgspec.json.decode(folded[change.position]) == msgspec.json.decode(
                msgspec.json.encode(change)), change.position
            seen += 1
    assert seen > 100


def test_decisions_give_the_changes_history_shows(make_ws: WorkspaceFactory) -> None:
    """An explicit merge is the Change of its primary (as in history); an undone merge, the
    undo and a forget change no person at their positions: no Change. Kept current or
    rebuilt, the projection holds the same."""
    ws = make_ws(projections=[ChangeLog()])
    ws.identify("a", "ann", {"plan": "x"})
    ws.identify("b", "bo", {"plan": "y", "age": 3})
    undone = ws.merge_persons("ann", "bo", reason="looked alike")
    ws.set_profile_attributes("b", {"k": 1})
    ws.unmerge(undone, reason="they are not")
    ws.identify("c", "cy")
    ws.identify("d", "di", {"age": 4})
    ws.merge_persons("cy", "di", reason="one customer")
    ws.identify("e", "eve")
    ws.forget("eve", reason="ticket 1")
    query = "SELECT position, change FROM change_log ORDER BY position"
    folded = dict(ws.projection_db("change_log").query(query))
    decisions = {pos for pos, ev in ws.log.read(0, 100) if ev.device_id == "workspace:decisions"}
    [merged] = [c for c in ws.history("cy") if c.event == "PersonsMerged"]
    assert sorted(decisions - set(folded)) == sorted(decisions - {merged.position})
    assert msgspec.json.decode(folded[merged.position]) == msgspec.json.decode(
        msgspec.json.encode(merged))
    ws.rebuild(["change_log"])
    assert dict(ws.projection_db("change_log").query(query)) == folded


class Flaky(idstitch.Projection):
    """Counts Changes; raises at the position ``fail_at`` while it is set."""

    name = "flaky"
    fail_at: ClassVar[int | None] = None

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE seen (position BIGINT PRIMARY KEY)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        db.execute("INSERT INTO seen VALUES (?)", (change.position,))
        if change.position == Flaky.fail_at:
            raise ZeroDivisionError("the handler's own bug")


def test_a_failing_handler_rolls_back_its_batch_and_resumes_exactly_once(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    for i in range(5):
        ws.identify(f"d{i}", f"u{i}")
    Flaky.fail_at = 3
    try:
        with pytest.raises(ProjectionFailed) as failed:
            ws.run_projection(Flaky)
        assert failed.value.projection == "flaky" and failed.value.position == 3
        assert isinstance(failed.value.__cause__, ZeroDivisionError)
        assert "flaky" in str(failed.value) and "3" in str(failed.value)
        # The whole batch rolled back with its tracking: nothing of it is visible.
        ws.auto_catch_up = False
        assert ws.projection_db("flaky").query("SELECT count(*) FROM seen") == [(0,)]
        ws.auto_catch_up = True
        # Writes go on, and return their positions; the built-in projections too.
        assert ws.identify("d9", "u9") == 6
        assert ws.profile("u9") is not None
        with pytest.raises(ProjectionFailed):
            ws.catch_up()
        with pytest.raises(ProjectionFailed):
            ws.projection_db("flaky")
    finally:
        Flaky.fail_at = None
    assert ws.catch_up() == 6
    rows = ws.projection_db("flaky").query("SELECT position FROM seen ORDER BY position")
    assert rows == [(p,) for p in range(1, 7)]  # each position once: none skipped or doubled


class Batches(idstitch.Projection):
    """Records the positions of each handle_batch call."""

    name = "batches"
    calls: ClassVar[list[list[int]]] = []

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE seen (position BIGINT PRIMARY KEY)")

    def handle_batch(self, db: idstitch.ProjectionDB, changes: Sequence[idstitch.Change]
                     ) -> None:
        Batches.calls.append([c.position for c in changes])
        for change in changes:
            db.execute("INSERT INTO seen VALUES (?)", (change.position,))


def test_a_batch_is_read_a_chunk_at_a_time_but_handle_batch_gets_it_whole(
        make_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catch-up reads and builds a transaction's Changes a chunk at a time; the batch hook
    still gets every Change of its transaction in one call, in order."""
    monkeypatch.setattr(custom_batches, "BATCH", 7)
    monkeypatch.setattr(custom_batches, "CHUNK", 2)
    ws = make_ws()
    traffic(ws, 5, 20)
    Batches.calls = []
    ws.run_projection(Batches)
    head = ws.log.head()
    assert [p for call in Batches.calls for p in call] == list(range(1, head + 1))
    assert [len(call) for call in Batches.calls[:-1]] == [7] * (len(Batches.calls) - 1)


def test_a_handler_failing_past_the_first_chunk_rolls_back_the_whole_batch(
        make_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(custom_batches, "BATCH", 6)
    monkeypatch.setattr(custom_batches, "CHUNK", 2)
    ws = make_ws()
    for i in range(10):
        ws.identify(f"d{i}", f"u{i}")
    Flaky.fail_at = 10  # in the second batch (7..10), its second chunk
    try:
        with pytest.raises(ProjectionFailed) as failed:
            ws.run_projection(Flaky)
        assert failed.value.position == 10
        ws.auto_catch_up = False
        rows = ws.projection_db("flaky").query("SELECT position FROM seen ORDER BY position")
        assert rows == [(p,) for p in range(1, 7)]  # the first batch only, none of the second
        assert ws._services.projector.custom.position("flaky") == 6
        ws.auto_catch_up = True
    finally:
        Flaky.fail_at = None
    assert ws.catch_up() == 10
    rows = ws.projection_db("flaky").query("SELECT position FROM seen ORDER BY position")
    assert rows == [(p,) for p in range(1, 11)]


def test_reopening_resumes_from_the_tracked_position(make_durable_ws: WorkspaceFactory) -> None:
    ws = make_durable_ws(projections=[Flaky()])
    traffic(ws, 3, 40)
    url = ws.url
    ws.close()
    again = make_durable_ws(url)
    traffic(again, 4, 10)  # not registered here: not folded
    again.close()
    third = make_durable_ws(url, projections=[Flaky()])
    rows = third.projection_db("flaky").query("SELECT position FROM seen ORDER BY position")
    assert rows == [(p,) for p in range(1, third.log.head() + 1)]


class Platforms(idstitch.Projection):
    name = "platforms"
    version = 1
    events = frozenset({"DeviceTokenRegistered"})
    fail: ClassVar[bool] = False

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE platforms (device_id TEXT PRIMARY KEY, platform TEXT)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        db.execute("INSERT INTO platforms VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                   "platform = excluded.platform", (change.device_id, change.data["platform"]))


class PlatformsV2(Platforms):
    """The same name, a new version: the platform upper-cased."""

    version = 2

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        if PlatformsV2.fail:
            raise RuntimeError("not ready")
        db.execute("INSERT INTO platforms VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                   "platform = excluded.platform",
                   (change.device_id, str(change.data["platform"]).upper()))


def test_a_new_version_is_built_beside_the_old_then_swapped_in(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.register_device_token("d1", "t1", platform="ios")
    ws.register_device_token("d2", "t2", platform="android")
    ws.run_projection(Platforms)
    if ws.url != "memory:":  # the new version comes with a new release: a reopen
        ws.close()
        ws = make_ws(ws.url)
    PlatformsV2.fail = True
    try:
        with pytest.raises(ProjectionFailed):
            ws.run_projection(PlatformsV2)
        # Readers still see version 1 while version 2 cannot be built.
        ws.auto_catch_up = False
        assert ws.projection_db("platforms").query(
            "SELECT platform FROM platforms ORDER BY device_id") == [("ios",), ("android",)]
        ws.auto_catch_up = True
    finally:
        PlatformsV2.fail = False
    assert ws.catch_up() == 2
    assert ws.projection_db("platforms").query(
        "SELECT platform FROM platforms ORDER BY device_id") == [("IOS",), ("ANDROID",)]
    tables = ws._services.projector.custom.tables
    assert [(t.version, t.live) for t in tables.versions("platforms")] == [(2, True)]
    if ws.url.startswith("sqlite"):
        import sqlite3
        with sqlite3.connect(ws.url[len("sqlite:///"):]) as conn:
            names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master")]
        assert not [n for n in names if n.startswith("p_platforms_v1_")]
        assert "p_platforms_v2_platforms" in names


def test_rebuild_one_custom_projection(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    traffic(ws, 5, 50)
    ws.run_projection(Counter)
    identity = ws.rows.meta("identity")
    ws.projection_db("counter")
    before = ws.projection_db("counter").query("SELECT event, n FROM counts ORDER BY event")
    replayed: list[int] = []
    assert ws.rebuild(["counter"], progress=replayed.append) == ws.log.head()
    # The positions it reports add up to the head, as for the built-in projections.
    assert replayed and all(n > 0 for n in replayed) and sum(replayed) == ws.log.head()
    assert ws.projection_db("counter").query("SELECT event, n FROM counts ORDER BY event") == before
    assert ws.rows.meta("identity") == identity  # the built-in rows were not rebuilt


@pytest.mark.parametrize("name", ["Bad", "bad-name", "x; DROP TABLE idstitch_rows", "", "1x",
                                  "a" * 41, 7, "identity", "device_attributes"])
def test_a_projection_name_must_be_a_plain_identifier(make_ws: WorkspaceFactory, name: Any) -> None:
    ws = make_ws()
    bad = type("Bad", (Counter,), {"name": name})
    with pytest.raises(InvalidCommand) as raised:
        ws.run_projection(bad)
    assert raised.value.field == "name"
    assert ws._services.projector.custom.projections == {}


def test_a_misspelt_event_name_is_refused_not_a_projection_that_folds_nothing(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    misspelt = type("Misspelt", (Counter,), {"events": frozenset({"Identify", "Identified"})})
    with pytest.raises(InvalidCommand, match=r"unknown Change.event names \['Identify'\]") as e:
        ws.run_projection(misspelt)
    assert e.value.field == "events"
    assert ws._services.projector.custom.projections == {}
    ws.run_projection(type("Spelt", (Counter,), {"events": frozenset({"Identified"})}))


class Snoop(idstitch.Projection):
    name = "snoop"
    target: ClassVar[str] = "idstitch_rows"

    def setup(self, db: idstitch.ProjectionDB) -> None:
        db.execute("CREATE TABLE mine (x TEXT)")

    def handle(self, db: idstitch.ProjectionDB, change: idstitch.Change) -> None:
        db.query(f"SELECT * FROM {Snoop.target}")


@pytest.mark.parametrize("target", ["idstitch_rows", "idstitch_tracking", "idstitch_custom"])
def test_a_projection_cannot_reach_the_built_in_tables(make_ws: WorkspaceFactory,
                                                        target: str) -> None:
    ws = make_ws()
    ws.identify("d1", "u1")
    Snoop.target = target
    with pytest.raises(ProjectionFailed) as failed:
        ws.run_projection(Snoop)
    assert failed.value.position == 1
    ws.auto_catch_up = False
    with pytest.raises(InvalidCommand, match="only its own tables"):
        ws.projection_db("snoop").query(f"SELECT * FROM {target}")
    with pytest.raises(InvalidCommand, match=r"read-only|only its own tables"):
        ws.projection_db("snoop").execute("INSERT INTO mine VALUES (?)", ("x",))


def test_a_projection_that_wants_no_events_is_kept_at_the_head_without_folding(
        make_ws: WorkspaceFactory) -> None:
    from idstitch.testing_projections import NoEvents

    ws = make_ws(projections=[NoEvents()])
    traffic(ws, 2, 30)
    assert ws.catch_up() == ws.log.head()  # NoEvents.handle raises if ever called
    assert ws._services.projector.custom.position("no_events") == ws.log.head()
    assert ws.projection_db("no_events").query("SELECT count(*) FROM nothing") == [(0,)]


def test_a_stream_that_cannot_be_built_stops_no_write(make_ws: WorkspaceFactory,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from idstitch.projections.changes import ChangeStream

    ws = make_ws(projections=[Counter()])
    ws.identify("d1", "u1")

    def behind(self: ChangeStream, events: Any, wanted: Any = None) -> Any:
        raise LookupError("the identity rows are behind the log read")

    monkeypatch.setattr(ChangeStream, "changes", behind)
    assert ws.identify("d2", "u2") == 2  # the write returns its position
    assert ws.profile("u2") is not None
    with pytest.raises(ProjectionFailed) as failed:
        ws.catch_up()
    assert failed.value.position == 2 and isinstance(failed.value.__cause__, LookupError)
    monkeypatch.undo()
    assert ws.catch_up() == 2
    assert ws.projection_db("counter").query("SELECT sum(n) FROM counts") == [(2,)]


def test_a_process_still_on_a_replaced_version_is_told_not_looped(
        make_durable_ws: WorkspaceFactory) -> None:
    old = make_durable_ws(projections=[Platforms()])
    old.register_device_token("d1", "t1", platform="ios")
    new = make_durable_ws(old.url, projections=[PlatformsV2()])  # built, swapped in
    assert new.projection_db("platforms").query("SELECT platform FROM platforms") == [("IOS",)]
    new.register_device_token("d2", "t2", platform="android")
    with pytest.raises(ProjectionFailed, match="no longer tracked") as failed:
        old.catch_up()
    assert failed.value.projection == "platforms"
    # It names the version that replaced it, and what registering this one again would do.
    assert "replaced it (tracked now: version 2 (live))" in str(failed.value)
    assert "swaps it back in" in str(failed.value)
    assert new.projection_db("platforms").query(
        "SELECT platform FROM platforms ORDER BY device_id") == [("IOS",), ("ANDROID",)]


def test_registering_an_older_version_again_rolls_back_to_it(
        make_durable_ws: WorkspaceFactory) -> None:
    ws = make_durable_ws(projections=[Platforms()])
    ws.register_device_token("d1", "t1", platform="ios")
    newer = make_durable_ws(ws.url, projections=[PlatformsV2()])
    newer.register_device_token("d2", "t2", platform="android")
    assert [t.version for t in newer._services.projector.custom.tables.versions("platforms")] == [2]
    rolled_back = make_durable_ws(ws.url, projections=[Platforms()])
    # Built afresh from position 0 (version 1's tables were dropped at the swap), then live.
    assert rolled_back.projection_db("platforms").query(
        "SELECT platform FROM platforms ORDER BY device_id") == [("ios",), ("android",)]
    versions = rolled_back._services.projector.custom.tables.versions("platforms")
    assert [(t.version, t.live) for t in versions] == [(1, True)]
    assert versions[0].position == rolled_back.log.head()


def test_a_reader_follows_the_tables_another_process_swapped_in(
        make_durable_ws: WorkspaceFactory) -> None:
    old = make_durable_ws(projections=[Platforms()])
    old.register_device_token("d1", "t1", platform="ios")
    reader = old.projection_db("platforms")
    assert reader.query("SELECT platform FROM platforms") == [("ios",)]
    make_durable_ws(old.url, projections=[PlatformsV2()])  # built beside, swapped in
    # The tables this reader found are dropped: it reads the ones live now.
    assert reader.query("SELECT platform FROM platforms") == [("IOS",)]
    with pytest.raises(InvalidCommand, match=r"no_such_table|no such table|does not exist"):
        reader.query("SELECT * FROM no_such_table")  # the statement's own fault: raised


def test_identity_rows_behind_the_log_stop_a_projection_quietly_for_a_while(
        make_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from idstitch.projections.changes import ChangeStream, RowsBehind

    ws = make_ws(projections=[Counter()])
    ws.identify("d1", "u1")
    real = ChangeStream.changes

    def behind(self: ChangeStream, events: Any, wanted: Any = None) -> Any:
        raise RowsBehind("another process is rewriting the identity rows")

    monkeypatch.setattr(ChangeStream, "changes", behind)
    assert ws.identify("d2", "u2") == 2  # writes go on
    assert ws.catch_up() == 2  # no ProjectionFailed: another process's work under way
    assert ws.projection_db("counter").query("SELECT sum(n) FROM counts") == [(1,)]
    monkeypatch.setattr(custom_others, "BEHIND_GRACE", 0.0)
    with pytest.raises(ProjectionFailed) as failed:  # for too long: reported
        ws.catch_up()
    assert failed.value.position == 2 and isinstance(failed.value.__cause__, RowsBehind)
    monkeypatch.setattr(ChangeStream, "changes", real)
    assert ws.catch_up() == 2
    assert ws.projection_db("counter").query("SELECT sum(n) FROM counts") == [(2,)]


def test_a_version_missing_while_another_process_rebuilds_it_is_no_failure(
        make_durable_ws: WorkspaceFactory) -> None:
    from idstitch.projections.custom import Untracked

    ws = make_durable_ws(projections=[Counter()])
    ws.identify("d1", "u1")
    runner = ws._services.projector.custom
    gone = Untracked("version 1 of 'counter' is no longer tracked")
    runner.tables.drop("counter", 1)  # as between a rebuild's drop and its create
    assert runner._failures(["counter"], 1, gone) == []
    assert "counter" in runner._stopped
    runner.tables.create("counter", 2, True, Counter().setup, ws.log.head())  # replaced
    [failure] = runner._failures(["counter"], 1, gone)
    # Told as what it is: another version replaced this one.
    assert failure.projection == "counter" and isinstance(failure.__cause__, Untracked)
    assert "tracked now: version 2 (live)" in str(failure.__cause__)


def test_another_processs_work_met_again_after_a_pause_is_timed_afresh(
        make_ws: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from idstitch.projections.changes import RowsBehind

    ws = make_ws(projections=[Counter()])
    ws.identify("d1", "u1")
    runner = ws._services.projector.custom
    monkeypatch.setattr(custom_others, "BEHIND_GRACE", 0.2)
    behind = RowsBehind("another process is rewriting the identity rows")
    assert runner._failures(["counter"], 1, behind) == []  # an episode starts
    time.sleep(0.3)  # longer than the grace, with nothing met in between
    assert runner._failures(["counter"], 1, behind) == []  # a new episode, not the old one
    time.sleep(0.1)
    assert runner._failures(["counter"], 1, behind) == []
    time.sleep(0.15)  # met all along for longer than the grace: reported
    [failure] = runner._failures(["counter"], 1, behind)
    assert failure.__cause__ is behind


def test_a_rebuild_repairs_tables_left_without_their_tracking(
        make_durable_ws: WorkspaceFactory) -> None:
    ws = make_durable_ws(projections=[Counter()])
    ws.identify("d1", "u1")
    runner = ws._services.projector.custom
    # The state a drop racing a create left before they were serialised: tables, no row.
    with runner.tables.transaction("counter", 1) as tx:
        tx.db.execute("SELECT 1 FROM counts")  # the tables are there
    untrack(ws.url)
    ws.rebuild(["counter"])  # failed on "already exists" before
    assert ws.projection_db("counter").query("SELECT sum(n) FROM counts") == [(1,)]


def test_registering_again_repairs_tables_left_without_their_tracking(
        make_durable_ws: WorkspaceFactory) -> None:
    """A process opening the store with the projection found its tables but no tracking, and
    failed at open ("table ... already exists"): nothing could then rebuild it."""
    ws = make_durable_ws(projections=[Counter()])
    ws.identify("d1", "u1")
    ws.identify("d2", "u2")
    ws.close()
    untrack(ws.url)
    again = make_durable_ws(ws.url, projections=[Counter()])
    assert again.projection_db("counter").query("SELECT sum(n) FROM counts") == [(2,)]


def untrack(url: str) -> None:
    """Delete every custom projection's tracking row, leaving their tables (damage)."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url[len("sqlite:///"):])) as db, db:
            db.execute("DELETE FROM idstitch_custom")
    else:
        server, _, query = url.partition("?")
        schema = dict(p.split("=", 1) for p in query.split("&") if p).get("schema", "public")
        with psycopg.connect(server) as pg:
            pg.execute(f'DELETE FROM "{schema}".idstitch_custom')
