"""The scripted walk through the seed scenarios behind ``idstitch demo``.

Three stories, the first two taken from the SDK docs the identity model was drawn from:

- Customer.io ("Identify people"): collected and custom device attributes, an anonymous
  attribute carried over by identify, ``setProfileAttributes`` keeping earlier keys, a push
  token that is refreshed, identifying a different person (a switch: the first person keeps
  its attributes and loses the device), and ``clearIdentify`` (the token stays on the device).
- Adapty ("Identify users"): ``activate`` without a customer user id, ``identify`` of a new
  customer user id (conversion), a second device identifying the same user (merged or
  switched by the workspace's ``anonymous_merge`` policy), ``logout`` and logging in again.
- Support: a merge by mistake (``merge_persons`` of two customers), undone (``unmerge``): both
  are again what they were, each with its own devices and attributes; then an erasure request,
  honoured (``forget``): the profile and history of the customer answer nothing, and ingest
  refuses a message naming it.

Every call carries an explicit client timestamp, starting 2026-01-01T09:00Z and advancing a few
seconds per step, so two runs on fresh stores record the same events and print the same story.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from idstitch.projections.views import Merge, Profile
from idstitch.render import person_label, to_json
from idstitch.workspace import Workspace

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
STEP = timedelta(seconds=5)

DANA_PHONE = "ios-dana-iphone"
LEE_PHONE = "android-lee-pixel"
LEE_TABLET = "android-lee-tablet"
KIM_LAPTOP = "web-kim-laptop"

HEADING = "# "
"""Lines passed to ``say`` that start with this are story headings, not steps."""

INDENT = 30
"""Width of a step's ``time  device`` prefix; its outcome line is indented as far, so a caller
can lay the text after it out with a hanging indent."""


def _args(value: dict[str, Any]) -> str:
    return to_json(value)


class StoryClock:
    """The story's time as a workspace clock: open the demo's workspace with one and pass it to
    :func:`run_demo`, and what is recorded without a client time (the decisions of the third
    story) is stamped with the story's time too, so reruns print the same."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class _Story:
    """Runs calls on one workspace with a stepping client clock and narrates each of them."""

    def __init__(self, ws: Workspace, say: Callable[[str], None],
                 clock: StoryClock | None) -> None:
        self.ws = ws
        self.say = say
        self.now = START - STEP
        self.clock = clock

    def tick(self) -> datetime:
        self.now += STEP
        if self.clock is not None:
            self.clock.now = self.now
        return self.now

    def step(self, device_id: str, call: str, outcome: str) -> None:
        # Two lines, so a long call (identify with traits) does not wrap into the outcome.
        prefix = f"{_clock(self.now)}  {device_id}".ljust(INDENT - 1)
        self.say(f"{prefix} {call}\n{'':<{INDENT}}→ {outcome}")

    def current(self, device_id: str) -> Profile:
        profile = self.ws.profile_of_device(device_id)
        if profile is None:  # pragma: no cover - every step above created the device
            raise LookupError(device_id)
        return profile

    def who(self, device_id: str) -> str:
        return person_label(self.current(device_id))

    def anonymous_id(self, device_id: str) -> str:
        device = self.ws.device(device_id)
        if device is None:  # pragma: no cover - the device was created by an earlier step
            raise LookupError(device_id)
        return device.anonymous_id

    def token(self, device_id: str) -> str:
        device = self.ws.device(device_id)
        return "-" if device is None or device.token is None else device.token

    def label(self, ident: str) -> str:
        """A merge source or target (person id or anonymous id) as a reader knows it."""
        profile = self.ws.profile(ident)
        if profile is None:
            return ident[:8]
        if profile.person_id != ident and ident not in profile.anonymous_ids:
            # The id was retired into another person: name it as what it was.
            return f"anonymous {ident[:8]}"
        return person_label(profile)

    def identify_outcome(self, user_id: str, position: int | None) -> str:
        if position is None:
            return "nothing recorded (duplicate message)"
        found: list[Merge] = [m for m in self.ws.merges(user_id) if m.position == position]
        if not found:
            return f"{user_id} was already identified here: traits updated, last_used moved"
        merge = found[-1]
        if merge.kind == "converted":
            return f"converted: the anonymous person becomes {user_id} (keeps its attributes)"
        if merge.kind == "merged":
            return f"merged: anonymous {merge.source[:8]} folded into {user_id}"
        if merge.kind == "switched":
            return f"switched: device leaves {self.label(merge.source)} for {user_id}"
        return f"{merge.kind}: {self.label(merge.source)} → {self.label(merge.target)}"


def _clock(value: datetime) -> str:
    # The story never leaves one morning, so the time of day is enough.
    return value.strftime("%H:%M:%S")


def _customer_io(s: _Story) -> list[str]:
    ws, d = s.ws, DANA_PHONE
    s.say(HEADING + "Customer.io: identify people on one iPhone")

    context = {"device_os": "iOS 18.2", "device_model": "iPhone15,2", "app_version": "3.4.0",
               "push_enabled": True, "network": {"cellular": True, "wifi": False}}
    ws.collect_device_attributes(d, context, timestamp=s.tick())
    s.step(d, "collect_device_attributes(device_os, device_model, …, network)",
           f"new device, anonymous person {s.current(d).person_id[:8]}")
    first_anonymous = s.anonymous_id(d)

    traits: dict[str, Any] = {"referral_source": "app_store_ad"}
    ws.set_profile_attributes(d, traits, timestamp=s.tick())
    s.step(d, f"set_profile_attributes({_args(traits)})", f"on {s.who(d)}")

    traits = {"first_name": "Dana", "email": "dana@example.com"}
    pos = ws.identify(d, "dana@example.com", traits, timestamp=s.tick())
    s.step(d, f"identify dana@example.com {_args(traits)}",
           s.identify_outcome("dana@example.com", pos))

    traits = {"favorite_food": "pizza"}
    ws.set_profile_attributes(d, traits, timestamp=s.tick())
    s.step(d, f"set_profile_attributes({_args(traits)})", f"on {s.who(d)}; first_name kept")

    attrs = {"theme": "dark"}
    ws.set_device_attributes(d, attrs, timestamp=s.tick())
    s.step(d, f"set_device_attributes({_args(attrs)})", "custom attribute of the device")

    ws.register_device_token(d, "apns-token-dana-1", platform="ios", timestamp=s.tick())
    s.step(d, "register_device_token(apns-token-dana-1, platform=ios)",
           f"token belongs to {s.who(d)}")

    ws.record_push_status(d, "sent", timestamp=s.tick())
    s.step(d, "record_push_status(sent)", "last_status = sent")

    ws.register_device_token(d, "apns-token-dana-2", platform="ios", timestamp=s.tick())
    s.step(d, "register_device_token(apns-token-dana-2)", "token refresh: replaces dana-1")

    pos = ws.identify(d, "sam-7", timestamp=s.tick())
    s.step(d, "identify sam-7", s.identify_outcome("sam-7", pos)
           + "; dana keeps her attributes")

    ws.clear_identify(d, timestamp=s.tick())
    s.step(d, "clear_identify()",
           f"anonymous again ({s.who(d)}); token {s.token(d)} stays on the device")

    return ["dana@example.com", "sam-7", s.anonymous_id(d), first_anonymous]


def _adapty(s: _Story) -> list[str]:
    ws = s.ws
    policy = ws.anonymous_merge
    s.say(HEADING + f"Adapty: one customer user id on two Android devices "
                    f"(anonymous_merge={policy})")

    d = LEE_PHONE
    ws.activate(d, platform="android", timestamp=s.tick())
    s.step(d, "activate(platform=android)", f"anonymous person {s.current(d).person_id[:8]}")

    traits: dict[str, Any] = {"favorite_genre": "sci-fi"}
    ws.set_profile_attributes(d, traits, timestamp=s.tick())
    s.step(d, f"set_profile_attributes({_args(traits)})", f"on {s.who(d)}")

    pos = ws.identify(d, "lee-100", timestamp=s.tick())
    s.step(d, "identify lee-100", s.identify_outcome("lee-100", pos))

    t = LEE_TABLET
    ws.activate(t, platform="android", timestamp=s.tick())
    s.step(t, "activate(platform=android)", f"anonymous person {s.current(t).person_id[:8]}")
    tablet_anonymous = s.anonymous_id(t)

    traits = {"plan_interest": "annual"}
    ws.set_profile_attributes(t, traits, timestamp=s.tick())
    s.step(t, f"set_profile_attributes({_args(traits)})", f"on {s.who(t)}")

    pos = ws.identify(t, "lee-100", timestamp=s.tick())
    s.step(t, "identify lee-100", s.identify_outcome("lee-100", pos))

    ws.logout(t, timestamp=s.tick())
    s.step(t, "logout()", f"anonymous again ({s.who(t)})")
    after_logout = s.anonymous_id(t)

    pos = ws.identify(t, "lee-100", timestamp=s.tick())
    s.step(t, "identify lee-100 (log in again)", s.identify_outcome("lee-100", pos))

    return ["lee-100", tablet_anonymous, after_logout]


SUPPORT = "support"
"""Who makes the person-level decisions of the third story (shown where a device would be)."""


def _support(s: _Story) -> list[str]:
    ws = s.ws
    s.say(HEADING + "Support: a merge by mistake, undone; an erasure request, honoured")

    s.tick()
    merge_id = ws.merge_persons("sam-7", "lee-100", reason="ticket 311: looked like one customer")
    merged = ws.profile("lee-100")
    devices = 0 if merged is None else len(merged.devices)
    s.step(SUPPORT, "merge_persons(sam-7, lee-100, reason=ticket 311)",
           f"explicit: lee-100 joins sam-7 ({devices} devices; sam-7's values win)")

    s.tick()
    ws.unmerge(merge_id, reason="ticket 312: two customers after all")
    s.step(SUPPORT, "unmerge(reason=ticket 312)",
           "unmerged: sam-7 and lee-100 apart again, as if never merged")
    _erasure(s)
    return []


def _erasure(s: _Story) -> None:
    ws = s.ws
    pos = ws.identify(KIM_LAPTOP, "kim-55", {"email": "kim@example.com", "plan": "basic"},
                      timestamp=s.tick())
    s.step(KIM_LAPTOP, 'identify kim-55 {"email": "kim@example.com", "plan": "basic"}',
           s.identify_outcome("kim-55", pos))

    s.tick()
    ws.forget("kim@example.com", reason="ticket 313: erasure request")
    gone = ws.profile("kim-55") is None and ws.history("kim@example.com") == []
    s.step(SUPPORT, "forget(kim@example.com, reason=ticket 313)",
           "erased: keys destroyed; profile and history of kim-55 answer nothing"
           if gone else "still readable")

    report = ws.ingest([{"type": "identify", "userId": "kim-55", "anonymousId": "kim-anon-2",
                         "messageId": "demo-kim-2", "timestamp": s.tick().isoformat()}])
    reason = report.rejected[0][1] if report.rejected else "accepted"
    s.step(KIM_LAPTOP, "ingest identify kim-55", f"refused: {reason}")


def run_demo(ws: Workspace, say: Callable[[str], None],
             clock: StoryClock | None = None) -> list[str]:
    """Play the Customer.io and Adapty stories on ``ws``, narrating each call through ``say``.

    A line that starts with :data:`HEADING` introduces a story; every other line is one call
    and what came of it: ``time  device  call``, a newline, and ``→ outcome``, both parts
    after a prefix of :data:`INDENT` characters.

    Returns the identifiers whose profiles tell the result, in story order; several may find
    the same person (an anonymous id merged into a user), so a caller showing them should skip
    persons it has already shown. ``clock``: the one the workspace was opened with, if a
    :class:`StoryClock` (see there).
    """
    story = _Story(ws, say, clock)
    return _customer_io(story) + _adapty(story) + _support(story)


__all__ = ["DANA_PHONE", "HEADING", "INDENT", "KIM_LAPTOP", "LEE_PHONE", "LEE_TABLET", "START", "SUPPORT",
           "StoryClock", "run_demo"]
