"""The command line's output rules for all inputs: a piped line never ends in spaces whatever
pieces it was written in, and the one JSON style is canonical."""

from __future__ import annotations

import io
import itertools
import json

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from idstitch.cli.output import TrimmedLines
from idstitch.render import to_json

TEXT = st.text(alphabet=st.sampled_from(list("ab \n│─é")), max_size=200)


@given(TEXT, st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_trimmed_lines_drop_trailing_spaces_however_the_text_is_split(
    text: str, cuts: list[int]
) -> None:
    out = io.StringIO()
    trimmed = TrimmedLines(out)
    points = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    for start, end in itertools.pairwise(points):
        trimmed.write(text[start:end])
    trimmed.finish()

    expected = "\n".join(line.rstrip(" ") for line in text.split("\n"))
    assert out.getvalue() == expected
    assert all(line == line.rstrip(" ") for line in out.getvalue().split("\n"))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_the_json_style_is_compact_sorted_utf8_and_round_trips(value: object) -> None:
    text = to_json(value)
    assert msgspec.json.decode(text) == value
    # What the standard library writes with the same choices: the style is plain JSON.
    assert text == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert to_json(msgspec.json.decode(text)) == text
