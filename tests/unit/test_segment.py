"""api.md "Bulk": Segment messages, as Customer.io's mobile SDKs send them, mapped message by message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from idstitch.adapters.batches import messages_of
from idstitch.adapters.segment import (
    COLLECTED_KEYS,
    CONTEXT_ATTRIBUTES,
    Message,
    context_attributes,
    decode,
    to_commands,
)
from idstitch.domain.commands import (
    CollectDeviceAttributes,
    Command,
    Identify,
    RegisterDeviceToken,
    RemoveDeviceToken,
    SetDeviceAttributes,
    SetProfileAttributes,
)
from idstitch.domain.ids import server_stream_id

from idstitch.errors import InvalidCommand

TS = "2026-03-01T10:00:00.000Z"
SENT = "2026-03-01T10:00:05+02:00"


def message(**fields: Any) -> dict[str, Any]:
    """A message as the SDK sends it, with the common fields filled in."""
    base: dict[str, Any] = {"messageId": "m1", "timestamp": TS, "sentAt": SENT,
                            "anonymousId": "anon-1", "context": {"device": {"id": "dev-1"}}}
    base.update(fields)
    return base


def device_message(event: str, properties: dict[str, Any] | None = None,
                   device: dict[str, Any] | None = None) -> dict[str, Any]:
    dev = {"id": "dev-1", "token": "tok-1", "type": "ios"} if device is None else device
    return message(type="track", event=event, properties=properties or {}, context={"device": dev})


def calls_of(raw: dict[str, Any] | str | bytes) -> list[Command] | None:
    return to_commands(decode(raw))


def common(message_id: str | None = "m1") -> dict[str, Any]:
    return {"message_id": message_id, "timestamp": datetime(2026, 3, 1, 10, tzinfo=UTC),
            "sent_at": datetime(2026, 3, 1, 8, 0, 5, tzinfo=UTC)}


# Decoding: the three input forms agree.

def test_decode_from_dict_str_and_bytes_agree() -> None:
    raw = message(type="identify", userId="u1", traits={"first_name": "Ada", "plan": {"tier": 2}},
                  extra={"ignored": True})
    line = msgspec.json.encode(raw)
    decoded = [decode(raw), decode(line.decode()), decode(line)]
    assert decoded[0] == decoded[1] == decoded[2]
    msg = decoded[0]
    assert isinstance(msg, Message)
    assert (msg.type, msg.user_id, msg.anonymous_id, msg.message_id) == ("identify", "u1", "anon-1", "m1")
    assert msg.traits == {"first_name": "Ada", "plan": {"tier": 2}}
    assert msg.context is not None and msg.context.device is not None
    assert msg.context.device.id == "dev-1"


def test_timestamps_are_aware_datetimes_with_their_offset() -> None:
    msg = decode(message(type="track", event="x"))
    assert msg.timestamp == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert msg.sent_at == datetime(2026, 3, 1, 10, 0, 5, tzinfo=timezone(timedelta(hours=2)))


def test_decode_from_dict_accepts_aware_datetime_objects() -> None:
    at = datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert decode(message(type="track", timestamp=at)).timestamp == at


# identify

def test_identify_with_user_id() -> None:
    calls = calls_of(message(type="identify", userId="u1", traits={"email": "a@example.com"}))
    assert calls == [Identify(device_id="dev-1", user_id="u1", traits={"email": "a@example.com"},
                              sdk_anonymous_id="anon-1", **common())]


def test_identify_without_traits_passes_none() -> None:
    calls = calls_of(message(type="identify", userId="u1"))
    assert calls == [Identify(device_id="dev-1", user_id="u1", traits=None,
                              sdk_anonymous_id="anon-1", **common())]


def test_identify_traits_in_the_context_are_read_when_the_root_has_none() -> None:
    """RudderStack's identify carries the traits only in ``context.traits``; root traits win."""
    ctx = {"device": {"id": "dev-1"}, "traits": {"plan": "pro"}}
    calls = calls_of(message(type="identify", userId="u1", context=ctx))
    assert calls is not None and isinstance(calls[0], Identify)
    assert calls[0].traits == {"plan": "pro"}
    calls = calls_of(message(type="identify", userId="u1", traits={"plan": "free"}, context=ctx))
    assert calls is not None and isinstance(calls[0], Identify)
    assert calls[0].traits == {"plan": "free"}


def test_the_sdk_anonymous_id_is_the_session_only_beside_a_device_id() -> None:
    """With a device id, the anonymousId names the SDK session; without, it is the device."""
    anonymous = calls_of(message(type="identify", traits={"a": 1}))
    assert anonymous is not None and isinstance(anonymous[0], SetProfileAttributes)
    assert anonymous[0].sdk_anonymous_id == "anon-1"
    alone = message(type="identify", traits={"a": 1})
    del alone["context"]
    calls = calls_of(alone)
    assert calls is not None and isinstance(calls[0], SetProfileAttributes)
    assert (calls[0].device_id, calls[0].sdk_anonymous_id) == ("anon-1", None)
    same = calls_of(message(type="identify", userId="u1", anonymousId="dev-1"))
    assert same is not None and isinstance(same[0], Identify)
    assert same[0].sdk_anonymous_id is None
    empty = calls_of(message(type="identify", userId="u1", anonymousId=""))
    assert empty is not None and isinstance(empty[0], Identify)
    assert empty[0].sdk_anonymous_id is None


def test_a_server_side_identify_lands_on_the_users_server_stream() -> None:
    raw = {"type": "identify", "userId": "u-100", "traits": {"plan": "pro"}, "messageId": "s1"}
    assert calls_of(raw) == [Identify(device_id=server_stream_id("u-100"), user_id="u-100",
                                      traits={"plan": "pro"}, server=True, message_id="s1")]
    long_id = "x" * 150
    calls = calls_of(raw | {"userId": long_id})
    assert calls is not None and isinstance(calls[0], Identify)
    assert calls[0].device_id == server_stream_id(long_id) and len(calls[0].device_id) <= 150


def test_a_server_stream_id_does_not_show_the_user_id() -> None:
    # Every event repeats its device id in plaintext: a forgotten user's id must not be in it.
    stream = server_stream_id("ann@example.com")
    assert stream.startswith("server:") and "ann" not in stream and len(stream) == 39
    assert stream == server_stream_id("ann@example.com") != server_stream_id("bob@example.com")


def test_a_server_side_track_is_still_ignored() -> None:
    assert calls_of({"type": "track", "event": "Order Completed", "userId": "u-100"}) is None


def test_identify_anonymous_only_sets_profile_attributes_on_the_anonymous_id_device() -> None:
    raw = message(type="identify", traits={"favorite_food": "pizza"})
    del raw["context"]
    assert calls_of(raw) == [
        SetProfileAttributes(device_id="anon-1", traits={"favorite_food": "pizza"}, **common())
    ]


def test_context_device_id_is_preferred_over_anonymous_id() -> None:
    calls = calls_of(message(type="identify", traits={"a": 1}))
    assert calls is not None and [c.device_id for c in calls] == ["dev-1"]


def test_anonymous_id_is_the_device_when_context_device_has_no_id() -> None:
    calls = calls_of(message(type="identify", userId="u1", context={"device": {"type": "ios"}}))
    assert calls is not None and calls[0].device_id == "anon-1"


def test_message_without_message_id_or_times_maps_to_none() -> None:
    calls = calls_of({"type": "identify", "userId": "u1", "anonymousId": "a1"})
    assert calls == [Identify(device_id="a1", user_id="u1", traits=None, message_id=None,
                              timestamp=None, sent_at=None)]


# track "Device Created or Updated"

def test_device_created_token_from_context_and_platform_from_device_type() -> None:
    calls = calls_of(device_message("Device Created or Updated"))
    assert calls == [RegisterDeviceToken(device_id="dev-1", token="tok-1", platform="ios", **common())]


def test_device_created_token_from_properties_when_context_has_none() -> None:
    calls = calls_of(device_message("Device Created or Updated", {"token": "tok-p"},
                                    device={"id": "dev-1", "type": "android"}))
    assert calls == [
        RegisterDeviceToken(device_id="dev-1", token="tok-p", platform="android", **common())
    ]


def test_context_token_wins_over_properties_token() -> None:
    calls = calls_of(device_message("Device Created or Updated", {"token": "tok-p"}))
    assert calls is not None and isinstance(calls[0], RegisterDeviceToken)
    assert calls[0].token == "tok-1"


def test_device_created_without_platform() -> None:
    calls = calls_of(device_message("Device Created or Updated", device={"id": "dev-1", "token": "t"}))
    assert calls is not None and isinstance(calls[0], RegisterDeviceToken)
    assert calls[0].platform is None


def test_device_created_splits_collected_and_custom_attributes() -> None:
    collected = {key: f"v-{key}" for key in sorted(COLLECTED_KEYS)}
    custom = {"favorite_color": "green", "settings": {"dark_mode": True}, "cleared": None}
    calls = calls_of(device_message("Device Created or Updated",
                                    {**collected, **custom, "token": "tok-p"}))
    assert calls == [
        RegisterDeviceToken(device_id="dev-1", token="tok-1", platform="ios", **common()),
        CollectDeviceAttributes(device_id="dev-1", context=collected, **common("m1#collected")),
        SetDeviceAttributes(device_id="dev-1", attributes=custom, **common("m1#custom")),
    ]


def test_collected_keys_are_the_auto_tracked_device_attributes() -> None:
    assert {
        "device_os", "device_model", "device_manufacturer", "app_version", "cio_sdk_version",
        "device_locale", "push_enabled", "timezone", "screen_width", "screen_height",
        "network_wifi", "network_cellular", "network_bluetooth", "ip",
    } == COLLECTED_KEYS


def test_only_collected_attributes_gives_no_custom_call() -> None:
    calls = calls_of(device_message("Device Created or Updated", {"device_os": "17.2", "push_enabled": True}))
    assert calls is not None and [type(c) for c in calls] == [
        RegisterDeviceToken, CollectDeviceAttributes]
    assert isinstance(calls[1], CollectDeviceAttributes)
    assert calls[1].context == {"device_os": "17.2", "push_enabled": True}


def test_only_custom_attributes_gives_no_collected_call() -> None:
    calls = calls_of(device_message("Device Created or Updated", {"tier": "gold"}))
    assert calls is not None and [type(c) for c in calls] == [
        RegisterDeviceToken, SetDeviceAttributes]
    assert calls[1].message_id == "m1#custom"


@pytest.mark.parametrize("properties", [{}, None, {"token": "tok-p"}])
def test_auto_tracking_off_sends_empty_properties_and_only_the_token_is_registered(
        properties: dict[str, Any] | None) -> None:
    raw = device_message("Device Created or Updated")
    raw["properties"] = properties
    calls = calls_of(raw)
    assert calls is not None and [type(c) for c in calls] == [RegisterDeviceToken]


def test_split_calls_without_message_id_carry_none() -> None:
    raw = device_message("Device Created or Updated", {"device_os": "17", "tier": "gold"})
    del raw["messageId"]
    calls = calls_of(raw)
    assert calls is not None and [c.message_id for c in calls] == [None, None, None]


def test_device_message_on_the_anonymous_id_when_context_has_no_device_id() -> None:
    calls = calls_of(device_message("Device Created or Updated", device={"token": "t"}))
    assert calls is not None and calls[0].device_id == "anon-1"


# track "Device Deleted"

def test_device_deleted_removes_the_context_token_with_its_sent_at() -> None:
    """Its client time is skew-corrected like every other message's."""
    assert calls_of(device_message("Device Deleted")) == [
        RemoveDeviceToken(device_id="dev-1", token="tok-1", reason="deleted", **common())
    ]


def test_device_deleted_token_from_properties() -> None:
    calls = calls_of(device_message("Device Deleted", {"token": "tok-p"}, device={"id": "dev-1"}))
    assert calls is not None and isinstance(calls[0], RemoveDeviceToken)
    assert calls[0].token == "tok-p"


# Ignored messages

@pytest.mark.parametrize("raw", [
    message(type="track", event="Order Completed", properties={"total": 3}),
    message(type="track"),
    message(type="track", event="device created or updated"),
    message(type="screen", name="Home"),
    message(type="page", name="Pricing"),
    message(type="group", groupId="g1"),
    message(type="alias", userId="u2", previousId="u1"),
], ids=["other track", "track without event", "event name differs in case", "screen", "page",
        "group", "alias"])
def test_other_messages_are_ignored(raw: dict[str, Any]) -> None:
    assert calls_of(raw) is None


def test_ignored_messages_need_no_device() -> None:
    assert to_commands(decode({"type": "screen", "name": "Home"})) is None


# Bad input: each names its field.

NAIVE = msgspec.json.encode(message(type="identify", userId="u1", timestamp="2026-03-01T10:00:00"))

BAD_DECODE: list[tuple[str, dict[str, Any] | str | bytes, str]] = [
    ("not JSON bytes", b"{not json", "message"),
    ("not JSON str", "", "message"),
    ("trailing garbage", b'{"type": "track"} x', "message"),
    ("JSON array", b'[{"type": "track"}]', "message"),
    ("JSON string", b'"identify"', "message"),
    ("missing type", b'{"userId": "u1"}', "type"),
    ("missing type in a dict", {"userId": "u1"}, "type"),
    ("unknown type", b'{"type": "foo"}', "type"),
    ("type not a string", {"type": 5}, "type"),
    ("userId a number", b'{"type": "identify", "userId": 42}', "userId"),
    ("userId a number in a dict", {"type": "identify", "userId": 42}, "userId"),
    ("naive timestamp", NAIVE, "timestamp"),
    ("naive timestamp in a dict", message(type="identify", timestamp=datetime(2026, 3, 1)), "timestamp"),
    ("naive sentAt", message(type="identify", sentAt="2026-03-01T10:00:00"), "sentAt"),
    ("timestamp not a time", message(type="identify", timestamp="yesterday"), "timestamp"),
    ("device id a number", message(type="identify", context={"device": {"id": 7}}), "context.device.id"),
    ("device a list", message(type="track", context={"device": []}), "context.device"),
    ("traits a list", message(type="identify", traits=["a"]), "traits"),
    ("properties a string", message(type="track", properties="x"), "properties"),
]


@pytest.mark.parametrize(("raw", "field"), [(raw, field) for _, raw, field in BAD_DECODE],
                         ids=[name for name, _, _ in BAD_DECODE])
def test_bad_input_is_rejected_naming_the_field(raw: dict[str, Any] | str | bytes, field: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        decode(raw)
    assert caught.value.field == field
    assert caught.value.reason


def test_unknown_type_says_which_types_exist() -> None:
    with pytest.raises(InvalidCommand, match=r"'foo'.*identify, track") as caught:
        decode('{"type": "foo"}')
    assert caught.value.field == "type"


def test_decode_errors_chain_the_msgspec_error() -> None:
    with pytest.raises(InvalidCommand) as caught:
        decode(b"{")
    assert isinstance(caught.value.__cause__, msgspec.DecodeError)


BAD_MAPPING: list[tuple[str, dict[str, Any], str]] = [
    ("track device message without device",
     {"type": "track", "event": "Device Created or Updated", "context": {"device": {"token": "t"}}},
     "context.device.id"),
    ("identify with neither userId nor anonymousId",
     {"type": "identify", "traits": {"a": 1}, "context": {"device": {"id": "dev-1"}}}, "userId"),
    ("Device Created or Updated without token",
     device_message("Device Created or Updated", {"device_os": "17"}, device={"id": "dev-1"}),
     "context.device.token"),
    ("Device Deleted without token", device_message("Device Deleted", device={"id": "dev-1"}),
     "context.device.token"),
]


@pytest.mark.parametrize(("raw", "field"), [(raw, field) for _, raw, field in BAD_MAPPING],
                         ids=[name for name, _, _ in BAD_MAPPING])
def test_unmappable_messages_are_rejected_naming_the_field(raw: dict[str, Any], field: str) -> None:
    msg = decode(raw)
    with pytest.raises(InvalidCommand) as caught:
        to_commands(msg)
    assert caught.value.field == field


# Batch envelopes (issue 13 §2): messages_of, the unwrapping the ingest and a server share.

def test_messages_of_a_message_is_that_message() -> None:
    raw = message(type="identify", userId="u1")
    assert messages_of(raw) == [decode(raw)]
    assert messages_of(msgspec.json.encode(raw)) == [decode(raw)]


def test_messages_of_an_envelope_gives_its_sent_at_to_messages_without_one() -> None:
    own = message(type="identify", userId="u1")
    bare = {k: v for k, v in message(type="identify", userId="u2", messageId="m2").items()
            if k != "sentAt"}
    body = {"batch": [own, bare], "sentAt": "2026-03-01T11:00:00Z", "writeKey": "w"}
    for item in (body, msgspec.json.encode(body), msgspec.json.encode(body).decode()):
        first, second = messages_of(item)
        assert isinstance(first, Message) and isinstance(second, Message)
        assert first.sent_at == datetime(2026, 3, 1, 8, 0, 5, tzinfo=UTC)
        assert second.sent_at == datetime(2026, 3, 1, 11, tzinfo=UTC)


def test_messages_of_an_envelope_keeps_a_bad_message_to_itself() -> None:
    body = {"batch": [{"type": "fly"}, message(type="identify", userId="u1"), 3]}
    bad, good, worse = messages_of(body)
    assert isinstance(bad, InvalidCommand) and bad.field == "type"
    assert isinstance(good, Message) and good.user_id == "u1"
    assert isinstance(worse, InvalidCommand) and worse.field == "message"


def test_messages_of_a_blank_line_is_nothing_and_of_a_broken_envelope_one_error() -> None:
    assert messages_of("") == messages_of(b" \n") == []
    (error,) = messages_of('{"batch": {"type": "identify"}}')
    assert isinstance(error, InvalidCommand) and error.field == "batch"
    (error,) = messages_of({"batch": [], "sentAt": "soon"})
    assert isinstance(error, InvalidCommand) and error.field == "sentAt"


# Context as collected device attributes (issue 13 §2).

FULL_CONTEXT = {
    "app": {"version": "2.4.1", "build": "99"},
    "os": {"name": "iOS", "version": "17.2"},
    "locale": "en-US", "timezone": "Europe/Berlin",
    "network": {"wifi": True, "cellular": False, "bluetooth": False, "carrier": "T-Mobile"},
    "screen": {"width": 390, "height": 844, "density": 3},
    "device": {"id": "dev-1", "model": "iPhone15,2", "manufacturer": "Apple", "type": "ios"},
    "library": {"name": "analytics-swift", "version": "1.5"},
}
FULL_COLLECTED = {
    "app_version": "2.4.1", "device_os_name": "iOS", "device_os": "17.2",
    "device_locale": "en-US", "timezone": "Europe/Berlin", "network_wifi": True,
    "network_cellular": False, "network_bluetooth": False, "network_carrier": "T-Mobile",
    "screen_width": 390, "screen_height": 844, "screen_density": 3,
    "device_model": "iPhone15,2", "device_manufacturer": "Apple",
}


def test_context_fields_become_collected_attributes_with_customer_io_names() -> None:
    assert context_attributes(decode(message(type="track", context=FULL_CONTEXT)).context) == (
        FULL_COLLECTED)
    assert {name for _, name in CONTEXT_ATTRIBUTES} == set(FULL_COLLECTED)
    partial = decode(message(type="track", context={"device": {"id": "d"}, "locale": "de-DE",
                                                    "network": {"wifi": False}}))
    assert context_attributes(partial.context) == {"device_locale": "de-DE", "network_wifi": False}
    assert context_attributes(None) == {}


def test_an_identify_with_context_collects_it_changes_only() -> None:
    calls = calls_of(message(type="identify", userId="u1", context=FULL_CONTEXT))
    assert calls is not None and len(calls) == 2
    assert calls[1] == CollectDeviceAttributes(device_id="dev-1", context=FULL_COLLECTED,
                                               changes_only=True, **common("m1#context"))


def test_device_messages_collect_their_context_last() -> None:
    updated = calls_of(device_message("Device Created or Updated", {"push_enabled": True},
                                      device={"id": "dev-1", "token": "t", "model": "Pixel 8"}))
    assert updated is not None and [type(c) for c in updated] == [
        RegisterDeviceToken, CollectDeviceAttributes, CollectDeviceAttributes]
    last = updated[-1]
    assert isinstance(last, CollectDeviceAttributes) and last.changes_only
    assert last.context == {"device_model": "Pixel 8"}
    deleted = calls_of(device_message("Device Deleted", device={"id": "dev-1", "token": "t",
                                                               "manufacturer": "Google"}))
    assert deleted is not None and [type(c) for c in deleted] == [
        RemoveDeviceToken, CollectDeviceAttributes]


def test_a_message_without_context_attributes_collects_nothing() -> None:
    calls = calls_of(message(type="identify", userId="u1"))
    assert calls is not None and len(calls) == 1
    server = calls_of({"type": "identify", "userId": "u1", "context": {"locale": "en-US"}})
    assert server is not None and len(server) == 1  # a backend's context is not a device's


def test_context_values_the_properties_collect_already_are_left_out() -> None:
    raw = device_message("Device Created or Updated", {"app_version": "2.0", "device_os": "17"},
                         device={"id": "dev-1", "token": "t"})
    raw["context"] |= {"app": {"version": "2.0"}, "os": {"version": "17.1"}}
    calls = calls_of(raw)
    assert calls is not None
    last = calls[-1]
    assert isinstance(last, CollectDeviceAttributes) and last.changes_only
    assert last.context == {"device_os": "17.1"}  # the differing one, recorded after: it wins
    raw["context"]["os"] = {"version": "17"}
    same = calls_of(raw)
    assert same is not None and not any(
        isinstance(c, CollectDeviceAttributes) and c.changes_only for c in same)
