"""Canonical JSON: one byte form per value, and any other form is refused."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logs.canonical import CanonicalFormError, canonical_json, parse_canonical

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)
    | st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8),
        children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_bytes_round_trip_exactly(value):
    data = canonical_json(value)
    assert canonical_json(parse_canonical(data)) == data


@pytest.mark.parametrize("text", [
    b'{"x":20.0}',              # float without 6 decimals
    b'{"x": 1}',                # whitespace
    b'{"b":1,"a":2}',           # unsorted keys
    b'{"x":-0.000000}',         # negative zero
    b'{"x":"\\u00e9"}',         # escaped non-ASCII
    b'{"x":NaN}',               # not a number
    b'{"x":"\\u0000"}',         # NUL
    b'\xff',                    # not UTF-8
])
def test_non_canonical_forms_are_refused(text):
    with pytest.raises(CanonicalFormError):
        parse_canonical(text)


def test_nan_and_nul_cannot_be_recorded():
    with pytest.raises(CanonicalFormError, match="finite"):
        canonical_json({"dose_gy": float("nan")})
    with pytest.raises(CanonicalFormError, match="NUL"):
        canonical_json({"name": "a\x00b"})
