"""CRC-32 of the XRS link, pinned by its check value and against a bitwise reference."""
from hypothesis import given, settings, strategies as st

from protocol.crc import CRC32_CHECK_VALUE, crc32, crc32_reference


def test_crc32_check_value_over_123456789_is_0xcbf43926():
    assert CRC32_CHECK_VALUE == 0xCBF43926
    assert crc32(b"123456789") == 0xCBF43926


def test_crc32_of_empty_input_is_zero():
    assert crc32(b"") == 0


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_fast_crc32_equals_the_bitwise_reference_definition(data):
    assert crc32(data) == crc32_reference(data)


def test_crc32_reference_also_gives_the_check_value():
    assert crc32_reference(b"123456789") == 0xCBF43926
