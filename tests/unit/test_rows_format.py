"""The identity rows' stored format (rows format 5, issue 17: bytes per event): fields under short
names, every value kept, and the two names the purge looks for left whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from idstitch.projections.changes import DeviceFields, PersonFields
from idstitch.projections.identity.rows import (
    DeviceRow,
    MergeRow,
    PersonRow,
    Refusal,
    Stint,
)
from idstitch.projections.unit import decode_row, encode_row

ids = st.text(min_size=1, max_size=40)
positions = st.integers(min_value=0, max_value=2**53)
maybe = st.none() | ids


@st.composite
def persons(draw: st.DrawFn) -> PersonRow:
    anonymous = draw(st.lists(ids, max_size=4))
    return PersonRow(
        person_id=draw(ids), identified=draw(st.booleans()), user_id=draw(maybe),
        email=draw(maybe), anonymous_ids=anonymous,
        anonymous_since=draw(st.lists(positions, min_size=len(anonymous),
                                      max_size=len(anonymous))),
        devices=draw(st.lists(ids, max_size=4)), merges=draw(st.lists(ids, max_size=4)),
        refused=draw(st.lists(st.builds(Refusal, ids, ids, ids, positions, maybe), max_size=2)),
        created_at=draw(positions), updated_at=draw(positions), retired_into=draw(maybe),
        since=draw(positions), identified_at=draw(st.none() | positions),
        retired_at=draw(st.none() | positions),
        stints=draw(st.lists(st.builds(Stint, ids, positions, st.none() | positions),
                             max_size=3)),
        emails=draw(st.lists(st.tuples(positions, ids), max_size=3)))


@given(persons())
def test_a_person_row_reads_back_as_it_was_written(person: PersonRow) -> None:
    assert decode_row(PersonRow, encode_row(person)) == person


@given(st.builds(DeviceRow, device_id=ids, person_id=ids, anonymous_id=ids, created_at=positions,
                 updated_at=positions, token=maybe, user_id=maybe, seq=positions,
                 token_lost=st.lists(positions, max_size=3), ignored=st.lists(positions, max_size=3)))
def test_a_device_row_reads_back_as_it_was_written(device: DeviceRow) -> None:
    assert decode_row(DeviceRow, encode_row(device)) == device


def test_rows_store_short_names_but_the_two_the_purge_looks_for() -> None:
    person = encode_row(PersonRow(person_id="p1", created_at=1, updated_at=1))
    device = encode_row(DeviceRow(device_id="d1", person_id="p1", anonymous_id="a1",
                                  created_at=1, updated_at=1))
    merge = encode_row(MergeRow(merge_id="m1", kind="merged", source="p2", target="p1",
                                position=3, timestamp=1))
    for long_name in (b"person_id", b"anonymous_since", b"identified_at", b"created_at",
                      b"updated_at", b"retired_into", b"stints"):
        assert long_name not in person
    for long_name in (b"device_id", b"anonymous_id", b"sdk_anonymous_id", b"auto_track"):
        assert long_name not in device
    for long_name in (b"merge_id", b"timestamp", b"position"):
        assert long_name not in merge
    # projections/identity/purge.py finds the rows to check by these bytes.
    assert b"refused" in person and b"token_lost" in device
    assert len(person) < 120 and len(device) < 120  # 211 and 200 under the long names


@given(persons())
def test_the_change_streams_slim_person_reads_a_stored_person_row(person: PersonRow) -> None:
    # A custom projection's Changes read the stored identity rows through slim structs of
    # their own (projections/changes.py): they must follow the rows format's stored names.
    slim = decode_row(PersonFields, encode_row(person))
    for field in PersonFields.__struct_fields__:
        assert list_or_value(getattr(slim, field)) == list_or_value(getattr(person, field))


@given(st.builds(DeviceRow, device_id=ids, person_id=ids, anonymous_id=ids, created_at=positions,
                 updated_at=positions, generation=positions,
                 ignored=st.lists(positions, max_size=3)))
def test_the_change_streams_slim_device_reads_a_stored_device_row(device: DeviceRow) -> None:
    slim = decode_row(DeviceFields, encode_row(device))
    for field in DeviceFields.__struct_fields__:
        assert list_or_value(getattr(slim, field)) == list_or_value(getattr(device, field))


def list_or_value(value: object) -> object:
    """The slim structs hold tuples where the rows hold lists."""
    return list(value) if isinstance(value, tuple) else value
