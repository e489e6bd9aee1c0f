"""identity-model.md §3: the rules of stitching, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from idstitch.errors import InvalidCommand, UnknownPerson
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_rule1_conversion_keeps_person_id_and_attributes(ws: Workspace) -> None:
    ws.set_profile_attributes("d1", {"plan": "trial"}, timestamp=at(1))
    anonymous = ws.profile_of_device("d1")
    assert anonymous is not None
    pos = ws.identify("d1", "u1", {"first_name": "Dana"}, timestamp=at(2))
    person = ws.profile("u1")
    assert person is not None and person.identified
    assert person.person_id == anonymous.person_id
    assert person.attributes == {"plan": "trial", "first_name": "Dana"}
    [merge] = ws.merges("u1")
    assert (merge.kind, merge.source, merge.target, merge.position) == (
        "converted", anonymous.anonymous_ids[0], person.person_id, pos)


def test_rule2_merge_anonymous_into_existing_person(ws: Workspace) -> None:
    ws.identify("phone", "u1", {"first_name": "Dana", "plan": "free"}, timestamp=at(1))
    ws.set_profile_attributes("tablet", {"plan": "pro", "theme": "dark"}, timestamp=at(2))
    anonymous = ws.profile_of_device("tablet")
    assert anonymous is not None
    pos = ws.identify("tablet", "u1", timestamp=at(3))
    person = ws.profile("u1")
    assert person is not None
    assert person.attributes == {"first_name": "Dana", "plan": "pro", "theme": "dark"}
    assert anonymous.anonymous_ids[0] in person.anonymous_ids
    assert sorted(d.device_id for d in person.devices) == ["phone", "tablet"]
    # The retired anonymous person and its anonymous id now resolve to the survivor.
    assert ws.profile(anonymous.person_id).person_id == person.person_id  # type: ignore[union-attr]
    assert ws.profile(anonymous.anonymous_ids[0]).person_id == person.person_id  # type: ignore[union-attr]
    merged = [m for m in ws.merges("u1") if m.kind == "merged"]
    assert [(m.source, m.target, m.position) for m in merged] == [
        (anonymous.person_id, person.person_id, pos)]


def test_rule2_merge_newer_timestamp_wins_and_ties_go_to_the_identified(ws: Workspace) -> None:
    ws.set_profile_attributes("tablet", {"old": "anon", "tie": "anon"}, timestamp=at(1))
    ws.identify("phone", "u1", {"old": "known", "tie": "known"}, timestamp=at(1))
    ws.set_profile_attributes("phone", {"old": "known-newer"}, timestamp=at(5))
    ws.set_profile_attributes("tablet", {"new": "anon"}, timestamp=at(6))
    ws.identify("tablet", "u1", timestamp=at(7))
    assert ws.profile("u1").attributes == {  # type: ignore[union-attr]
        "old": "known-newer", "tie": "known", "new": "anon"}


MERGE_TIES = {
    # case: (the survivor's call, the anonymous person's call, at one client time; the survivor's
    # attributes after the merge). Each is run with either call logged first: the log order of
    # two persons' events must not decide a tie (attributes-and-time.md, "Merging ...").
    "survivor-removes-anonymous-set-once": (
        {"traits": {"b": None}}, {"set_once": {"b": 8}}, {}),
    "survivor-set-once-anonymous-removes": (
        {"set_once": {"b": 1}}, {"traits": {"b": None}}, {"b": 1}),
    "both-set-once": ({"set_once": {"b": 1}}, {"set_once": {"b": 8}}, {"b": 1}),
    "both-plain": ({"traits": {"b": 1}}, {"traits": {"b": 8}}, {"b": 1}),
    # A set_once never displaces a plain value, whoever wrote it: not a tie the survivor wins.
    "survivor-set-once-anonymous-value": (
        {"set_once": {"b": 1}}, {"traits": {"b": 8}}, {"b": 8}),
}


@pytest.mark.parametrize("anonymous_first", [True, False],
                         ids=["anonymous-logged-first", "survivor-logged-first"])
@pytest.mark.parametrize("case", list(MERGE_TIES))
def test_rule2_merge_ties_go_to_the_survivor_whatever_the_writes_and_their_log_order(
    ws: Workspace, case: str, anonymous_first: bool
) -> None:
    survivor_call, anonymous_call, expected = MERGE_TIES[case]
    ws.identify("phone", "u1", timestamp=at(0))
    calls = [("tablet", anonymous_call), ("phone", survivor_call)]
    written = {device: ws.set_profile_attributes(device, timestamp=at(3), **call)
               for device, call in (calls if anonymous_first else calls[::-1])}
    before = ws.log.head()
    ws.identify("tablet", "u1", timestamp=at(10))
    assert ws.profile("u1").attributes == expected  # type: ignore[union-attr]
    # The audit refolds the same rule: as-of, history and explain agree with the profile.
    assert ws.profile_as_of("u1", at=ws.log.head()).attributes == expected  # type: ignore[union-attr]
    survivor_alone = {} if survivor_call == {"traits": {"b": None}} else {"b": 1}
    assert ws.profile_as_of("u1", at=before).attributes == survivor_alone  # type: ignore[union-attr]
    person_id = ws.profile("u1").person_id  # type: ignore[union-attr]
    shown: dict[str, object] = {}
    for change in ws.history("u1"):
        if change.person_id != person_id:
            continue  # the anonymous person's own changes, before it was merged
        for key, _, new in change.changes:
            if new is None:
                shown.pop(key, None)
            else:
                shown[key] = new
    assert shown == expected
    explained = ws.explain("u1", "b")
    if not expected:
        assert explained is None
    else:
        assert explained is not None and explained.value == expected["b"]
        winner = "tablet" if case == "survivor-set-once-anonymous-value" else "phone"
        assert (explained.device_id, explained.position) == (winner, written[winner])
    rows = ws.dump()
    ws.rebuild()
    assert ws.dump() == rows
    assert ws.profile("u1").attributes == expected  # type: ignore[union-attr]


def test_rule2_switch_policy_leaves_an_orphan(make_ws: WorkspaceFactory) -> None:
    ws = make_ws(anonymous_merge="switch")
    ws.identify("phone", "u1", {"first_name": "Lee"})
    ws.set_profile_attributes("tablet", {"theme": "dark"})
    orphan = ws.profile_of_device("tablet")
    assert orphan is not None
    ws.identify("tablet", "u1")
    person = ws.profile("u1")
    assert person is not None
    assert person.attributes == {"first_name": "Lee"}
    assert sorted(d.device_id for d in person.devices) == ["phone", "tablet"]
    left = ws.profile(orphan.person_id)
    assert left is not None and left.person_id == orphan.person_id
    assert left.attributes == {"theme": "dark"} and left.devices == []
    assert [m.kind for m in ws.merges("u1")] == ["converted", "switched"]


def test_rule3_identified_persons_are_never_merged_implicitly(ws: Workspace) -> None:
    ws.identify("d1", "q", {"first_name": "Quinn"})
    ws.register_device_token("d1", "tok")
    ws.identify("d2", "p", {"first_name": "Pat"})
    ws.identify("d1", "p")
    q, p = ws.profile("q"), ws.profile("p")
    assert q is not None and p is not None and q.person_id != p.person_id
    assert q.attributes == {"first_name": "Quinn"} and q.devices == []
    assert sorted(d.device_id for d in p.devices) == ["d1", "d2"]
    assert [d.token for d in p.devices if d.device_id == "d1"] == ["tok"]
    assert p.attributes == {"first_name": "Pat"}
    assert "switched" in [m.kind for m in ws.merges("q")]


def test_rule3_unknown_user_id_on_an_identified_device_makes_a_new_person(ws: Workspace) -> None:
    ws.identify("d1", "q", {"first_name": "Quinn"})
    ws.identify("d1", "new-user", {"first_name": "Nia"})
    q, n = ws.profile("q"), ws.profile("new-user")
    assert q is not None and n is not None and q.person_id != n.person_id
    assert n.identified and n.attributes == {"first_name": "Nia"}
    assert [d.device_id for d in n.devices] == ["d1"] and q.devices == []


def test_rule4_same_person_updates_traits_and_last_used(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"a": 1}, timestamp=at(1))
    ws.identify("d1", "u1", {"b": 2}, timestamp=at(2))
    person = ws.profile("u1")
    assert person is not None and person.attributes == {"a": 1, "b": 2}
    assert person.devices[0].last_used == at(2)
    assert [m.kind for m in ws.merges("u1")] == ["converted"]


def test_email_identifier_is_case_insensitive(ws: Workspace) -> None:
    ws.identify("d1", "Dana@Example.com", {"first_name": "Dana"})
    ws.identify("d2", "dana@EXAMPLE.com")
    person = ws.profile("DANA@example.COM")
    assert person is not None
    assert person.identifiers == {"email": "dana@example.com"}
    assert sorted(d.device_id for d in person.devices) == ["d1", "d2"]


def test_identify_by_person_id(ws: Workspace) -> None:
    ws.identify("d1", "u1")
    person_id = ws.profile("u1").person_id  # type: ignore[union-attr]
    ws.identify("d2", f"cio_{person_id}")
    person = ws.profile(f"cio_{person_id}")
    assert person is not None and person.person_id == person_id
    assert sorted(d.device_id for d in person.devices) == ["d1", "d2"]
    assert ws.profile(person_id).person_id == person_id  # type: ignore[union-attr]


def test_unknown_or_retired_person_id_is_rejected(ws: Workspace) -> None:
    head = ws.log.head()
    with pytest.raises(UnknownPerson, match="user_id"):
        ws.identify("d1", "cio_not-a-person")
    ws.set_profile_attributes("tablet", {"x": 1})
    retired = ws.profile_of_device("tablet").person_id  # type: ignore[union-attr]
    ws.identify("phone", "u1")
    ws.identify("tablet", "u1")
    head = ws.log.head()
    with pytest.raises(UnknownPerson, match="merged into"):
        ws.identify("d3", f"cio_{retired}")
    assert ws.log.head() == head


@pytest.mark.parametrize(
    "bad", ["", "   ", "null", "NULL", "undefined", "anonymous", "0", "-1", "None", "NaN",
            "[object Object]"])
def test_blank_and_placeholder_ids_are_rejected(ws: Workspace, bad: str) -> None:
    with pytest.raises(InvalidCommand, match="user_id"):
        ws.identify("d1", bad)
    with pytest.raises(InvalidCommand, match="device_id"):
        ws.identify(bad, "u1")
    assert ws.log.head() == 0


def test_traits_email_becomes_an_identifier(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"email": "Dana@Example.com"})
    person = ws.profile("dana@example.com")
    assert person is not None
    assert person.identifiers == {"id": "u1", "email": "dana@example.com"}
    assert person.attributes == {"email": "Dana@Example.com"}


def test_traits_email_held_by_another_person_is_not_merged(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"email": "shared@example.com"})
    ws.identify("d2", "u2", {"email": "shared@example.com"})
    u1, u2 = ws.profile("u1"), ws.profile("u2")
    assert u1 is not None and u2 is not None and u1.person_id != u2.person_id
    assert ws.profile("shared@example.com").person_id == u1.person_id  # type: ignore[union-attr]
    assert u2.identifiers == {"id": "u2"}
    assert u2.attributes == {"email": "shared@example.com"}
    refused = [r for c in ws.history("u2") for r in c.refused]
    assert [(r.kind, r.value, r.held_by) for r in refused] == [
        ("email", "shared@example.com", u1.person_id)]


def test_an_email_given_while_anonymous_becomes_an_identifier_on_conversion(ws: Workspace) -> None:
    ws.set_profile_attributes("d1", {"email": "Early@Example.com"})
    ws.identify("d1", "u1")
    person = ws.profile("early@example.com")
    assert person is not None and person.identifiers == {"id": "u1", "email": "early@example.com"}


def test_the_email_identifier_follows_the_winning_attribute(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"email": "new@example.com"}, timestamp=at(10))
    ws.set_profile_attributes("d1", {"email": "old@example.com"}, timestamp=at(5))
    person = ws.profile("u1")
    assert person is not None
    assert person.attributes["email"] == "new@example.com"
    assert person.identifiers["email"] == "new@example.com"
    assert ws.profile("old@example.com") is None


def test_only_a_winning_email_write_claims_the_identifier(ws: Workspace) -> None:
    """A late removal of `email` lost, and a set_once value is an attribute only: the late
    event claimed that value all the same, and the person's identifier moved to it."""
    ws.identify("phone", "u2", {"email": "a@x.com"}, timestamp=at(2))
    ws.set_profile_attributes("phone", unset=["email"], timestamp=at(3))  # the identifier stays
    ws.set_profile_attributes("phone", set_once={"email": "b@x.com"}, timestamp=at(4))
    ws.set_profile_attributes("phone", {"email": None}, timestamp=at(1))  # late: it loses
    person = ws.profile("u2")
    assert person is not None
    assert (person.identifiers, person.attributes) == ({"id": "u2", "email": "a@x.com"},
                                                       {"email": "b@x.com"})
    assert ws.profile("b@x.com") is None
    # A late write of another email loses too, and claims nothing.
    ws.set_profile_attributes("phone", {"email": "c@x.com"}, timestamp=at(0))
    assert ws.profile("c@x.com") is None
    ws.rebuild()
    again = ws.profile("a@x.com")
    assert again is not None and again.identifiers == person.identifiers
