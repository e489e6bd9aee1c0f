"""The raw path of ``/v1/batch`` (``idstitch.serve.lines``) gives the messages the dict path
(``unwrap_batch`` + ``stamp``) gives, for any batch."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idstitch.serve.envelope import MESSAGE_LIMIT, stamp, unwrap_batch
from idstitch.serve.lines import BadBody, envelope, fast, line, names_person

RECEIVED = "2026-03-01T09:00:00+00:00"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["cio_p1", "cio_"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
keys = (st.sampled_from(["type", "userId", "sentAt", "receivedAt", "timestamp", "writeKey", "x",
                         "cio_sdk_version"])
        | st.text(max_size=6))
messages = st.dictionaries(keys, json_values, max_size=6) | json_values
batches = st.fixed_dictionaries(
    {"batch": st.lists(messages, max_size=5)},
    optional={"sentAt": st.none() | st.text(max_size=10), "writeKey": st.text(max_size=5)})


def by_dicts(body: dict[str, Any]) -> list[Any]:
    """What the dict path makes of a body, messages as dicts (or the refused item itself)."""
    out = unwrap_batch(body)
    stamp(out, RECEIVED)
    return out


@given(batches)
def test_the_raw_path_makes_the_messages_the_dict_path_makes(body: dict[str, Any]) -> None:
    raw = msgspec.json.encode(body)
    box = envelope(raw)
    assert fast(box)
    expected = by_dicts(msgspec.json.decode(raw))
    for item, want in zip(box.batch, expected, strict=True):
        text, reason, person = line(item, bytes(box.sent_at), msgspec.json.encode(RECEIVED))
        if not isinstance(want, dict):
            assert text is None and reason is not None and "must be a JSON object" in reason
        elif "writeKey" in msgspec.json.decode(item) or (
                msgspec.json.decode(item).get("sentAt", 0) is None and body.get("sentAt") is not None):
            assert (text, reason) == (None, None)  # the dict path takes these
        else:
            assert text is not None and msgspec.json.decode(text) == want
            # The writer catches the projections up first exactly for a userId naming a person.
            assert person == names_person(want.get("userId"))


def test_a_batch_context_takes_the_dict_path() -> None:
    assert not fast(envelope(b'{"batch": [], "context": {"ip": "1.2.3.4"}}'))


def test_a_message_over_the_limit_is_refused_with_its_size() -> None:
    item = msgspec.Raw(msgspec.json.encode({"type": "track", "pad": "x" * MESSAGE_LIMIT}))
    text, reason, _ = line(item, b"", b'"now"')
    assert text is None and reason is not None and "32 KB" in reason


def test_the_limit_is_on_the_message_as_sent_not_on_the_stamps_spliced_in() -> None:
    def padded(size: int) -> msgspec.Raw:
        head = msgspec.json.encode({"type": "track", "pad": ""})
        return msgspec.Raw(head[:-2] + b"x" * (size - len(head)) + b'"}')

    at_limit, over = padded(MESSAGE_LIMIT), padded(MESSAGE_LIMIT + 1)
    assert (len(at_limit), len(over)) == (MESSAGE_LIMIT, MESSAGE_LIMIT + 1)
    text, reason, _ = line(at_limit, b'"2026-03-01T09:00:00Z"', msgspec.json.encode(RECEIVED))
    assert reason is None and text is not None and len(text) > MESSAGE_LIMIT
    assert line(over, b"", b'"now"')[1] == (f"message: is {MESSAGE_LIMIT + 1} bytes, more than "
                                            "the 32 KB a message may hold")


@pytest.mark.parametrize(("body", "why"), [
    (b"[1]", "must be a JSON object"), (b'{"batch": 3}', "batch: must be a list"),
    (b"{}", "batch: must be a list"), (b'{"batch": [1,', "not JSON")])
def test_bodies_that_are_not_envelopes(body: bytes, why: str) -> None:
    with pytest.raises(BadBody, match=why):
        envelope(body)


@pytest.mark.parametrize(("message", "person"), [
    (b'{"type": "identify", "userId": "cio_p1"}', True),
    (b'{"type": "identify", "userId": "cio\\u005fp1"}', True),  # escaped: still the same id
    (b'{"type": "identify", "userId": "u-1"}', False),
    # Every device message carries this property: it names nobody.
    (b'{"type": "track", "properties": {"cio_sdk_version": "3.5.1"}, "userId": "u-1"}', False),
])
def test_a_message_names_a_person_only_by_its_user_id(message: bytes, person: bool) -> None:
    assert line(msgspec.Raw(message), b"", b'"now"')[2] is person
