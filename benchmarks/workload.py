"""A deterministic generator of realistic SDK traffic: Segment-spec NDJSON lines.

Not a benchmark itself: the benchmarks feed it to ``ws.ingest``. The lines look like what
Customer.io's mobile SDKs (built on Segment's analytics-swift / analytics-kotlin) send:

- devices first appear anonymous: ``track "Device Created or Updated"`` with the push token in
  ``context.device.token``, the platform in ``context.device.type`` and the auto-collected device
  attributes (plus custom ones, some nested) in ``properties``; anonymous ``identify`` calls carry
  only an ``anonymousId`` and traits (anonymous profile attributes);
- later the app identifies a ``userId``: a new user, or an existing user on a second or third
  device; identified users re-identify with changed traits (nested values included);
- token refreshes (a new token on the same device), attribute updates, ``Device Deleted``;
- ordinary ``track`` and ``screen`` events that ingest counts as ignored (~20%);
- exact repeats of earlier lines (~2%), late messages whose timestamp is earlier than the device's
  previous message (~5%), and a few bad lines (~0.5%: not JSON, the placeholder userId "null", a
  2000-character trait value).

That is the ``attributes`` mix (the default): about half the events are device attributes. The
``identity`` mix (``--mix identity``) is identity-heavy traffic: ~65% of the lines identify
(new users, re-identifies with changed traits, nearly always with the email), users on two or
three devices, shared devices switching to another user and back; few attribute updates and
ignored events. The same bad, duplicate and late shares.

Clears and logouts are not expressible in Segment messages, so there are none. About 10% of the
devices never send ``context.device.id`` (their ``anonymousId`` names them). Everything, message
ids included, derives from the seed: the same ``(n_messages, seed, mix)`` gives the same bytes.
The generator keeps a bounded set of live devices and users, so its memory does not grow with
``n_messages`` (the memory benchmark streams it).

    python benchmarks/workload.py 100000 > /tmp/w.ndjson
    python benchmarks/workload.py 100000 --seed 7 --stats      # the mix, on stderr
    python benchmarks/workload.py 100000 --mix identity > /tmp/identity.ndjson
"""

from __future__ import annotations

import argparse
import base64
import bisect
import itertools
import random
import sys
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
MAX_LIVE_DEVICES = 20_000
MAX_LIVE_USERS = 20_000
RECENT_LINES = 2_000



class Mix(NamedTuple):
    """Shares of the kinds of message, of all lines (the rest: updates on known devices and
    re-identifies, split by ``reidentify`` and ``anon_rest``)."""

    bad: float
    duplicate: float
    late: float
    ignored: float
    new_device: float
    anon_traits: float
    identify_new_user: float
    identify_existing_user: float
    """An existing user identified on another device: a second or third device of theirs, or a
    shared device switching to them from its current user."""
    token_refresh: float
    device_deleted: float
    switch_back: float
    """A shared device (one that had a user before its current one) switches back to that
    previous user: a family tablet."""
    reidentify: float
    """Of the rest, on an identified device: a re-identify with changed traits (else a device
    update)."""
    anon_rest: float
    """Of the rest, on an anonymous device: anonymous traits (else a device update)."""
    email: float
    """Share of an identified user's traits that carry the email."""

    @property
    def edges(self) -> tuple[float, ...]:
        """Cumulative shares of the kinds on a known device, in the order _message tests them."""
        return tuple(itertools.accumulate((
            self.ignored, self.anon_traits, self.identify_new_user, self.identify_existing_user,
            self.token_refresh, self.device_deleted, self.switch_back)))


MIXES = {
    # Attribute-heavy: half the events are the SDK's auto-collected device attributes.
    "attributes": Mix(bad=0.005, duplicate=0.02, late=0.05, ignored=0.20, new_device=0.07,
                      anon_traits=0.07, identify_new_user=0.045, identify_existing_user=0.02,
                      token_refresh=0.03, device_deleted=0.01, switch_back=0.0, reidentify=0.6,
                      anon_rest=0.3, email=0.7),
    # Identity-heavy: most lines identify (with traits, nearly always the email), users on two
    # or three devices, shared devices switching between their users; few attribute updates.
    "identity": Mix(bad=0.005, duplicate=0.02, late=0.05, ignored=0.05, new_device=0.06,
                    anon_traits=0.04, identify_new_user=0.10, identify_existing_user=0.12,
                    token_refresh=0.02, device_deleted=0.005, switch_back=0.05, reidentify=0.85,
                    anon_rest=0.5, email=0.9),
}
"""The mixes ``--mix`` picks from; ``attributes`` is the default (and the figures before it)."""

IOS_MODELS = ("iPhone14,5", "iPhone15,2", "iPhone15,4", "iPhone16,1", "iPhone13,2", "iPad13,18")
ANDROID_MODELS = (("samsung", "SM-S918B"), ("Google", "Pixel 8"), ("Google", "Pixel 7a"),
                  ("OnePlus", "CPH2449"), ("Xiaomi", "2201116SG"), ("motorola", "moto g54 5G"))
IOS_VERSIONS = ("17.4.1", "17.5", "18.0", "18.1.1", "16.7.8")
ANDROID_VERSIONS = ("13", "14", "15", "12")
APP_VERSIONS = ("4.12.0", "4.12.1", "4.13.0", "4.14.2", "5.0.0")
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP")
TIMEZONES = ("America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin",
             "America/Sao_Paulo", "Asia/Tokyo")
FIRST_NAMES = ("dana", "li", "sam", "noor", "ana", "kofi", "yuki", "ravi", "ines", "tom")
PLANS = ("free", "trial", "pro", "team")
THEMES = ("dark", "light", "system")
CATEGORIES = ("shoes", "books", "garden", "kitchen", "music", "outdoor")
TRACK_EVENTS = ("Product Viewed", "Product Added", "Checkout Started", "Order Completed",
                "Search Performed", "Push Opened", "Application Opened")
SCREENS = ("Home", "Search", "Product", "Cart", "Settings", "Profile")


class _Device:
    """What the generator remembers about one app installation."""

    __slots__ = ("anonymous_id", "app_version", "device_id", "has_context_id", "last", "locale",
                 "manufacturer", "model", "os_version", "platform", "previous", "timezone",
                 "token", "user")

    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.platform = "ios" if rng.random() < 0.55 else "android"
        self.anonymous_id = _uuid(rng)
        self.has_context_id = rng.random() >= 0.10
        if self.platform == "ios":
            self.device_id = _uuid(rng).upper()
            self.manufacturer, self.model = "Apple", rng.choice(IOS_MODELS)
            self.os_version = rng.choice(IOS_VERSIONS)
        else:
            self.device_id = f"{rng.getrandbits(64):016x}"
            self.manufacturer, self.model = rng.choice(ANDROID_MODELS)
            self.os_version = rng.choice(ANDROID_VERSIONS)
        self.token = _token(rng, self.platform)
        self.app_version = rng.choice(APP_VERSIONS)
        self.locale = rng.choice(LOCALES)
        self.timezone = rng.choice(TIMEZONES)
        self.user: _User | None = None
        self.previous: _User | None = None
        """The user identified on it before the current one (a shared device)."""
        self.last = now


class _User:
    """A person the app knows by a userId (an id or an email), with up to three devices."""

    __slots__ = ("devices", "email", "first_name", "user_id")

    def __init__(self, rng: random.Random, n: int) -> None:
        self.first_name = rng.choice(FIRST_NAMES)
        self.email = f"{self.first_name}.{n}@example.com"
        self.user_id = self.email if rng.random() < 0.3 else f"u_{n:08d}"
        self.devices = 0


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _token(rng: random.Random, platform: str) -> str:
    if platform == "ios":
        return f"{rng.getrandbits(256):064x}"  # APNs: 32 bytes, hex
    # FCM registration tokens: ~150 characters of base64url around ":APA91b".
    head = base64.urlsafe_b64encode(rng.getrandbits(128).to_bytes(16)).decode()[:22]
    tail = base64.urlsafe_b64encode(rng.getrandbits(720).to_bytes(90)).decode()
    return f"{head}:APA91b{tail}"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


class Workload:
    """The generator's state: a clock, live devices and users, recent lines for repeats."""

    def __init__(self, seed: int, mix: str = "attributes") -> None:
        self.mix = MIXES[mix]
        self.rng = random.Random(seed)
        self.now = START
        self.devices: deque[_Device] = deque()
        self.users: deque[_User] = deque()
        self.user_count = 0
        self.recent: deque[bytes] = deque(maxlen=RECENT_LINES)
        self.encode = msgspec.json.Encoder().encode
        self.kinds: Counter[str] = Counter()

    # Building blocks.

    def _context(self, dev: _Device, *, token: bool) -> dict[str, Any]:
        device: dict[str, Any] = {"type": dev.platform}
        if dev.has_context_id:
            device["id"] = dev.device_id
        if token:
            device["token"] = dev.token
        return {
            "app": {"version": dev.app_version},
            "device": device,
            "library": {"name": "customerio-" + dev.platform, "version": "3.5.1"},
            "os": {"version": dev.os_version},
        }

    def _envelope(self, kind: str, dev: _Device, when: datetime, *, token: bool = False
                  ) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": kind, "messageId": _uuid(self.rng),
                               "anonymousId": dev.anonymous_id}
        if dev.user is not None:
            msg["userId"] = dev.user.user_id
        msg["context"] = self._context(dev, token=token)
        msg["timestamp"] = _iso(when)
        # Usually sent within seconds; an app that was offline flushes its queue much later.
        delay = self.rng.uniform(0.05, 4.0) if self.rng.random() < 0.95 else self.rng.uniform(60, 7200)
        msg["sentAt"] = _iso(when + timedelta(seconds=delay))
        return msg

    def _device_properties(self, dev: _Device) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.05:
            dev.app_version = rng.choice(APP_VERSIONS)  # an app update
        props: dict[str, Any] = {
            "device_os": dev.os_version,
            "device_model": dev.model,
            "device_manufacturer": dev.manufacturer,
            "app_version": dev.app_version,
            "cio_sdk_version": "3.5.1",
            "device_locale": dev.locale,
            "push_enabled": rng.random() < 0.7,
            "timezone": dev.timezone,
            "network_cellular": rng.random() < 0.4,
        }
        if rng.random() < 0.5:
            props["prefs"] = {"theme": rng.choice(THEMES),
                              "notifications": {"email": rng.random() < 0.5}}
        if rng.random() < 0.3:
            props["ab_bucket"] = rng.randint(0, 9)
        return props

    def _traits(self, user: _User | None) -> dict[str, Any]:
        rng = self.rng
        if user is None:
            traits: dict[str, Any] = {"onboarding_step": rng.randint(1, 5),
                                      "favorite_category": rng.choice(CATEGORIES)}
            if rng.random() < 0.2:
                traits["referrer"] = rng.choice(("ad_campaign_spring", "friend_invite", "organic"))
            return traits
        traits = {"first_name": user.first_name.title(), "plan": rng.choice(PLANS),
                  "sessions": rng.randint(1, 400)}
        if rng.random() < self.mix.email:
            traits["email"] = user.email
        if rng.random() < 0.4:
            traits["prefs"] = {"theme": rng.choice(THEMES),
                               "notifications": {"email": rng.random() < 0.5}}
        if rng.random() < 0.2:
            traits["last_order"] = {"id": rng.randint(10_000, 99_999),
                                    "total": round(rng.uniform(5, 300), 2), "currency": "USD"}
        return traits

    # Picking what happens.

    def _tick(self) -> datetime:
        self.now += timedelta(milliseconds=self.rng.randint(5, 900))
        return self.now

    def _new_device(self) -> _Device:
        dev = _Device(self.rng, self.now)
        self.devices.append(dev)
        if len(self.devices) > MAX_LIVE_DEVICES:
            self.devices.popleft()  # an uninstalled app: it never sends again
        return dev

    def _any_device(self) -> _Device:
        # Recent installs are the busy ones: a skew towards the newest devices.
        # Draw again past the oldest device: clamping piled the overflow onto devices[0], one
        # device with ~10% of all traffic, which flattered the caches.
        n = len(self.devices)
        while (back := int(self.rng.expovariate(1 / 800))) >= n:
            pass
        return self.devices[n - 1 - back]

    def _message(self) -> tuple[str, dict[str, Any]]:
        rng, mix = self.rng, self.mix
        r = rng.random()
        if not self.devices or r < mix.new_device:
            dev = self._new_device()
            return "device_created", self._device_update(dev, self._tick())
        dev = self._any_device()
        when = self._tick()
        if rng.random() < mix.late / (1 - mix.duplicate - mix.bad - mix.new_device):
            # Late: it happened before the device's previous message, and arrives now.
            when = dev.last - timedelta(seconds=rng.uniform(1, 3600))
            kind = "late"
        else:
            dev.last = when
            kind = ""
        # Scaled so that each share below is a share of all lines.
        r = rng.random() * (1 - mix.new_device - mix.bad - mix.duplicate)
        i = bisect.bisect_right(mix.edges, r)
        if i == 0:
            return kind or "ignored", self._ignored(dev, when)
        if i == 1:
            if dev.user is None:
                msg = self._envelope("identify", dev, when)
                msg["traits"] = self._traits(None)
                return kind or "anonymous_traits", msg
            return kind or "reidentify", self._identify(dev, when, dev.user)
        if i == 2:
            return kind or "identify_new_user", self._identify(dev, when, self._new_user())
        if i == 3:
            user = self._user_with_room()
            if user is not None and user is not dev.user:
                return kind or "identify_existing_user", self._identify(dev, when, user)
            return kind or "identify_new_user", self._identify(dev, when, self._new_user())
        if i == 4:
            dev.token = _token(rng, dev.platform)
            return kind or "token_refresh", self._device_update(dev, when)
        if i == 5:
            msg = self._envelope("track", dev, when, token=True)
            msg["event"] = "Device Deleted"
            msg["properties"] = {}
            return kind or "device_deleted", msg
        if i == 6 and dev.previous is not None and dev.user is not None:
            return kind or "switch_back", self._identify(dev, when, dev.previous)
        if i == 6:
            user = self._user_with_room()
            if user is not None and user is not dev.user:
                return kind or "identify_existing_user", self._identify(dev, when, user)
        if dev.user is not None and rng.random() < mix.reidentify:
            return kind or "reidentify", self._identify(dev, when, dev.user)
        if dev.user is None and rng.random() < mix.anon_rest:
            msg = self._envelope("identify", dev, when)
            msg["traits"] = self._traits(None)
            return kind or "anonymous_traits", msg
        return kind or "device_updated", self._device_update(dev, when)

    def _device_update(self, dev: _Device, when: datetime) -> dict[str, Any]:
        msg = self._envelope("track", dev, when, token=True)
        msg["event"] = "Device Created or Updated"
        msg["properties"] = self._device_properties(dev)
        return msg

    def _identify(self, dev: _Device, when: datetime, user: _User) -> dict[str, Any]:
        if dev.user is not user:
            user.devices += 1
            if dev.user is not None:
                dev.previous = dev.user  # a shared device: it may switch back later
        dev.user = user
        msg = self._envelope("identify", dev, when)
        msg["traits"] = self._traits(user)
        return msg

    def _ignored(self, dev: _Device, when: datetime) -> dict[str, Any]:
        if self.rng.random() < 0.4:
            msg = self._envelope("screen", dev, when)
            msg["name"] = self.rng.choice(SCREENS)
            msg["properties"] = {"previous": self.rng.choice(SCREENS)}
            return msg
        msg = self._envelope("track", dev, when)
        msg["event"] = self.rng.choice(TRACK_EVENTS)
        msg["properties"] = {"sku": f"SKU-{self.rng.randint(1000, 9999)}",
                             "price": round(self.rng.uniform(1, 200), 2)}
        return msg

    def _new_user(self) -> _User:
        self.user_count += 1
        user = _User(self.rng, self.user_count)
        self.users.append(user)
        if len(self.users) > MAX_LIVE_USERS:
            self.users.popleft()
        return user

    def _user_with_room(self) -> _User | None:
        for _ in range(4):
            if not self.users:
                return None
            user = self.users[self.rng.randrange(len(self.users))]
            if user.devices < 3:
                return user
        return None

    def _bad(self) -> bytes:
        dev = self._any_device()
        when = self._tick()
        r = self.rng.random()
        if r < 0.4:
            self.kinds["bad_not_json"] += 1
            line = self.encode(self._device_update(dev, when))
            return line[: self.rng.randint(20, len(line) - 10)]
        msg = self._envelope("identify", dev, when)
        if r < 0.7:
            self.kinds["bad_placeholder_user"] += 1
            msg["userId"] = "null"
            msg["traits"] = {"plan": "free"}
        else:
            self.kinds["bad_oversized_trait"] += 1
            msg["traits"] = {"bio": "x" * 2000}
        return self.encode(msg)

    def lines(self, n_messages: int) -> Iterator[bytes]:
        """``n_messages`` lines, one JSON document each (no trailing newline)."""
        rng = self.rng
        for _ in range(n_messages):
            r = rng.random()
            if r < self.mix.bad and self.devices:
                line = self._bad()
            elif r < self.mix.bad + self.mix.duplicate and self.recent:
                self.kinds["duplicate"] += 1
                line = self.recent[rng.randrange(len(self.recent))]
            else:
                kind, msg = self._message()
                self.kinds[kind] += 1
                line = self.encode(msg)
                self.recent.append(line)
            yield line


def generate(n_messages: int, seed: int = 0, mix: str = "attributes") -> Iterator[bytes]:
    """``n_messages`` Segment-spec messages as JSON lines (bytes, no newline), deterministic
    from ``(n_messages, seed, mix)``."""
    return Workload(seed, mix).lines(n_messages)


def main(argv: list[str] | None = None) -> None:
    """Write N lines to stdout (NDJSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="how many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mix", choices=sorted(MIXES), default="attributes",
                        help="attributes (default: half the events auto-collected device "
                             "attributes) or identity (mostly identifies with traits and emails)")
    parser.add_argument("--stats", action="store_true", help="print the mix and sizes to stderr")
    args = parser.parse_args(argv)
    workload = Workload(args.seed, args.mix)
    out = sys.stdout.buffer
    total = 0
    for line in workload.lines(args.n):
        total += len(line)
        out.write(line)
        out.write(b"\n")
    out.flush()
    if args.stats:
        for kind, count in sorted(workload.kinds.items(), key=lambda kv: -kv[1]):
            print(f"{kind:24} {count:9} {count / args.n:6.1%}", file=sys.stderr)
        print(f"{'mean bytes per line':24} {total / max(args.n, 1):9.0f}", file=sys.stderr)


if __name__ == "__main__":
    main()
