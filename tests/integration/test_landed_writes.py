"""A command never raises after its event was recorded without saying so (issue 16 item 4): a
policy mismatch refuses it before the append; an error of the catch-up after the append is a
WriteLanded naming the position where the write landed. On memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from idstitch.domain.events import Identified
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import IdentityProjection

from idstitch import bootstrap
from idstitch.errors import PolicyMismatch, WriteLanded
from idstitch.testing import recorded_events
from idstitch.workspace import Workspace

from .conftest import Exploding

WorkspaceFactory = Callable[..., Workspace]


def test_an_error_after_the_append_says_the_write_landed_and_where(
    make_ws: WorkspaceFactory,
) -> None:
    url = make_ws().url
    ws = Workspace(bootstrap.build(url, projections=[
        IdentityProjection(), DeviceAttributesProjection(), Exploding()]))
    try:
        ws.identify("phone", "ann")
        with pytest.raises(WriteLanded, match="landed at log position") as raised:
            ws.identify("phone", "boom")
        [*_, (position, event)] = recorded_events(ws)
        assert raised.value.position == position
        assert isinstance(event, Identified) and event.user_id == "boom"
        assert isinstance(raised.value.__cause__, RuntimeError)
    finally:
        ws.close()


def test_a_policy_mismatch_refuses_a_command_before_it_is_recorded(
    make_durable_ws: WorkspaceFactory,
) -> None:
    switching = make_durable_ws(anonymous_merge="switch")
    switching.identify("phone", "alice")
    make_durable_ws(switching.url, anonymous_merge="merge")  # rebuilds the rows under merge
    head = len(recorded_events(switching))
    with pytest.raises(PolicyMismatch):
        switching.identify("tablet", "alice")
    with pytest.raises(PolicyMismatch):
        switching.set_profile_attributes("phone", {"plan": "pro"})
    assert len(recorded_events(switching)) == head  # nothing recorded


def test_a_policy_mismatch_refuses_a_command_that_would_record_nothing(
    make_durable_ws: WorkspaceFactory,
) -> None:
    switching = make_durable_ws(anonymous_merge="switch")
    switching.set_profile_attributes("phone", {"plan": "pro"}, message_id="m1")
    make_durable_ws(switching.url, anonymous_merge="merge")
    with pytest.raises(PolicyMismatch):  # a duplicate: refused as any other command
        switching.set_profile_attributes("phone", {"plan": "pro"}, message_id="m1")


def test_a_policy_mismatch_met_inside_an_ingest_loses_no_message(
    make_durable_ws: WorkspaceFactory,
) -> None:
    """A message naming a cio_ id commits the batch before it first (its check reads persons):
    that commit's refusal stops the ingest, the messages before it still the ingest's."""
    switching = make_durable_ws(anonymous_merge="switch")
    switching.identify("phone", "alice")
    person = switching.profile("alice")
    assert person is not None
    make_durable_ws(switching.url, anonymous_merge="merge")
    head = len(recorded_events(switching))
    messages = [{"type": "identify", "userId": "bob", "anonymousId": "d1", "messageId": "m1"},
                {"type": "identify", "userId": f"cio_{person.person_id}",
                 "anonymousId": "tablet", "messageId": "m2"}]
    with pytest.raises(PolicyMismatch):
        switching.ingest(messages, parallel=False)
    assert len(recorded_events(switching)) == head
