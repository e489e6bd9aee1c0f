"""api.md "Audit: history, as-of, explain", rule by rule, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import idstitch
from idstitch.errors import InvalidCommand
from idstitch.testing import FrozenClock
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stitched(ws: Workspace) -> dict[str, int]:
    """An anonymous tablet merged into Dana, her phone, a late write, then the phone handed to
    Sam. The positions of each step, by name."""
    p = {}
    p["tablet_anon"] = ws.set_profile_attributes("tablet", {"theme": "dark", "plan": "free"},
                                                 timestamp=at(1), message_id="m1") or 0
    p["phone_identify"] = ws.identify("phone", "dana", {"first_name": "Dana",
                                                         "email": "dana@example.com"},
                                      timestamp=at(2), message_id="m2") or 0
    p["token"] = ws.register_device_token("phone", "apns-1", platform="ios", timestamp=at(3)) or 0
    p["tablet_merge"] = ws.identify("tablet", "dana@example.com", {"plan": "pro"},
                                    timestamp=at(4), message_id="m4") or 0
    p["late"] = ws.set_profile_attributes("tablet", {"first_name": "Old"}, timestamp=at(0),
                                          message_id="m5") or 0
    p["sam"] = ws.identify("phone", "sam", {"first_name": "Sam"}, timestamp=at(6)) or 0
    p["phone_as_sam"] = ws.set_profile_attributes("phone", {"plan": "team"}, timestamp=at(7)) or 0
    return p


def test_history_follows_conversions_and_merges_not_other_persons(ws: Workspace) -> None:
    p = stitched(ws)
    history = ws.history("dana")
    assert [c.position for c in history] == [p["tablet_anon"], p["phone_identify"], p["token"],
                                             p["tablet_merge"], p["late"]]
    dana = ws.profile("dana")
    assert dana is not None
    # The anonymous tablet's own event applied to its anonymous person, before the merge.
    first = history[0]
    assert first.event == "ProfileAttributesChanged" and first.device_id == "tablet"
    assert first.person_id != dana.person_id
    assert first.changes == [("theme", None, "dark"), ("plan", None, "free")]
    assert first.data == {"set": {"theme": "dark", "plan": "free"}, "set_once": {}, "unset": []}
    # The merge: a change of the target, carrying the anonymous person's attributes over.
    merge = history[3]
    assert merge.person_id == dana.person_id
    assert [m.kind for m in merge.merges] == ["merged"]
    assert merge.changes == [("theme", None, "dark"), ("plan", None, "pro")]
    # The token's own fields, and no attribute change.
    assert history[2].data == {"token": "apns-1", "platform": "ios"} and history[2].changes == []
    # The late write lost (older client time): recorded, changing nothing.
    assert history[4].changes == []
    # What the phone did after it went to Sam is Sam's.
    assert [c.position for c in ws.history("sam")] == [p["sam"], p["phone_as_sam"]]
    assert ws.history("nobody") == []


def test_a_change_carries_both_clocks_and_the_message_id(
    make_ws: WorkspaceFactory, clock: FrozenClock
) -> None:
    ws = make_ws()
    clock.advance(minutes=5)
    ws.identify("phone", "dana", {"a": 1}, timestamp=at(0), message_id="msg-1")
    [change] = ws.history("dana")
    assert (change.timestamp, change.recorded_at, change.message_id) == (at(0), clock.now, "msg-1")
    assert change.event == "Identified" and change.data == {"user_id": "dana", "traits": {"a": 1}}


def test_a_refused_email_shows_in_the_history(ws: Workspace) -> None:
    ws.identify("d1", "u1", {"email": "x@example.com"}, timestamp=at(1))
    position = ws.identify("d2", "u2", {"email": "x@example.com"}, timestamp=at(2))
    [*_, change] = ws.history("u2")
    assert change.position == position
    u1 = ws.profile("u1")
    assert u1 is not None
    assert [(r.kind, r.value, r.held_by) for r in change.refused] == [
        ("email", "x@example.com", u1.person_id)]


def test_explain_names_the_winner_and_what_lost(ws: Workspace) -> None:
    p = stitched(ws)
    name = ws.explain("dana", "first_name")
    assert name is not None
    assert (name.value, name.position, name.device_id, name.event, name.message_id) == (
        "Dana", p["phone_identify"], "phone", "Identified", "m2")
    assert name.timestamp == at(2)
    # The late arrival with an older client time lost, though it came later in the log.
    assert [c.position for c in name.overridden] == [p["late"]]
    plan = ws.explain("dana", "plan")
    assert plan is not None and (plan.value, plan.position) == ("pro", p["tablet_merge"])
    # The anonymous tablet's value, merged in, lost to the newer one.
    assert [c.position for c in plan.overridden] == [p["tablet_anon"]]
    theme = ws.explain("dana", "theme")
    assert theme is not None and (theme.position, theme.device_id) == (p["tablet_anon"], "tablet")
    assert ws.explain("dana", "nothing") is None
    assert ws.explain("nobody", "plan") is None


def test_explain_of_a_set_once_value_and_after_a_removal(ws: Workspace) -> None:
    first = ws.set_profile_attributes("d", set_once={"source": "ad"}, timestamp=at(1))
    ws.set_profile_attributes("d", set_once={"source": "organic"}, timestamp=at(2))
    ws.identify("d", "u")
    source = ws.explain("u", "source")
    assert source is not None and (source.value, source.position) == ("ad", first)
    assert len(source.overridden) == 1
    ws.set_profile_attributes("d", unset=["source"], timestamp=at(3))
    assert ws.explain("u", "source") is None


def test_as_of_resolves_identifiers_as_they_were(ws: Workspace) -> None:
    p = stitched(ws)
    # Before the email was claimed it named nobody; before the id existed, neither.
    assert ws.profile_as_of("dana@example.com", p["phone_identify"] - 1) is None
    assert ws.profile_as_of("dana", p["tablet_anon"]) is None
    before_merge = ws.profile_as_of("dana", p["token"])
    assert before_merge is not None
    assert before_merge.attributes == {"first_name": "Dana", "email": "dana@example.com"}
    assert [d.device_id for d in before_merge.devices] == ["phone"]
    assert before_merge.devices[0].token == "apns-1"
    # The anonymous tablet was a person of its own until the merge.
    tablet = ws.profile_as_of("tablet", p["token"])
    assert tablet is None  # not an identifier
    anonymous = ws.profile_as_of(ws.history("dana")[0].person_id, p["token"])
    assert anonymous is not None and anonymous.attributes == {"theme": "dark", "plan": "free"}
    after = ws.profile_as_of("dana", p["late"])
    assert after is not None
    assert sorted(d.device_id for d in after.devices) == ["phone", "tablet"]
    # Now the phone is Sam's: the profile as of now says so, as of then it was Dana's.
    now = ws.profile("dana")
    assert now is not None and [d.device_id for d in now.devices] == ["tablet"]
    assert ws.profile_as_of("dana", ws.log.head()) == now


def test_as_of_a_moment_of_recorded_time(
    make_ws: WorkspaceFactory, clock: FrozenClock
) -> None:
    ws = make_ws()
    ws.identify("d", "u", {"v": 1})
    noon = clock.advance(hours=3)
    ws.set_profile_attributes("d", {"v": 2}, timestamp=noon)
    assert ws.profile_as_of("u", noon - timedelta(seconds=1)).attributes == {"v": 1}  # type: ignore[union-attr]
    assert ws.profile_as_of("u", noon).attributes == {"v": 2}  # type: ignore[union-attr]
    # Another timezone names the same moment.
    other = noon.astimezone(ZoneInfo("America/New_York"))
    assert ws.profile_as_of("u", other).attributes == {"v": 2}  # type: ignore[union-attr]
    assert ws.profile_as_of("u", T0 - timedelta(days=1)) is None


@pytest.mark.parametrize("bad", [-1, datetime(2026, 1, 1), True, "3", 1.5, None])
def test_as_of_refuses_what_is_not_a_position_or_an_aware_time(
    ws: Workspace, bad: object
) -> None:
    ws.identify("d", "u")
    with pytest.raises(InvalidCommand) as caught:
        ws.profile_as_of("u", bad)  # type: ignore[arg-type]
    assert caught.value.field == "at"


def test_the_audit_answers_survive_a_rebuild(ws: Workspace) -> None:
    stitched(ws)
    before = (ws.history("dana"), ws.explain("dana", "plan"), ws.profile_as_of("dana", 4))
    ws.rebuild()
    assert (ws.history("dana"), ws.explain("dana", "plan"), ws.profile_as_of("dana", 4)) == before


def test_every_store_gives_the_same_answers(make_ws: WorkspaceFactory) -> None:
    answers = []
    for url in ("memory:", None):
        ws = make_ws(url)
        stitched(ws)
        answers.append((ws.history("dana"), ws.explain("dana", "first_name"),
                        ws.profile_as_of("dana@example.com", 5)))
    assert answers[0] == answers[1]


def test_the_audit_types_are_public() -> None:
    assert {"Change", "Provenance"} <= set(idstitch.__all__)
    fields = set(idstitch.Change.__struct_fields__)
    assert {"position", "recorded_at", "timestamp", "device_id", "message_id", "event", "data",
            "person_id", "changes", "merges"} <= fields
    assert {"attribute", "value", "position", "device_id", "timestamp", "recorded_at", "event",
            "message_id", "overridden"} <= set(idstitch.Provenance.__struct_fields__)
