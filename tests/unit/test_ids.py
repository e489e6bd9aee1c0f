"""Deterministic ids: the fast uuid5 must give exactly the standard library's ids."""

from __future__ import annotations

import copy
import pickle
from uuid import NAMESPACE_DNS, uuid5

from hypothesis import given
from hypothesis import strategies as st
from idstitch.domain.device import (
    DEVICE_NAMESPACE,
    anonymous_id_for,
    device_aggregate_id,
    uuid5_text,
)


@given(st.text(max_size=200))
def test_uuid5_text_equals_the_standard_library(name: str) -> None:
    assert uuid5_text(NAMESPACE_DNS.bytes, name) == str(uuid5(NAMESPACE_DNS, name))
    assert uuid5_text(DEVICE_NAMESPACE.bytes, name) == str(device_aggregate_id(name))


@given(st.text(max_size=200))
def test_an_aggregate_id_is_the_standard_librarys_uuid5(device_id: str) -> None:
    # Built from the digest without UUID.__init__: it must still be that very UUID.
    ours, theirs = device_aggregate_id(device_id), uuid5(DEVICE_NAMESPACE, device_id)
    assert ours == theirs and hash(ours) == hash(theirs)
    assert (ours.int, ours.bytes, ours.version, ours.variant, ours.is_safe) == (
        theirs.int, theirs.bytes, theirs.version, theirs.variant, theirs.is_safe)
    assert (ours.hex, str(ours)) == (theirs.hex, str(theirs))


@given(st.text(min_size=1, max_size=50), st.integers(0, 10_000))
def test_anonymous_ids_are_uuid5_of_the_device_aggregate_and_generation(
    device_id: str, generation: int
) -> None:
    expected = str(uuid5(device_aggregate_id(device_id), str(generation)))
    assert anonymous_id_for(device_id, generation) == expected


def test_an_aggregate_id_survives_pickling_and_copying() -> None:
    original = device_aggregate_id("phone-1")
    for again in (pickle.loads(pickle.dumps(original)), copy.copy(original),
                  copy.deepcopy(original)):
        assert again == original
        assert (again.hex, str(again)) == (original.hex, str(original))
