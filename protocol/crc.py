"""CRC-32 (IEEE 802.3 / zlib) for the XRS link: pinned by its check value 0xCBF43926 over b"123456789".

Pure computation only; never does I/O. A bitwise reference implementation is kept next to the fast
one so tests can show both agree (the fast path is zlib's C code).
"""
from __future__ import annotations

import zlib

CRC32_CHECK_VALUE = 0xCBF43926   # crc32(b"123456789")
CRC32_POLY_REFLECTED = 0xEDB88320  # 0x04C11DB7 bit-reversed
CRC32_SIZE = 4


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC: reflected, poly 0x04C11DB7, init 0xFFFFFFFF, xor-out 0xFFFFFFFF."""
    return zlib.crc32(data) & 0xFFFFFFFF


def crc32_reference(data: bytes) -> int:
    """The same CRC computed bit by bit from its definition (slow; for tests)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ CRC32_POLY_REFLECTED if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF
