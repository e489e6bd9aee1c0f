"""Real SDK traffic through ``idstitch serve`` that needs the ingest semantics of issue 13 §1-2.

These pass once ingest knows them (they are written to the issue's stated behaviour):

- a reset (Customer.io's ``clearIdentify()``, Segment's ``reset()``): the same device, a new
  ``anonymousId``, no ``userId``: a new anonymous session, not the person who logged out;
- the SDK's ``anonymousId`` as a lookup key for ``ws.profile``;
- a server-side identify with only a ``userId`` (no device, no anonymousId) updates that
  person, and creates it when unknown, without becoming one of its devices;
- ``ws.ingest`` itself takes a batch envelope, with the batch's ``sentAt`` applied;
- RudderStack's identify, whose traits travel only in ``context.traits``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from customerio.analytics import Client as CustomerIO
from rudderstack.analytics import Client as Rudder
from segment.analytics import Client as Segment

import idstitch
from idstitch.serve import unwrap_batch
from idstitch.testing import TemporaryPostgres

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
DEVICE = "iphone-1"
KEYS = ["seg-key", "pk_us_test123", "rudder-key"]


def ctx(token: str = "apns-1") -> dict[str, Any]:
    return {"device": {"id": DEVICE, "token": token, "type": "ios"}}


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def logout_then_next_user(client: Any) -> None:
    """Dana signs in and out (the SDK resets: a new anonymousId); a guest cart; Sam signs in."""
    client.identify(anonymous_id="anon-1", traits={"guest_cart": 1}, context=ctx(), timestamp=at(0))
    client.identify(user_id="u-100", anonymous_id="anon-1", traits={"email": "dana@example.com"},
                    context=ctx(), timestamp=at(1))
    # clearIdentify(): no call is sent; the next message carries a new anonymousId.
    client.identify(anonymous_id="anon-2", traits={"guest_cart": 2}, context=ctx(), timestamp=at(10))
    client.track(anonymous_id="anon-2", event="Product Viewed", context=ctx(), timestamp=at(11))
    client.identify(user_id="u-200", anonymous_id="anon-2", traits={"email": "sam@example.com"},
                    context=ctx(), timestamp=at(20))
    client.flush()
    client.shutdown()


def check_logout(url: str) -> None:
    with idstitch.open(url) as ws:
        dana, sam = ws.profile("u-100"), ws.profile("u-200")
        assert dana is not None and sam is not None
        # The guest cart after the logout is not Dana's.
        assert dana.attributes == {"guest_cart": 1, "email": "dana@example.com"}
        assert sam.attributes == {"guest_cart": 2, "email": "sam@example.com"}
        # Sam's sign-in converted the new anonymous session; no switch from Dana.
        assert [m.kind for m in ws.merges("u-200")] == ["converted"]
        assert "switched" not in [m.kind for m in ws.merges("u-100")]
        # The SDK's anonymousIds find the person each session belongs to.
        found_1, found_2 = ws.profile("anon-1"), ws.profile("anon-2")
        assert found_1 is not None and found_1.person_id == dana.person_id
        assert found_2 is not None and found_2.person_id == sam.person_id
        assert [d.device_id for d in sam.devices] == [DEVICE]
        assert dana.devices == []


def test_segment_reset_is_a_new_anonymous_session(serve: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/identity.db"
    server = serve(url, write_keys=KEYS)
    errors: list[Exception] = []
    logout_then_next_user(Segment("seg-key", host=server.url, on_error=lambda e, b: errors.append(e)))
    server.stop()
    assert errors == []
    check_logout(url)


def test_customerio_clear_identify_on_postgres(serve: Any, postgres: TemporaryPostgres) -> None:
    url = postgres.url("idstitch_tests") + "?schema=serve_sessions"
    server = serve(url, write_keys=KEYS)
    errors: list[Exception] = []
    logout_then_next_user(CustomerIO("pk_us_test123", host=server.url, gzip=True,
                                     on_error=lambda e, b: errors.append(e)))
    server.stop()
    assert errors == []
    check_logout(url)


def test_server_side_identify_with_only_a_user_id(serve: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/identity.db"
    server = serve(url, write_keys=KEYS)
    errors: list[Exception] = []
    phone = Segment("seg-key", host=server.url, on_error=lambda e, b: errors.append(e))
    phone.identify(user_id="u-100", anonymous_id="anon-1", traits={"plan": "trial"}, context=ctx(),
                   timestamp=at(0))
    phone.flush()
    # The backend's own library: no device, no anonymousId.
    backend = CustomerIO("pk_us_test123", host=server.url, on_error=lambda e, b: errors.append(e))
    backend.identify(user_id="u-100", traits={"plan": "enterprise"}, timestamp=at(60))
    backend.identify(user_id="u-999", traits={"email": "new@example.com"}, timestamp=at(61))
    backend.flush()
    backend.shutdown()
    phone.shutdown()
    server.stop()
    assert errors == []
    with idstitch.open(url) as ws:
        dana = ws.profile("u-100")
        assert dana is not None and dana.attributes == {"plan": "enterprise"}
        assert [d.device_id for d in dana.devices] == [DEVICE]  # the server stream is no device
        assert [c.event for c in ws.history("u-100")][-1] == "Identified"
        explained = ws.explain("u-100", "plan")
        assert explained is not None and explained.value == "enterprise"
        created = ws.profile("u-999")
        assert created is not None and created.attributes == {"email": "new@example.com"}
        assert created.devices == []


def test_ingest_applies_the_envelope_sent_at_as_the_endpoint_does(tmp_path: Path) -> None:
    ahead = datetime.now(UTC) + timedelta(hours=1)  # the device clock is an hour ahead
    envelope = {"sentAt": ahead.isoformat(), "batch": [
        {"type": "identify", "userId": "u-1", "timestamp": ahead.isoformat(),
         "context": {"device": {"id": "d-1"}}}]}
    with idstitch.open(f"sqlite:///{tmp_path}/a.db") as ws, \
            idstitch.open(f"sqlite:///{tmp_path}/b.db") as ref:
        report = ws.ingest([envelope])
        assert (report.accepted, report.rejected) == (1, [])
        ref.ingest(unwrap_batch(envelope))
        [change] = ws.history("u-1")
        [expected] = ref.history("u-1")
        assert change.timestamp is not None and expected.timestamp is not None
        assert abs(change.timestamp - datetime.now(UTC)) < timedelta(minutes=1)
        assert abs(change.timestamp - expected.timestamp) < timedelta(seconds=5)


def test_rudder_identify_traits_in_context(serve: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/identity.db"
    server = serve(url, write_keys=KEYS)
    errors: list[Exception] = []
    client = Rudder("rudder-key", host=server.url, on_error=lambda e, b: errors.append(e))
    client.identify(user_id="u-100", anonymous_id="anon-1", traits={"email": "dana@example.com"},
                    context=ctx(), timestamp=at(0))
    client.flush()
    client.shutdown()
    server.stop()
    assert errors == []
    with idstitch.open(url) as ws:
        dana = ws.profile("u-100")
        assert dana is not None and dana.attributes == {"email": "dana@example.com"}
