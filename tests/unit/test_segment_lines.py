"""Ingest's reading of a JSON line (``decode_line``: the context kept as its text, decoded once
per distinct text and shared) maps every line to exactly what ``decode`` maps it to: the same
commands, or the same refusal naming the same field for the same reason."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from idstitch.adapters import context as context_module
from idstitch.adapters.segment import Line, decode, decode_line, to_commands
from idstitch.domain.commands import CollectDeviceAttributes, Command

from idstitch.errors import InvalidCommand

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.just(2**70),
                    st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.text(max_size=6), st.just(""))
ANY = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=2),
                                                   st.dictionaries(st.text(max_size=3), inner,
                                                                   max_size=2)), max_leaves=4)


def part(fields: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A context object (its known fields, with the right types or any JSON), or any JSON."""
    return st.one_of(st.fixed_dictionaries({}, optional={k: st.one_of(v, ANY)
                                                        for k, v in fields.items()}), ANY)


CONTEXTS = st.one_of(st.none(), ANY, st.fixed_dictionaries({}, optional={
    "device": part({"id": st.sampled_from(["dev-1", "dev-2"]), "token": st.just("tok"),
                    "type": st.just("ios"), "model": SCALARS}),
    "app": part({"version": st.sampled_from(["1.0", "1.1"])}),
    "os": part({"name": st.just("iOS"), "version": SCALARS}),
    "network": part({"wifi": st.booleans(), "cellular": SCALARS, "carrier": SCALARS}),
    "screen": part({"width": st.integers(0, 4000), "density": SCALARS}),
    "locale": SCALARS, "timezone": SCALARS,
    "traits": st.one_of(st.dictionaries(st.sampled_from(["email", "plan"]), SCALARS), ANY),
    "library": ANY,
}))

MESSAGES = st.fixed_dictionaries({
    "type": st.sampled_from(["identify", "track", "screen", "nope"]),
}, optional={
    "event": st.sampled_from(["Device Created or Updated", "Device Deleted", "Other"]),
    "userId": st.one_of(st.sampled_from(["u1", "a@b.co"]), SCALARS),
    "anonymousId": st.sampled_from(["anon-1", "dev-1", ""]),
    "messageId": st.sampled_from(["m1", "m2"]),
    "timestamp": st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01T10:00:00", "x"]),
    "traits": st.one_of(st.dictionaries(st.sampled_from(["email", "plan"]), SCALARS), ANY),
    "properties": st.one_of(st.dictionaries(st.sampled_from(
        ["token", "device_os", "push_enabled", "prefs"]), SCALARS), ANY),
    "context": CONTEXTS,
})


def outcome(line: bytes, decoder: Any) -> list[Command] | tuple[str, str] | None:
    try:
        return to_commands(decoder(line))
    except InvalidCommand as e:
        return (e.field, e.reason)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
def test_a_line_maps_as_the_decoded_message_does(message: dict[str, Any]) -> None:
    line = json.dumps(message).encode()
    expected = outcome(line, decode)
    assert outcome(line, decode_line) == expected
    # The second time its context comes from the shared cache: the same answer.
    assert outcome(line, decode_line) == expected
    assert outcome(line.decode(), decode_line) == expected


def test_devices_repeating_a_context_share_its_attributes_and_nothing_else() -> None:
    context = {"device": {"id": "dev-1"}, "app": {"version": "1.0"}, "network": {"wifi": True}}
    lines = [json.dumps({"type": "identify", "userId": "u1", "messageId": f"m{n}",
                         "context": context}).encode() for n in range(2)]
    first, second = (to_commands(decode_line(line)) for line in lines)
    assert isinstance(decode_line(lines[0]), Line)
    assert first is not None and second is not None
    one, two = first[-1], second[-1]
    assert isinstance(one, CollectDeviceAttributes) and isinstance(two, CollectDeviceAttributes)
    assert one.context == {"app_version": "1.0", "network_wifi": True}
    assert one.context is two.context  # decoded once
    assert (one.message_id, two.message_id) == ("m0#context", "m1#context")
    # The same values with another type (1 is not True) are another text: not shared.
    other = json.dumps({"type": "identify", "userId": "u1", "messageId": "m3",
                        "context": {**context, "network": {"wifi": 1}}}).encode()
    third = to_commands(decode_line(other))
    assert third is not None and third[-1].context == {"app_version": "1.0", "network_wifi": 1}
    assert type(third[-1].context["network_wifi"]) is int


def test_a_context_with_traits_is_not_shared() -> None:
    """RudderStack's traits in the context become the identify's own: never shared."""
    line = json.dumps({"type": "identify", "userId": "u1", "anonymousId": "a1",
                       "context": {"traits": {"plan": "pro"}}}).encode()
    first, second = to_commands(decode_line(line)), to_commands(decode_line(line))
    assert first is not None and second is not None
    assert first[0].traits == {"plan": "pro"}  # type: ignore[union-attr]
    assert first[0].traits is not second[0].traits  # type: ignore[union-attr]


def test_the_shared_contexts_are_bounded() -> None:
    for n in range(context_module.CONTEXT_CACHE + 10):
        to_commands(decode_line(json.dumps({"type": "identify", "userId": "u1",
                                            "context": {"device": {"id": f"d{n}"}}})))
    assert 0 < len(context_module._contexts) <= context_module.CONTEXT_CACHE
