"""``idstitch serve`` driven by the real SDK clients from the registry, as a mobile backend sees them.

Each client (segment-analytics-python, customerio-cdp-analytics with a plain key (Basic) and
with a ``pk_us_`` key (Bearer), gzip on and off) posts a device's traffic to
a running server on loopback: an anonymous session with traits, the "Device Created or Updated"
track with a token, identify with traits, an attribute update, tracks and a screen (ignored),
then a second user on the device with a new anonymousId and a new token. The profiles, the
histories and the merges afterwards are asserted exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from customerio.analytics import Client as CustomerIO
from segment.analytics import Client as Segment

import idstitch
from idstitch.testing import TemporaryPostgres

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
DEVICE = "iphone-1"


def context(token: str) -> dict[str, Any]:
    """What the mobile SDK puts in every message: the installation, its push token, its platform."""
    return {"device": {"id": DEVICE, "token": token, "type": "ios"}}


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def drive(client: Any) -> None:
    """A phone's life: anonymous, token, sign-in, an update, events, then another user signs in."""
    client.identify(anonymous_id="anon-1", traits={"guest_cart": 2}, context=context("apns-1"),
                    timestamp=at(0))
    client.track(anonymous_id="anon-1", event="Device Created or Updated",
                 properties={"device_os": "iOS 17.2", "app_version": "2.1.0", "push_enabled": True,
                             "theme": "dark"},
                 context=context("apns-1"), timestamp=at(1))
    client.identify(user_id="u-100", anonymous_id="anon-1",
                    traits={"email": "dana@example.com", "first_name": "Dana"},
                    context=context("apns-1"), timestamp=at(2))
    client.identify(user_id="u-100", anonymous_id="anon-1", traits={"plan": "pro"},
                    context=context("apns-1"), timestamp=at(3))
    client.track(user_id="u-100", anonymous_id="anon-1", event="Added to Cart",
                 properties={"sku": "sku-1"}, context=context("apns-1"), timestamp=at(4))
    client.screen(user_id="u-100", anonymous_id="anon-1", name="Cart", context=context("apns-1"),
                  timestamp=at(5))
    client.identify(user_id="u-200", anonymous_id="anon-2", traits={"email": "sam@example.com"},
                    context=context("apns-1"), timestamp=at(10))
    client.track(user_id="u-200", anonymous_id="anon-2", event="Device Created or Updated",
                 properties={"device_os": "iOS 17.3"}, context=context("apns-2"), timestamp=at(11))
    client.flush()
    client.shutdown()


Client = Callable[[str, list[Exception]], Any]
Clients = dict[str, Client]

CLIENTS: Clients = {
    # Basic auth and the key in the body too; plain JSON.
    "segment": lambda host, errors: Segment(
        "seg-key", host=host, on_error=lambda e, batch: errors.append(e), max_retries=1),
    "segment-gzip": lambda host, errors: Segment(
        "seg-key", host=host, gzip=True, on_error=lambda e, batch: errors.append(e), max_retries=1),
    # A key without Customer.io's region prefix goes as Basic.
    "customerio-basic": lambda host, errors: CustomerIO(
        "cio-key", host=host, on_error=lambda e, batch: errors.append(e), max_retries=1),
    # A pk_us_ key goes as Bearer.
    "customerio-bearer-gzip": lambda host, errors: CustomerIO(
        "pk_us_test123", host=host, gzip=True, on_error=lambda e, batch: errors.append(e),
        max_retries=1),
}
KEYS = ["seg-key", "cio-key", "pk_us_test123"]


def run(serve: Any, url: str, client: Client) -> None:
    """Drive the traffic through a server on ``url`` and stop it; no call may have failed."""
    server = serve(url, write_keys=KEYS)
    errors: list[Exception] = []
    drive(client(server.url, errors))
    server.stop()  # drained and closed: what the test reads below is what was committed
    assert errors == []


def events(ws: idstitch.Workspace, identifier: str) -> list[tuple[Any, ...]]:
    return [(c.event, c.device_id, c.data, c.changes, [m.kind for m in c.merges])
            for c in ws.history(identifier)]


def check(url: str) -> None:
    """The profiles, merges and histories the traffic must leave, whichever client sent it."""
    with idstitch.open(url) as ws:
        dana, sam = ws.profile("u-100"), ws.profile("u-200")
        assert dana is not None and sam is not None
        assert dana.identifiers == {"id": "u-100", "email": "dana@example.com"}
        # The anonymous traits joined her at sign-in; the device then went to the next user.
        assert dana.attributes == {"guest_cart": 2, "email": "dana@example.com", "first_name": "Dana",
                                   "plan": "pro"}
        assert dana.devices == []
        assert sam.identifiers == {"id": "u-200", "email": "sam@example.com"}
        assert sam.attributes == {"email": "sam@example.com"}
        [phone] = sam.devices
        assert (phone.device_id, phone.token, phone.platform) == (DEVICE, "apns-2", "ios")
        assert phone.collected == {"device_os": "iOS 17.3", "app_version": "2.1.0", "push_enabled": True}
        assert phone.attributes == {"theme": "dark"}

        # The second sign-in came with a new anonymousId: the SDK reset between the users (its
        # clearIdentify / reset), so the device left Dana there and Sam converted the new
        # anonymous session; nothing was switched away from Dana.
        [converted] = ws.merges("u-100")
        assert (converted.kind, converted.target) == ("converted", dana.person_id)
        assert converted.source == dana.anonymous_ids[0]
        [sam_converted] = ws.merges("u-200")
        assert (sam_converted.kind, sam_converted.target) == ("converted", sam.person_id)
        assert sam_converted.source in sam.anonymous_ids

        # The track "Added to Cart" and the screen are ignored: they leave no event.
        assert events(ws, "u-100") == [
            ("ProfileAttributesChanged", DEVICE, {"set": {"guest_cart": 2}, "set_once": {}, "unset": [],
                                          "sdk_anonymous_id": "anon-1"},
             [("guest_cart", None, 2)], []),
            ("DeviceTokenRegistered", DEVICE, {"token": "apns-1", "platform": "ios"}, [], []),
            ("DeviceAttributesCollected", DEVICE,
             {"attributes": {"device_os": "iOS 17.2", "app_version": "2.1.0", "push_enabled": True}}, [], []),
            ("DeviceAttributesChanged", DEVICE, {"attributes": {"theme": "dark"}}, [], []),
            ("Identified", DEVICE, {"user_id": "u-100",
                                    "traits": {"email": "dana@example.com", "first_name": "Dana"}},
             [("email", None, "dana@example.com"), ("first_name", None, "Dana")], ["converted"]),
            ("Identified", DEVICE, {"user_id": "u-100", "traits": {"plan": "pro"}},
             [("plan", None, "pro")], []),
        ]
        assert events(ws, "u-200") == [
            # The reset the new anonymousId implies opens Sam's session on the device.
            ("IdentityCleared", DEVICE, {"generation": 1, "sdk_anonymous_id": "anon-2"}, [], []),
            ("Identified", DEVICE, {"user_id": "u-200", "traits": {"email": "sam@example.com"}},
             [("email", None, "sam@example.com")], ["converted"]),
            ("DeviceTokenRegistered", DEVICE, {"token": "apns-2", "platform": "ios"}, [], []),
            ("DeviceAttributesCollected", DEVICE, {"attributes": {"device_os": "iOS 17.3"}}, [], []),
        ]
        # Client times stay the client's (corrected by the server's receivedAt - the batch's
        # sentAt, a few milliseconds on loopback), not the time of the upload.
        first = ws.history("u-100")[0].timestamp
        assert abs(first - T0) < timedelta(seconds=2)


@pytest.mark.parametrize("kind", sorted(CLIENTS))
def test_each_client_on_sqlite(serve: Any, tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path}/identity.db"
    run(serve, url, CLIENTS[kind])
    check(url)


def test_customerio_on_postgres(serve: Any, postgres: TemporaryPostgres) -> None:
    url = postgres.url("idstitch_tests") + "?schema=serve_clients"
    run(serve, url, CLIENTS["customerio-bearer-gzip"])
    check(url)
