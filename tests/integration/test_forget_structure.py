"""A forget changes values, never who is on which device (issue 15: "other persons are
untouched"): an identify that reads erased still puts its device where it went, so another
person's id, devices and merges stay exactly as they were, and what remains of the forgotten
person is nameless and answers no lookup."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from idstitch.errors import InvalidCommand, Suppressed
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


def test_a_user_who_signed_in_after_the_forgotten_one_keeps_his_person_id(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.identify("phone", "kim", {"city": "Lyon"})   # the phone's anonymous person converts
    ws.identify("phone", "bob", {"plan": "pro"})    # a switch: bob is a person of his own
    bob, bob_merges = ws.profile("bob"), ws.merges("bob")
    kim = ws.profile("kim")
    assert bob is not None and kim is not None
    ws.forget("kim", reason="ticket 313")
    assert ws.profile("bob") == bob and ws.merges("bob") == bob_merges
    assert ws.profile(bob.person_id) == bob
    assert ws.profile(kim.person_id) is None
    ws.rebuild()
    assert ws.profile("bob") == bob and ws.merges("bob") == bob_merges


def test_the_forgotten_persons_phone_is_not_handed_to_the_user_who_borrowed_it(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.identify("phone", "kim", {})
    ws.identify("phone", "bob", {"plan": "pro"})    # bob borrows it
    ws.identify("phone", "kim", {})                 # kim signs back in
    bob = ws.profile("bob")
    ws.forget("kim", reason="ticket 314")
    assert ws.profile("bob") == bob
    ws.set_profile_attributes("phone", {"theme": "dark"})
    after = ws.profile("bob")
    assert after is not None and after.attributes == {"plan": "pro"} and after.devices == []
    phone = ws.profile_of_device("phone")
    assert phone is not None and phone.identified and phone.identifiers == {}
    assert phone.attributes == {"theme": "dark"}


def test_a_later_user_of_a_merged_persons_device_inherits_nothing(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.identify("phone", "kim-55", {})
    ws.identify("laptop", "kim-work", {})
    ws.merge_persons("kim-55", "kim-work", reason="support ticket 77")
    laptop_session = ws.device("laptop")
    assert laptop_session is not None
    ws.forget("kim-55", reason="ticket 315")
    ws.identify("phone", "zed", {"plan": "new"})
    zed = ws.profile("zed")
    assert zed is not None and [d.device_id for d in zed.devices] == ["phone"]
    assert [m.kind for m in ws.merges("zed")] == ["switched"]
    # Lookups by an anonymous id of the forgotten person's sessions answer nothing, and it
    # cannot be forgotten twice through one.
    assert ws.profile(laptop_session.anonymous_id) is None
    assert ws.merges(laptop_session.anonymous_id) == []
    assert ws.history(laptop_session.anonymous_id) == []
    head = ws.log.head()
    with pytest.raises(Suppressed):
        ws.forget(laptop_session.anonymous_id, reason="again")
    assert ws.log.head() == head


def test_set_once_of_a_forgotten_email_is_refused(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.identify("phone", "kim@example.com", {})
    ws.forget("kim@example.com", reason="ticket 316")
    head = ws.log.head()
    with pytest.raises(Suppressed) as e:
        ws.set_profile_attributes("tablet", set_once={"email": "KIM@example.com"})
    assert "set_once.email" in str(e.value)
    assert ws.log.head() == head


def test_an_email_the_forgotten_person_held_stays_refused_to_others(
        make_ws: WorkspaceFactory) -> None:
    """u3 was refused kim's email while kim held it; with kim's claim read erased, the
    decision's keyed hashes of her emails keep u3's refusal as it was, in a rebuild too."""
    ws = make_ws()
    ws.identify("d1", "kim@x.io", {"city": "Lyon"})
    ws.identify("d2", "u3", {"email": "kim@x.io"})   # refused: kim holds the email
    u3 = ws.profile("u3")
    assert u3 is not None and u3.identifiers == {"id": "u3"}
    ws.forget("kim@x.io", reason="ticket 313")
    for _ in range(2):
        assert ws.profile("u3") == u3
        assert ws.profile("kim@x.io") is None and ws.history("kim@x.io") == []
        ws.rebuild()


def test_an_email_the_forgotten_person_let_go_stays_with_whoever_holds_it_now(
        make_ws: WorkspaceFactory) -> None:
    """X signed in by b@x.com and moved to a@x.com in the same identify (letting b@x.com go),
    then u1 took b@x.com: forgetting X leaves u1 its email, findable and usable (the first
    claim of one event sorted after the second by name, so b@x.com looked X's for ever: u1
    lost it, and a newcomer by it was hidden or folded into X)."""
    ws = make_ws()
    ws.identify("d1", "b@x.com", {"email": "a@x.com"})
    ws.identify("d3", "u1", {"email": "b@x.com"})
    ws.identify("d2", "c@x.com", {"email": "z@x.com"})  # the same, for a newcomer
    ws.identify("d4", "c@x.com", {"k": 1})
    u1, newcomer = ws.profile("u1"), ws.profile("c@x.com")
    assert u1 is not None and u1.identifiers == {"id": "u1", "email": "b@x.com"}
    assert newcomer is not None and [d.device_id for d in newcomer.devices] == ["d4"]
    ws.forget("a@x.com", reason="X asked")
    ws.forget("z@x.com", reason="Z asked")
    for _ in range(2):
        assert ws.profile("b@x.com") == ws.profile("u1") == u1
        assert ws.profile("c@x.com") == ws.profile(newcomer.person_id) == newcomer
        assert [c.position for c in ws.history("c@x.com")] == [4]
        ws.rebuild()
    # Their own emails are theirs to use: not suppressed.
    assert ws.set_profile_attributes("d3", {"email": "b@x.com"}) is not None
    assert ws.identify("d5", "c@x.com") is not None


def test_a_token_registered_in_a_forgotten_stint_leaves_the_platform(
        make_ws: WorkspaceFactory) -> None:
    """The token was the forgotten person's value (sealed under its stint's key): the device
    that kept it after a switch loses it, and keeps its platform, which is no personal value."""
    ws = make_ws()
    ws.identify("d1", "kim", {})
    ws.register_device_token("d1", "apns-kim", platform="ios")
    ws.identify("d1", "lee", {})                     # the token stays on the device
    ws.forget("kim", reason="ticket 317")
    device = ws.device("d1")
    assert device is not None and device.token is None and device.platform == "ios"
    lee = ws.profile("lee")
    assert lee is not None and [d.device_id for d in lee.devices] == ["d1"]


def test_the_forgotten_persons_remainder_claims_no_email(make_ws: WorkspaceFactory) -> None:
    """An email set on a device still on the nameless remainder is an attribute only: claimed,
    it made the forgotten person id answer again."""
    ws = make_ws()
    ws.identify("phone", "kim", {"city": "Lyon"})
    kim = ws.profile("kim")
    assert kim is not None
    ws.forget("kim", reason="ticket 318")
    ws.set_profile_attributes("phone", {"email": "new@example.com"})
    assert ws.profile(kim.person_id) is None and ws.profile("new@example.com") is None
    phone = ws.profile_of_device("phone")
    assert phone is not None and phone.identifiers == {}
    assert phone.attributes == {"email": "new@example.com"}


def test_a_device_that_lost_its_token_to_the_forgotten_persons_device_does_not_regain_it(
        make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.identify("d-bob", "bob", {})
    ws.register_device_token("d-bob", "tok-1", platform="ios")
    ws.identify("d-kim", "kim", {})
    ws.register_device_token("d-kim", "tok-1", platform="ios")   # a token has one owner
    bob = ws.profile("bob")
    assert bob is not None and bob.devices[0].token is None
    ws.forget("kim", reason="ticket 319")
    assert ws.profile("bob") == bob
    device = ws.device("d-bob")
    assert device is not None and device.token is None
    ws.rebuild()
    assert ws.profile("bob") == bob


def sdk_message(n: int, session: str, user: str | None = None, **traits: object) -> dict[str, object]:
    """An identify as Customer.io's SDK sends it: the session's anonymousId on every message."""
    message: dict[str, object] = {"type": "identify", "anonymousId": session, "traits": traits,
                                  "messageId": f"m{n}", "context": {"device": {"id": "ipad"}}}
    if user is not None:
        message["userId"] = user
    return message


def test_a_late_message_of_the_forgotten_persons_session_stays_late(
        make_ws: WorkspaceFactory) -> None:
    """kim's SDK session ends (a reset), bob signs in on the same iPad; a late message of
    kim's session after the forget is still late: bob keeps the iPad and his history its
    refusal, naming the same session person, and kim's anonymousId finds nobody."""
    ws = make_ws()
    ws.ingest([sdk_message(1, "a-1", "kim", city="Lyon"), sdk_message(2, "a-2", "bob", plan="pro")])
    refusals = lambda: [(r.value, r.held_by) for c in ws.history("bob") for r in c.refused]  # noqa: E731
    ws.ingest([sdk_message(3, "a-1", cart="late")])
    before, bob = refusals(), ws.profile("bob")
    assert before and before[0][1] is not None and bob is not None
    ws.forget("kim", reason="ticket 316")
    assert refusals() == before and ws.profile("bob") == bob
    ws.ingest([sdk_message(4, "a-1", cart="later")])
    on_ipad = ws.profile_of_device("ipad")
    assert on_ipad is not None and on_ipad.identifiers == {"id": "bob"}
    assert ws.profile("a-1") is None
    live = (ws.profile("bob"), ws.history("bob"))
    ws.rebuild()
    assert (ws.profile("bob"), ws.history("bob")) == live


def test_the_forgotten_persons_session_carried_on_by_another_user_finds_nobody(
        make_ws: WorkspaceFactory) -> None:
    """kim signs in through the SDK (session a-1), then bob on the same iPad without a reset:
    after the forget, the session's next message goes to bob as before, and a-1, one of kim's
    identifiers, finds nobody (not bob)."""
    ws = make_ws()
    ws.ingest([sdk_message(1, "a-1", "kim", city="Lyon")])
    ws.identify("ipad", "bob", {"plan": "pro"})
    ws.forget("kim", reason="ticket 317")
    ws.ingest([sdk_message(2, "a-1", theme="dark")])
    bob = ws.profile("bob")
    assert bob is not None and bob.attributes == {"plan": "pro", "theme": "dark"}
    assert ws.profile("a-1") is None
    ws.rebuild()
    assert ws.profile("bob") == bob and ws.profile("a-1") is None


def test_an_anonymous_id_the_forgotten_persons_session_named_first_finds_nobody(
        make_ws: WorkspaceFactory) -> None:
    """Two devices report the same SDK anonymousId; kim's named it first, so it found kim.
    After the forget it finds nobody, in the purged rows and in a rebuild: the other device's
    person does not take it over."""
    ws = make_ws()
    ws.ingest([sdk_message(1, "a-4", "kim", city="Lyon")])
    ws.ingest([{"type": "identify", "anonymousId": "a-4", "traits": {"theme": "dark"},
                "messageId": "m2", "context": {"device": {"id": "desk"}}}])
    desk = ws.profile_of_device("desk")
    assert desk is not None and "a-4" not in desk.anonymous_ids
    ws.forget("kim", reason="ticket 318")
    assert ws.profile("a-4") is None and ws.history("a-4") == []
    live = ws.profile_of_device("desk")
    ws.rebuild()
    assert ws.profile("a-4") is None and ws.history("a-4") == []
    assert ws.profile_of_device("desk") == live


def test_a_merge_of_a_person_forgotten_since_cannot_be_undone(make_ws: WorkspaceFactory) -> None:
    """Both sides were forgotten with the merge: undone, the remainder split in two and
    nothing came back. Refused, with nothing recorded."""
    ws = make_ws()
    ws.identify("d3", "u1", {"k1": "x"})
    ws.identify("d2", "u3", {"k2": "y"})
    merge_id = ws.merge_persons("u3", "u1", reason="same")
    ws.forget("u1", reason="gdpr")
    head = ws.log.head()
    with pytest.raises(InvalidCommand) as refused:
        ws.unmerge(merge_id, reason="undo")
    assert refused.value.field == "merge_id" and "forgotten" in str(refused.value)
    assert ws.log.head() == head


def test_a_session_merged_into_a_forgotten_person_answers_nothing_as_of_either(
        make_ws: WorkspaceFactory) -> None:
    """profile, history and merges by the merged session's ids answered nothing; as-of a
    position before the merge still showed its person and session."""
    ws = make_ws()
    ws.identify("d1", "u2")
    before = ws.set_profile_attributes("d2", {"k1": "secret"})
    assert before is not None
    session = ws.profile_of_device("d2")
    device = ws.device("d2")
    assert session is not None and device is not None
    ws.identify("d2", "u2")  # the session's person merged into u2
    ws.forget("u2", reason="gdpr")
    for identifier in (session.person_id, device.anonymous_id):
        assert ws.profile(identifier) is None and ws.history(identifier) == []
        assert ws.profile_as_of(identifier, before) is None
