"""identity-model.md §4: explicit merges, decisions on the workspace's decisions stream, on
memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import idstitch
from idstitch.errors import InvalidCommand, UnknownPerson
from idstitch.testing import FrozenClock
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def two_people(ws: Workspace) -> None:
    ws.identify("phone", "ann", {"plan": "pro", "city": "Oslo"}, timestamp=at(1))
    ws.identify("laptop", "ann@example.com", {"plan": "free", "age": 40}, timestamp=at(2))
    ws.register_device_token("laptop", "tok-laptop", platform="ios", timestamp=at(3))


def test_merge_joins_the_secondary_into_the_primary_whose_values_win(ws: Workspace) -> None:
    two_people(ws)
    primary = ws.profile("ann")
    secondary = ws.profile("ann@example.com")
    assert primary is not None and secondary is not None
    merge_id = ws.merge_persons("ann", "ann@example.com", reason="same customer, two signups")

    merged = ws.profile("ann@example.com")
    assert merged is not None and merged.person_id == primary.person_id
    assert ws.profile(f"cio_{secondary.person_id}") is not None
    # The primary's plan wins although the secondary's was written later.
    assert merged.attributes == {"plan": "pro", "city": "Oslo", "age": 40}
    assert sorted(d.device_id for d in merged.devices) == ["laptop", "phone"]
    assert set(secondary.anonymous_ids) <= set(merged.anonymous_ids)
    device = ws.device("laptop")
    assert device is not None and device.person_id == primary.person_id
    for identifier in ("ann", "ann@example.com"):
        explicit = [m for m in ws.merges(identifier) if m.kind == "explicit"]
        assert [(m.merge_id, m.reason, m.source, m.target) for m in explicit] == [
            (merge_id, "same customer, two signups", secondary.person_id, primary.person_id)]
    # Later traffic of the secondary's device lands on the merged person.
    ws.set_profile_attributes("laptop", {"age": 41}, timestamp=at(10))
    after = ws.profile("ann")
    assert after is not None and after.attributes["age"] == 41


@pytest.mark.parametrize("noop_removal", [False, True])
def test_a_key_taken_from_the_secondary_is_all_the_secondarys(
        ws: Workspace, noop_removal: bool) -> None:
    """The primary had removed the key, the secondary only set it once: the merged person has
    the secondary's value, and a late write resolves against the secondary's writes of the
    key. The primary's removal used to stay as the key's last write, and decide (or, after a
    no-op removal by the secondary, not decide) whether a late write won."""
    ws.identify("phone", "ann", timestamp=at(0))
    ws.identify("laptop", "bob", timestamp=at(0))
    ws.set_profile_attributes("phone", unset=["k"], timestamp=at(50))
    if noop_removal:
        ws.set_profile_attributes("laptop", unset=["k"], timestamp=at(5))
    ws.set_profile_attributes("laptop", set_once={"k": "q"}, timestamp=at(10))
    ws.merge_persons("ann", "bob", reason="same human")
    assert ws.profile("ann").attributes.get("k") == "q"  # type: ignore[union-attr]
    ws.set_profile_attributes("phone", {"k": "late"}, timestamp=at(30))
    assert ws.profile("ann").attributes.get("k") == "late"  # type: ignore[union-attr]
    assert ws.profile_as_of("ann", at=ws.log.head()) == ws.profile("ann")
    rows = ws.dump()
    ws.rebuild()
    assert ws.dump() == rows


def test_merge_survives_rebuild_and_reopen(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    two_people(ws)
    ws.merge_persons("ann", "ann@example.com", reason="dup")
    before = ws.dump()
    ws.rebuild()
    assert ws.dump() == before
    merged = ws.profile("ann@example.com")
    assert merged is not None and merged.attributes["plan"] == "pro"


@pytest.mark.parametrize(("primary", "secondary", "reason", "error", "field"), [
    ("ann", "nobody", "dup", UnknownPerson, "secondary"),
    ("nobody", "ann", "dup", UnknownPerson, "primary"),
    ("ann", "ann", "dup", InvalidCommand, "secondary"),
    ("ann", "cio_unknown", "dup", UnknownPerson, "secondary"),
    ("ann", "ann@example.com", "  ", InvalidCommand, "reason"),
    ("ann", "", "dup", InvalidCommand, "secondary"),
])
def test_merge_refuses_bad_input_and_records_nothing(
    ws: Workspace, primary: str, secondary: str, reason: str, error: type[Exception],
    field: str,
) -> None:
    two_people(ws)
    before = ws.dump()
    with pytest.raises(error, match=field):
        ws.merge_persons(primary, secondary, reason=reason)
    assert ws.dump() == before


def test_an_anonymous_person_cannot_be_merged_explicitly(ws: Workspace) -> None:
    ws.identify("phone", "ann", timestamp=at(1))
    ws.set_profile_attributes("tablet", {"x": 1}, timestamp=at(2))
    anonymous = ws.profile_of_device("tablet")
    assert anonymous is not None
    with pytest.raises(UnknownPerson, match="anonymous"):
        ws.merge_persons("ann", anonymous.person_id, reason="dup")


def test_the_decisions_stream_is_no_device(ws: Workspace) -> None:
    with pytest.raises(InvalidCommand, match="device_id"):
        ws.identify("workspace:decisions", "ann")
    report = ws.ingest([{"type": "identify", "userId": "ann",
                         "anonymousId": "workspace:decisions"}])
    assert report.accepted == 0 and len(report.rejected) == 1


def test_unmerge_restores_both_sides_and_later_traffic_goes_to_its_own_side(
        ws: Workspace) -> None:
    two_people(ws)
    alone = {k: ws.profile(k) for k in ("ann", "ann@example.com")}
    merge_id = ws.merge_persons("ann", "ann@example.com", reason="dup")
    ws.set_profile_attributes("laptop", {"age": 41}, timestamp=at(10))
    ws.set_profile_attributes("phone", {"city": "Bergen"}, timestamp=at(11))
    ws.unmerge(merge_id, reason="two people after all")

    ann, other = ws.profile("ann"), ws.profile("ann@example.com")
    assert ann is not None and other is not None and alone["ann"] is not None
    assert ann.person_id == alone["ann"].person_id != other.person_id
    assert ann.attributes == {"plan": "pro", "city": "Bergen"}
    assert other.attributes == {"plan": "free", "age": 41}
    assert [d.device_id for d in ann.devices] == ["phone"]
    assert [d.device_id for d in other.devices] == ["laptop"]
    for side in ("ann", "ann@example.com"):
        [record] = [m for m in ws.merges(side) if m.merge_id == merge_id]
        assert (record.kind, record.reason) == ("unmerged", "two people after all")


def test_a_later_merge_goes_to_the_side_of_the_identifier_it_was_given(
        make_ws: WorkspaceFactory, clock: FrozenClock) -> None:
    """Merge B named bob while bob was merged into ann (A); once A is undone, B joins cy to
    bob, as in a log where A was never recorded (it used to join cy to ann, whom B never
    named), before and after a rebuild."""
    def feed(ws: Workspace, first: bool) -> str | None:
        ws.identify("tablet", "bob", {"from_bob": 1})
        ws.identify("laptop", "cy", {"from_cy": 1})
        ws.identify("phone", "ann")
        a = ws.merge_persons("ann", "bob", reason="A") if first else None
        ws.merge_persons("bob", "cy", reason="B")
        return a

    ws = make_ws()
    a = feed(ws, first=True)
    assert a is not None
    ws.unmerge(a, reason="undo A")
    never = idstitch.open("memory:", clock=clock)
    feed(never, first=False)

    def sides(w: Workspace) -> list[tuple[str, dict[str, str], dict[str, Any], list[str]]]:
        found = [w.profile(u) for u in ("ann", "bob", "cy")]
        return [(p.person_id, p.identifiers, p.attributes, sorted(d.device_id for d in p.devices))
                for p in found if p is not None]

    expected = sides(never)
    assert expected[1] == expected[2] and expected[1][1] == {"id": "bob"}
    assert sides(ws) == expected
    ws.rebuild()
    assert sides(ws) == expected


@pytest.mark.parametrize("side", ["primary", "secondary"])
def test_a_merge_named_by_a_merged_sessions_id_never_joins_an_anonymous_person(
        ws: Workspace, side: str) -> None:
    """cio_<the session's person> finds ann (the session was merged into her): the explicit
    merge joins ann, and still does once the session's merge is undone (it joined the
    session's anonymous person, an anonymous carl, when it recorded what the id named)."""
    ws.set_profile_attributes("d1", {"anon_attr": 1})
    session = ws.profile_of_device("d1")
    assert session is not None
    ws.identify("d2", "ann", {"ann_attr": 1})
    ws.identify("d1", "ann")
    [automatic] = [m for m in ws.merges("ann") if m.kind == "merged"]
    ws.identify("d3", "carl", {"carl_attr": 1})
    named = f"cio_{session.person_id}"
    pair = ("carl", named) if side == "secondary" else (named, "carl")
    ws.merge_persons(*pair, reason="ann is carl")
    ws.unmerge(automatic.merge_id, reason="a shared tablet")
    for _ in range(2):
        carl = ws.profile("carl")
        assert carl is not None and carl.identified
        assert carl == ws.profile("ann")
        assert carl.attributes == {"ann_attr": 1, "carl_attr": 1}
        ws.rebuild()


@pytest.mark.parametrize("which", ["unknown", "converted", "undone"])
def test_unmerge_refuses_what_is_no_standing_merge(ws: Workspace, which: str) -> None:
    two_people(ws)
    merge_id = ws.merge_persons("ann", "ann@example.com", reason="dup")
    ws.unmerge(merge_id, reason="wrong")
    ids = {"unknown": "no-such-merge-id",
           "converted": next(m.merge_id for m in ws.merges("ann") if m.kind == "converted"),
           "undone": merge_id}
    before = ws.dump()
    with pytest.raises(InvalidCommand, match="merge_id"):
        ws.unmerge(ids[which], reason="again")
    with pytest.raises(InvalidCommand, match="reason"):
        ws.unmerge(merge_id, reason="")
    assert ws.dump() == before


def test_an_undone_merge_stays_undone_for_another_process(
        make_durable_ws: WorkspaceFactory, tmp_path: object) -> None:
    ws = make_durable_ws()
    two_people(ws)
    merge_id = ws.merge_persons("ann", "ann@example.com", reason="dup")
    other = make_durable_ws(ws.url)
    ws.unmerge(merge_id, reason="wrong")
    a, b = other.profile("ann"), other.profile("ann@example.com")
    assert a is not None and b is not None and a.person_id != b.person_id
    other.rebuild()
    a, b = ws.profile("ann"), ws.profile("ann@example.com")
    assert a is not None and b is not None and a.person_id != b.person_id


def test_two_writers_deciding_on_one_stream_both_land_in_order(
        make_durable_ws: WorkspaceFactory) -> None:
    """The decisions stream is one aggregate that two processes write to: the one whose cached
    stream is stale conflicts, reloads it and decides again (the devices' commit path)."""
    first = make_durable_ws()
    two_people(first)
    first.identify("tablet", "bo", timestamp=at(4))
    first.identify("watch", "bo@example.com", timestamp=at(5))
    second = make_durable_ws(first.url)
    one = first.merge_persons("ann", "ann@example.com", reason="dup")  # first caches the stream
    two = second.merge_persons("bo", "bo@example.com", reason="dup")
    first.unmerge(two, reason="wrong")  # on a stream second moved: a conflict, then a retry
    decisions = [(type(ev).__name__, ev.merge_id)  # type: ignore[attr-defined]
                 for _, ev in first.log.read(0, 100) if ev.device_id == "workspace:decisions"]
    assert decisions == [("PersonsMerged", one), ("PersonsMerged", two), ("MergeUndone", two)]
    # The second writer's stream is stale now: its refusal to undo twice holds all the same.
    with pytest.raises(InvalidCommand) as e:
        second.unmerge(two, reason="again")
    assert e.value.field == "merge_id"
    a, b = second.profile("bo"), second.profile("bo@example.com")
    assert a is not None and b is not None and a.person_id != b.person_id


def test_history_as_of_and_explain_follow_an_explicit_merge(ws: Workspace) -> None:
    two_people(ws)
    secondary = ws.profile("ann@example.com")
    assert secondary is not None
    merge_id = ws.merge_persons("ann", "ann@example.com", reason="dup")
    [record] = [m for m in ws.merges("ann") if m.merge_id == merge_id]
    ws.set_profile_attributes("laptop", {"age": 41}, timestamp=at(10))

    history = ws.history("ann")
    assert [c.device_id for c in history] == ["phone", "laptop", "laptop", "workspace:decisions",
                                              "laptop"]
    decision = history[3]
    assert (decision.event, decision.position) == ("PersonsMerged", record.position)
    assert decision.data["reason"] == "dup"
    assert [(k, new) for k, _, new in decision.changes] == [("age", 40)]  # plan: primary's
    before = ws.profile_as_of("ann", record.position - 1)
    merged = ws.profile_as_of("ann", record.position)
    assert before is not None and merged is not None
    assert before.attributes == {"plan": "pro", "city": "Oslo"}
    assert merged.attributes == {"plan": "pro", "city": "Oslo", "age": 40}
    then = ws.profile_as_of("ann@example.com", record.position - 1)
    assert then is not None and then.person_id == secondary.person_id
    explained = ws.explain("ann", "age")
    assert explained is not None and explained.value == 41
    assert [c.position for c in explained.overridden] == [history[1].position]


def test_as_of_the_head_after_an_explicit_merge_is_the_profile(
        make_ws: WorkspaceFactory) -> None:
    """The merge stamps the primary's updated_at with the decision's time (the workspace's
    clock: 09:00), in the rows and in the audit's as-of alike (the as-of once took the newest
    identify or attribute call only)."""
    ws = make_ws()
    ws.identify("phone", "ann", {"plan": "pro"}, timestamp=at(-600))
    ws.identify("laptop", "bob", {"age": 40}, timestamp=at(-540))
    ws.merge_persons("ann", "bob", reason="one customer")
    live = ws.profile("ann")
    assert live is not None and live.updated_at == at(0)
    assert ws.profile_as_of("ann", ws.log.head()) == live
    assert ws.profile_as_of("ann", ws.log.head() - 1) != live


def test_the_same_merges_get_the_same_ids_on_every_store(
        durable_url_factory: Callable[[], str], clock: FrozenClock) -> None:
    """A merge id is named by the decision that causes it (no random number): the same calls
    give the same ids, the same merges and the same rows on every store, after a rebuild too."""
    with idstitch.open("memory:", clock=clock) as memory, \
            idstitch.open(durable_url_factory(), clock=clock) as other:
        same_calls_same_merges(memory, other)


def same_calls_same_merges(memory: Workspace, other: Workspace) -> None:
    ids = []
    for ws in (memory, other):
        two_people(ws)
        ws.identify("tablet", "bo", {"plan": "team"}, timestamp=at(4))
        first = ws.merge_persons("ann", "ann@example.com", reason="two signups")
        second = ws.merge_persons("ann", "bo", reason="one household")
        ws.unmerge(first, reason="not the same after all")
        ids.append((first, second))
    assert ids[0] == ids[1] and ids[0][0] != ids[0][1]
    assert other.merges("ann") == memory.merges("ann")
    assert other.dump() == memory.dump()
    other.rebuild()
    assert other.dump() == memory.dump()


def test_as_of_before_an_undo_finds_an_email_the_merged_person_held_then(
        make_ws: WorkspaceFactory, clock: FrozenClock) -> None:
    """Without the merge, the email finds nobody at that position (its holder replaced it);
    with it, as the log stood then, it found the merged person: a replay of the prefix."""
    def feed(ws: Workspace, undo: bool) -> int:
        ws.identify("laptop", "u1")
        ws.identify("phone", "u2", {"email": "b@x.com"})
        merge_id = ws.merge_persons("u1", "u2", reason="one customer")
        position = ws.set_profile_attributes("phone", {"email": "c@x.com"})
        if undo:
            ws.unmerge(merge_id, reason="two customers after all")
        assert position is not None
        return position

    ws = make_ws()
    position = feed(ws, undo=True)
    prefix = idstitch.open("memory:", clock=clock)
    feed(prefix, undo=False)
    then = prefix.profile("b@x.com")
    assert then is not None and then.identifiers == {"id": "u1", "email": "c@x.com"}
    assert ws.profile_as_of("b@x.com", position) == prefix.profile_as_of("b@x.com", position)
    answer = ws.profile_as_of("b@x.com", position)
    assert answer is not None and answer.identifiers == then.identifiers


def test_as_of_before_an_undo_finds_a_person_only_the_merge_let_exist(ws: Workspace) -> None:
    """carl's device identified by an email the merged person had let go, minting a person
    that a log without the merge never has: as-of by its person id (or cio_) then is a
    replay too, not None."""
    ws.identify("d1", "ann", {"email": "a@e.com"})
    ws.identify("d2", "bob", {"b": 1})
    ws.identify("d3", "carl", {"c": 1})
    merge_id = ws.merge_persons("ann", "bob", reason="wrong")
    ws.identify("d2", "bob", {"email": "y@e.com"})  # the merged person's email now
    position = ws.identify("d3", "a@e.com")          # free then: a new person
    minted = ws.profile_of_device("d3")
    assert position is not None and minted is not None
    asked = [minted.person_id, f"cio_{minted.person_id}", "a@e.com"]
    then = {i: ws.profile_as_of(i, position) for i in asked}
    assert all(p is not None and p.person_id == minted.person_id for p in then.values())
    ws.unmerge(merge_id, reason="undo")
    assert {i: ws.profile_as_of(i, position) for i in asked} == then


def test_a_later_merge_named_by_an_email_stays_with_the_person_it_found(ws: Workspace) -> None:
    """While ann and bob were merged they shared their emails; which of them x@ was claimed
    for is not kept, so a merge named by x@ joins the person x@ found (ann), not the member
    whose row first held it (bob)."""
    ws.identify("da", "ann")
    ws.identify("db", "bob", {"email": "x@e.com"})
    ws.identify("dc", "cy")
    merge_id = ws.merge_persons("ann", "bob", reason="wrong")
    ws.set_profile_attributes("db", {"email": "y@e.com"})
    ws.set_profile_attributes("da", {"email": "x@e.com"})
    ws.merge_persons("x@e.com", "cy", reason="x is cy")
    ws.unmerge(merge_id, reason="undo")
    for _ in range(2):
        ann, cy = ws.profile("ann"), ws.profile("cy")
        assert ann is not None and cy is not None and cy.person_id == ann.person_id
        ws.rebuild()


def test_as_of_before_an_undo_shows_the_merge_it_undid(make_ws: WorkspaceFactory,
                                                         clock: FrozenClock) -> None:
    """The log up to a position between a merge and its undo holds the merge: as-of there is
    what a workspace fed that prefix gives, before and after the undo (the rows after the
    undo are those of a log without the merge, at every position)."""
    def feed(ws: Workspace) -> tuple[int, int]:
        ws.identify("phone", "ann", {"plan": "pro"}, timestamp=at(1))
        ws.set_profile_attributes("tablet", {"theme": "dark"}, timestamp=at(2))
        automatic = ws.identify("tablet", "ann", timestamp=at(3))  # the tablet's person merged
        ws.identify("laptop", "bob", {"age": 40}, timestamp=at(4))
        ws.merge_persons("ann", "bob", reason="one customer")
        explicit = ws.log.head()
        assert automatic is not None
        return automatic, explicit

    ws = make_ws()
    automatic, explicit = feed(ws)
    reference = idstitch.open("memory:", clock=clock)
    feed(reference)
    asked = [(i, p) for p in (automatic, explicit) for i in ("ann", "bob")]
    then = {(i, p): ws.profile_as_of(i, p) for i, p in asked}
    merged = then["ann", automatic]
    assert merged is not None and merged.attributes == {"plan": "pro", "theme": "dark"}
    for merge in [m for m in ws.merges("ann") if m.kind in ("merged", "explicit")]:
        ws.unmerge(merge.merge_id, reason="wrong merge")
    for i, p in asked:
        assert ws.profile_as_of(i, p) == then[i, p] == reference.profile_as_of(i, p), (i, p)
    # At the head, the undos hold: the two sides apart, as the rows have them.
    ann = ws.profile("ann")
    assert ann is not None and ann.attributes == {"plan": "pro"}
    assert ws.profile_as_of("ann", ws.log.head()) == ann
