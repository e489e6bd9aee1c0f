"""The registry is the one list of projections (issue 14, section 1): a workspace built with any
set works with that set, each projection's configuration is a typed value, and each carries its
own rows format (a new format of one rebuilds only that one)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from idstitch.projections.base import ProjectionSpec, Registry
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import IdentityProjection
from idstitch.projections.identity.config import IdentityConfig

import idstitch
from idstitch import bootstrap
from idstitch.workspace import Workspace

CURRENT = IdentityProjection.rows_format


class IdentityRowsNext(IdentityProjection):
    """The identity projection as a release with a new identity rows layout would ship it."""

    rows_format = CURRENT + 1


def test_a_workspace_can_be_built_with_any_set_of_projections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'only-attributes.db'}"
    ws = Workspace(bootstrap.build(url, projections=[DeviceAttributesProjection()]))
    try:
        ws.set_device_attributes("d1", {"theme": "dark"})
        assert ws.projections.names == ["device_attributes"]
        dump = ws.dump()
        assert list(dump) == ["a"] and len(dump["a"]) == 1
        # No projection of this set owns persons or devices: the queries find none.
        assert ws.profile_of_device("d1") is None and ws.device("d1") is None
        assert ws.rows.position("identity") == 0  # never folded: not in the set
    finally:
        ws.close()


def test_bumping_the_identity_rows_rebuilds_only_the_identity_projection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bump.db'}"
    with idstitch.open(url) as ws:
        ws.identify("d1", "u1", {"plan": "pro"})
        ws.set_device_attributes("d1", {"theme": "dark"})
        before = {name: ws.rows.meta(name) for name in ("identity", "device_attributes")}
    assert before["identity"] is not None and f"rows={CURRENT}" in before["identity"]
    services = bootstrap.build(url, projections=[IdentityRowsNext("merge", "event"),
                                                 DeviceAttributesProjection()])
    ws = Workspace(services)
    try:
        identity = ws.rows.meta("identity")
        assert identity is not None and f"rows={CURRENT + 1}" in identity
        # A rebuild starts a new life of the rows (a new epoch); the other projection's rows
        # were not touched: same meta, epoch included.
        assert identity != before["identity"]
        assert ws.rows.meta("device_attributes") == before["device_attributes"]
        profile = ws.profile("u1")
        assert profile is not None and profile.attributes == {"plan": "pro"}
        assert profile.devices[0].attributes == {"theme": "dark"}
    finally:
        ws.close()


def test_a_projection_configuration_is_a_typed_value_that_travels_as_json() -> None:
    registry = Registry([IdentityProjection("switch", "position"), DeviceAttributesProjection()])
    wire = msgspec.json.encode(registry.specs())
    again = Registry.from_specs(msgspec.json.decode(wire, type=list[ProjectionSpec]))
    identity = again["identity"]
    assert isinstance(identity, IdentityProjection)
    assert identity.config() == IdentityConfig("switch", "position")
    assert (identity.policy, identity.ids) == ("switch", "position")
    bad = ProjectionSpec(registry.specs()[0].topic, msgspec.Raw(b'["sometimes","event"]'))
    with pytest.raises(msgspec.ValidationError, match=r"sometimes|Expected"):
        Registry.from_specs([bad])
