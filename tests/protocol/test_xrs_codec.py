"""XRS frame and message codec: round trips, strict decoding, resynchronisation, CRC guarantees."""
from __future__ import annotations

import pytest
from hypothesis import assume, given, settings, strategies as st

from protocol import xrs
from protocol.cobs import cobs_decode, cobs_encode
from protocol.crc import crc32

ALL_MESSAGE_CLASSES = sorted(xrs.MESSAGES.values(), key=lambda cls: cls.TYPE)


def field_strategy(field):
    if isinstance(field, xrs._Enum):
        return st.sampled_from(field.allowed)
    if isinstance(field, xrs._Flags):
        return st.integers(0, field.mask).map(field.enum_cls)
    if isinstance(field, xrs._UInt):
        return st.integers(0, field.hi)
    if isinstance(field, xrs._Bool):
        return st.booleans()
    if isinstance(field, xrs._Bytes):
        return st.binary(min_size=field.size, max_size=field.size)
    if isinstance(field, xrs._Text):
        if field.utf8:
            alphabet = st.characters(blacklist_categories=("Cc", "Cs"))
        else:
            alphabet = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
        return st.text(alphabet, min_size=field.min_len, max_size=field.max_len).filter(
            lambda s: len(s.encode()) <= field.max_len and len(s.encode()) >= field.min_len)
    raise AssertionError(f"no strategy for {field!r}")


def message_strategy(cls):
    def build(values):
        if cls is xrs.StatusReply and not values["armed"]:
            values["armed_plan_hash"] = bytes(32)
        return cls(**values)
    return st.fixed_dictionaries({f.name: field_strategy(f) for f in cls.FIELDS}).map(build)


any_message = st.sampled_from(ALL_MESSAGE_CLASSES).flatmap(message_strategy)


def raw_frame(seq: int, message: xrs.Message) -> bytes:
    """Header + payload + CRC, before COBS (built here without the codec's frame encoder)."""
    payload = message.encode_payload()
    body = bytes([xrs.PROTOCOL_VERSION, seq, int(message.TYPE), len(payload)]) + payload
    return body + crc32(body).to_bytes(4, "little")


@pytest.mark.parametrize("cls", ALL_MESSAGE_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), seq=st.integers(0, 255))
def test_every_message_round_trips_through_frame_encode_and_decode(cls, data, seq):
    message = data.draw(message_strategy(cls))
    wire = xrs.encode_frame(seq, message)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    assert xrs.decode(wire) == (seq, message)
    assert cobs_decode(wire[:-1]) == raw_frame(seq, message)


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), any_message, st.binary(max_size=40)), max_size=8),
       st.integers(1, 64))
def test_stream_decoder_returns_every_frame_between_garbage_and_counts_the_garbage(items, chunk_size):
    stream = bytearray()
    for seq, message, garbage in items:
        stream += garbage + b"\x00" + xrs.encode_frame(seq, message)
    decoder = xrs.StreamDecoder()
    frames = []
    for i in range(0, len(stream), chunk_size):
        frames += decoder.feed(bytes(stream[i:i + chunk_size]))
    # garbage could (with probability 2**-32 per chunk) form a valid frame: compare the tail
    got = [(f.seq, xrs.parse_message(f)) for f in frames][-len(items):] if items else []
    assert got == [(seq, message) for seq, message, _ in items]
    assert decoder.frames_ok >= len(items)


@settings(deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 300))
def test_stream_decoder_never_raises_on_random_bytes(data, chunk_size):
    decoder = xrs.StreamDecoder()
    for i in range(0, len(data), chunk_size):
        for frame in decoder.feed(data[i:i + chunk_size]):
            try:
                xrs.parse_message(frame)
            except xrs.XrsDecodeError:
                pass
    assert decoder.frames_ok + decoder.bad_frames <= data.count(0) + 1


def test_decoder_fed_garbage_resynchronises_on_the_next_good_frame_and_counts_bad_frames():
    decoder = xrs.StreamDecoder()
    good = xrs.encode_frame(3, xrs.GetStatus())
    assert decoder.feed(b"\x13\x37\xaa\x00\x05\x01\x00" + good[:4]) == []
    frames = decoder.feed(good[4:])
    assert [(f.seq, f.msg_type) for f in frames] == [(3, xrs.MessageType.GET_STATUS)]
    assert decoder.framing_errors == 2
    assert isinstance(decoder.last_error, xrs.FramingError)


def test_overrun_without_delimiter_is_discarded_counted_and_resynchronised():
    decoder = xrs.StreamDecoder()
    assert decoder.feed(b"\x01" * 500) == []
    assert decoder.framing_errors == 1
    assert isinstance(decoder.last_error, xrs.OverrunError)
    assert decoder.feed(b"\x01" * 10) == []          # still the same overlong run
    frames = decoder.feed(b"\x00" + xrs.encode_frame(9, xrs.WarmUp()))
    assert [f.seq for f in frames] == [9]
    assert decoder.framing_errors == 1


@settings(max_examples=300, deadline=None)
@given(any_message, st.integers(0, 255), st.data())
def test_every_burst_of_up_to_32_bits_is_rejected_by_the_crc(message, seq, data):
    raw = raw_frame(seq, message)
    nbits = len(raw) * 8
    length = data.draw(st.integers(1, 32), label="burst length")
    start = data.draw(st.integers(0, nbits - length), label="burst start")
    inner = data.draw(st.integers(0, max(0, (1 << max(0, length - 2)) - 1)), label="inner bits")
    pattern = 1 if length == 1 else (1 | (inner << 1) | (1 << (length - 1)))
    value = int.from_bytes(raw, "little") ^ (pattern << start)
    corrupted = value.to_bytes(len(raw), "little")
    with pytest.raises(xrs.CrcError):
        xrs.decode_frame(cobs_encode(corrupted))


@settings(max_examples=300, deadline=None)
@given(any_message, st.integers(0, 255), st.data())
def test_every_error_of_up_to_4_bits_is_rejected_by_the_crc(message, seq, data):
    raw = raw_frame(seq, message)
    positions = data.draw(st.sets(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=4))
    value = int.from_bytes(raw, "little")
    for bit in positions:
        value ^= 1 << bit
    with pytest.raises(xrs.CrcError):
        xrs.decode_frame(cobs_encode(value.to_bytes(len(raw), "little")))


@settings(max_examples=300, deadline=None)
@given(any_message, st.integers(0, 255), st.data())
def test_corrupted_wire_bytes_never_decode_to_a_message(message, seq, data):
    wire = bytearray(xrs.encode_frame(seq, message)[:-1])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255).filter(lambda b, old=wire[i]: b != old))
    assume(bytes(wire) != xrs.encode_frame(seq, message)[:-1])
    with pytest.raises(xrs.XrsDecodeError):
        xrs.decode(bytes(wire))


# ---- strict decoding: each malformed input has its own error type and a readable reason ----

def frame_from_body(body: bytes) -> bytes:
    return cobs_encode(body + crc32(body).to_bytes(4, "little"))


def test_wrong_protocol_version_raises_version_error():
    frame = xrs.decode_frame(frame_from_body(bytes([2, 1, 0x02, 0])))
    with pytest.raises(xrs.VersionError, match="version 2, expected 1"):
        xrs.parse_message(frame)


def test_unknown_message_type_raises_unknown_message_type():
    with pytest.raises(xrs.UnknownMessageType, match="0x42"):
        xrs.decode(frame_from_body(bytes([1, 1, 0x42, 0])))


def test_header_length_disagreeing_with_the_payload_raises_length_error():
    with pytest.raises(xrs.LengthError, match="header says 3 payload bytes, frame carries 1"):
        xrs.decode(frame_from_body(bytes([1, 1, 0x07, 3, 4])))


def test_frame_shorter_than_header_and_crc_raises_length_error():
    with pytest.raises(xrs.LengthError, match="shorter than the minimum"):
        xrs.decode(cobs_encode(b"\x01\x02\x03"))


def test_trailing_payload_bytes_raise_payload_error():
    with pytest.raises(xrs.PayloadError, match="trailing"):
        xrs.decode(frame_from_body(bytes([1, 1, 0x02, 1, 0])))


def test_truncated_payload_raises_payload_error():
    with pytest.raises(xrs.PayloadError, match="plan_hash"):
        xrs.decode(frame_from_body(bytes([1, 1, 0x06, 3, 1, 2, 3])))


def test_beam_off_reason_zero_or_unknown_raises_payload_error():
    for reason in (0, 9, 255):
        with pytest.raises(xrs.PayloadError, match="reason"):
            xrs.decode(frame_from_body(bytes([1, 1, 0x07, 1, reason])))


def test_bool_other_than_0_or_1_raises_payload_error():
    # DEVICE_HEARTBEAT payload: device_time_us u64, state u8, hv_on bool, faults u16
    body = bytes([1, 1, 0xC0, 12]) + bytes(8) + bytes([2, 2]) + bytes(2)
    with pytest.raises(xrs.PayloadError, match="bool must be 0 or 1"):
        xrs.decode(frame_from_body(body))


def test_undefined_fault_bits_raise_payload_error():
    body = bytes([1, 1, 0xC0, 12]) + bytes(8) + bytes([2, 0]) + (0x8000).to_bytes(2, "little")
    with pytest.raises(xrs.PayloadError, match="undefined bits"):
        xrs.decode(frame_from_body(body))


def test_non_printable_text_raises_payload_error():
    body = bytes([1, 1, 0x08, 3, 2]) + b"a\x07"
    with pytest.raises(xrs.PayloadError, match="control characters"):
        xrs.decode(frame_from_body(body))


def test_status_reply_with_a_hash_but_not_armed_is_rejected():
    msg = xrs.StatusReply(xrs.DeviceState.READY, 0, 0, False, 0, 0, 4, xrs.InterlockBit(0), xrs.FaultBit(0),
                          0, 0, xrs.BeamOffCauseCode.NONE, xrs.BeamOffReasonCode.NONE, True, b"\x01" * 32)
    payload = bytearray(msg.encode_payload())
    payload[-33] = 0  # armed := 0, hash left in place
    body = bytes([1, 1, 0x82, len(payload)]) + payload
    with pytest.raises(xrs.PayloadError, match="all zero"):
        xrs.decode(frame_from_body(body))


@pytest.mark.parametrize("message", [
    xrs.SetTechnique(voltage_v=70_000, current_na=40_000),
    xrs.SetTechnique(voltage_v=-1, current_na=40_000),
    xrs.Arm(backup_time_ms=1000, irm_limit_ugy=1, plan_hash=b"short"),
    xrs.BeamOff(reason=0),
    xrs.ResetFault(operator_acknowledgement=""),
    xrs.ResetFault(operator_acknowledgement="x" * 65),
    xrs.Heartbeat(host_time_ms=1.5),
    xrs.Ack(request_type=xrs.MessageType.NAK),
])
def test_unrepresentable_fields_raise_encode_error(message):
    with pytest.raises(xrs.EncodeError):
        xrs.encode_frame(1, message)


def test_schema_hash_is_8_bytes_of_sha256_over_the_schema_text():
    import hashlib
    assert xrs.SCHEMA_HASH == hashlib.sha256(xrs.SCHEMA_TEXT.encode()).digest()[:8]
    assert "0x06 BeamOn: plan_hash:bytes[32]" in xrs.SCHEMA_TEXT


def test_every_request_has_a_success_reply_type_in_the_table():
    for request in xrs.REQUEST_TYPES:
        assert xrs.expected_reply(request) in xrs.MESSAGES
