"""One envelope rule: a batch envelope unwrapped as a dict (``adapters.batches.unwrap``, what
``idstitch serve`` and ingest's dict path use) gives the messages its JSON line gives (the
typed path ingest reads files with), for any envelope."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from idstitch.adapters.batches import messages_of, unwrap

times = st.sampled_from(["2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00Z"])
values = st.none() | st.text(max_size=4) | st.integers(0, 9)
contexts = st.fixed_dictionaries({}, optional={
    "app": st.none() | st.fixed_dictionaries({}, optional={"version": values}),
    "os": st.none() | st.fixed_dictionaries({}, optional={"name": values, "version": values}),
    "locale": values, "timezone": values,
    "device": st.none() | st.fixed_dictionaries({"id": st.sampled_from(["d1", "d2"])},
                                                optional={"model": values})})
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["identify", "track"]), "anonymousId": st.just("a1")},
    optional={"userId": st.sampled_from(["u1", "u2"]), "sentAt": st.none() | times,
              "context": st.none() | contexts, "event": st.just("Device Created or Updated"),
              "properties": st.just({"token": "t1"})})
envelopes = st.fixed_dictionaries({"batch": st.lists(messages, max_size=4)},
                                  optional={"sentAt": st.none() | times, "context": st.none() | contexts})


@given(envelopes)
def test_the_dict_rule_is_the_line_rule(body: dict[str, Any]) -> None:
    by_line = messages_of(msgspec.json.encode(body))
    assert messages_of(body) == by_line
    # What serve hands ingest: each message of the unwrapped envelope as a line of its own.
    assert [m for item in unwrap(body) for m in messages_of(msgspec.json.encode(item))] == by_line


def test_a_message_keeps_its_own_sent_at_and_context_fields() -> None:
    body = {"sentAt": "2026-01-01T00:00:00Z", "context": {"locale": "de", "timezone": "UTC"},
            "batch": [{"type": "track", "sentAt": "2026-02-02T00:00:00Z", "context": {"locale": "fr"}},
                      {"type": "track", "sentAt": None, "context": {"timezone": None}}]}
    first, second = unwrap(body)
    assert first["sentAt"] == "2026-02-02T00:00:00Z"
    assert first["context"] == {"locale": "fr", "timezone": "UTC"}
    assert second["sentAt"] == "2026-01-01T00:00:00Z"  # a null sentAt is none
    assert second["context"] == {"locale": "de", "timezone": "UTC"}
