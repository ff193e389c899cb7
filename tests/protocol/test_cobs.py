"""COBS framing: round trip, no zero inside an encoded frame, malformed encodings refused."""
import pytest
from hypothesis import given, settings, strategies as st

from protocol.cobs import CobsError, cobs_decode, cobs_encode


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_cobs_round_trips_any_bytes(data):
    assert cobs_decode(cobs_encode(data)) == data


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_encoded_frame_never_contains_zero_and_overhead_is_bounded(data):
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + 1 + len(data) // 254


@pytest.mark.parametrize("data, encoded", [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
])
def test_cobs_matches_the_published_examples(data, encoded):
    assert cobs_encode(data) == encoded
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("bad, why", [
    (b"", "empty"),
    (b"\x05\x11\x22", "past the end"),
    (b"\x03\x11\x00", "0x00 inside"),
    (b"\x00", "0x00 inside"),
    (b"\xff" + bytes(range(1, 255)), "non-canonical"),
])
def test_malformed_cobs_raises_cobs_error_with_reason(bad, why):
    with pytest.raises(CobsError, match=why):
        cobs_decode(bad)


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_cobs_decode_of_random_bytes_returns_or_raises_cobs_error_only(data):
    try:
        cobs_decode(data)
    except CobsError:
        pass
