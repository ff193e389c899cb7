"""Consistent Overhead Byte Stuffing: frames without 0x00 inside, so 0x00 can delimit them.

Pure functions; every malformed input raises CobsError with the reason, never returns a guess.
"""
from __future__ import annotations


class CobsError(ValueError):
    """The bytes are not a valid COBS encoding (reason in the message)."""


def cobs_encode(data: bytes) -> bytes:
    """Encode `data`; the result contains no 0x00 and is len(data) + 1 + len(data) // 254 bytes at most."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(encoded: bytes) -> bytes:
    """Decode one COBS block (without its 0x00 delimiter). Raises CobsError if malformed."""
    if not encoded:
        raise CobsError("empty frame: nothing between two 0x00 delimiters")
    out = bytearray()
    i, n = 0, len(encoded)
    while i < n:
        code = encoded[i]
        if code == 0:
            raise CobsError(f"0x00 inside an encoded frame at offset {i}")
        end = i + code
        if end > n:
            raise CobsError(f"code byte {code} at offset {i} points past the end of the frame ({n} bytes)")
        chunk = encoded[i + 1:end]
        if 0 in chunk:
            raise CobsError(f"0x00 inside an encoded frame at offset {i + 1 + chunk.index(0)}")
        out += chunk
        i = end
        if code != 255 and i < n:
            out.append(0)
    if cobs_encode(bytes(out)) != encoded:  # e.g. a 0xFF block with the final 0x01 block missing
        raise CobsError("non-canonical COBS encoding: re-encoding the decoded bytes differs")
    return bytes(out)
