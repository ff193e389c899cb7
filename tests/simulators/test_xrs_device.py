"""The simulated unit on the wire: byte-exact exchanges, reply cache, strict NAKs, and beam-on safety."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from protocol import xrs
from protocol.crc import crc32
from protocol.cobs import cobs_encode
from simulators.clock import ManualClock
from simulators.sources import load_source
from simulators.xrs_device import XrsDevice
from simulators.xrs_model import XrsModel

PLAN = bytes(range(1, 33))

# (name, seconds to advance before sending, request hex, reply hex): one session with the fast
# source, seed 7, clock starting at 0, no device heartbeats. Every XRS command appears at least once.
SESSION = [
    ("identify", 0.0, "12010101090199e04a44b6cebda25255e39900",
     "430101813a0199e04a44b6cebda20f5852532d53494d2d464153542d30311a4f52432d58525335302d46415354202873696d756c617465642905312e302e301d5b1c7700"),
    ("get_status_standby", 0.0, "0401020205950e4aa800",
     "05010282420101010101010101010101010102040101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101051a19126000"),
    ("set_technique", 0.0, "0d0103030450c3409cd5a650ba00",
     "0a0103800103380ad08800"),
    ("set_technique_60kv_refused", 0.0, "0d0104030460ea409c951d40b800",
     "280104ff1f03031c36302e30206b56206f7574736964652034302e302d35302e30206b562371e11900"),
    ("warm_up", 0.0, "040105040596bf5ffb00",
     "0a010580010447c0df3300"),
    ("arm", 0.5, "0701060528d8590129a0b332010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20df658b0300",
     "0a01068001053f5f6d5600"),
    ("beam_on", 0.0, "29010706200102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20e25589d100",
     "0a0107800106e069d87700"),
    ("heartbeat", 0.1, "0701080904d204010556bfbcc300",
     "070108890cd2040104c0270901010101050676286d00"),
    ("get_status_beam_on", 0.1, "040109020574e11fa400",
     "0d01098242054bc34a9c01872c0104b4850202040101010460ae0a0101010102c80101010126010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f204f993a3500"),
    ("read_isotropy", 0.0, "04010a0a0525d5806e00",
     "08010a8a145d410f0404410f049d3e0f046a410f0497460f051ce6094800"),
    ("beam_off", 0.0, "0a010b07010471ba7a3700",
     "0a010b800107cee6094a00"),
    ("get_status_after_beam_off", 0.0, "04010c02059f23d4a200",
     "0a010c82420658c3559c03872c0104b4850202040101010460ae0a0101010102c8010103010401010101010101010101010101010101010101010101010101010101010101010503da61e200"),
    ("reset_fault_without_fault_refused", 0.1,
     "24010d081b1a6f70657261746f723a206e6f7468696e6720746f2072657365747f86b93200",
     "2b010dff2208041f726573657420726566757365643a206e6f206c617463686564206661756c7439a3884c00"),
]
RESET_AFTER_ARC = ("15010e080c0b61726320636865636b6564e567c0b800", "0a010e8001086d0b68ed00")


def make_device(heartbeat_period_s: float = 0.0, seed: int = 7):
    clock = ManualClock(0.0)
    events: list[dict] = []
    model = XrsModel(clock, load_source("fast"), seed=seed, on_event=events.append)
    return clock, model, XrsDevice(model, heartbeat_period_s=heartbeat_period_s), events


def exchange(device: XrsDevice, request: bytes) -> bytes:
    device.receive(request)
    return device.transmit()


def test_a_full_session_is_byte_exact_for_every_command():
    clock, model, device, _ = make_device()
    for name, advance_s, request_hex, reply_hex in SESSION:
        clock.advance(advance_s)
        device.tick()
        assert exchange(device, bytes.fromhex(request_hex)).hex() == reply_hex, name
    model.inject("hv_arc")
    request_hex, reply_hex = RESET_AFTER_ARC
    assert exchange(device, bytes.fromhex(request_hex)).hex() == reply_hex
    sent = {xrs.decode(bytes.fromhex(r))[1].TYPE for _, _, r, _ in SESSION}
    assert sent == set(xrs.REQUEST_TYPES)


def test_the_pinned_session_means_what_it_says():
    replies = {name: xrs.decode(bytes.fromhex(reply))[1] for name, _, _, reply in SESSION}
    assert replies["set_technique_60kv_refused"].error_code == xrs.ErrorCode.OUT_OF_RANGE
    on = replies["get_status_beam_on"]
    assert on.state == xrs.DeviceState.BEAM_ON and on.hv_on and on.armed_plan_hash == PLAN
    assert 49_800 < on.voltage_v < 50_200 and on.applicator_id == 4
    off = replies["get_status_after_beam_off"]
    assert not off.hv_on and not off.armed and off.last_beam_off_reason == xrs.BeamOffReasonCode.OPERATOR_STOP
    assert replies["heartbeat"].host_time_ms == 1234


def test_device_heartbeat_is_sent_every_period_once_a_host_has_spoken():
    clock, _, device, _ = make_device(heartbeat_period_s=0.25)
    clock.advance(0.3)
    device.tick()
    assert device.transmit() == b""                    # nobody has spoken yet
    exchange(device, xrs.encode_frame(1, xrs.Heartbeat(0)))
    clock.advance(0.25)
    device.tick()
    wire = device.transmit()
    seq, message = xrs.decode(wire)
    assert isinstance(message, xrs.DeviceHeartbeat) and message.device_time_us == 550_000
    clock.advance(0.1)
    device.tick()
    assert device.transmit() == b""


def ready_and_armed(plan: bytes = PLAN):
    clock, model, device, events = make_device()
    model.warm_up()
    clock.advance(0.5)
    device.tick()
    model.arm(10.0, 5.0, plan)
    return clock, model, device, events


def test_a_retransmitted_command_is_answered_from_the_cache_and_not_executed_twice():
    clock, model, device, events = ready_and_armed()
    request = xrs.encode_frame(42, xrs.BeamOn(PLAN))
    first = exchange(device, request)
    executed = device.requests_executed
    second = exchange(device, request)
    assert first == second and xrs.decode(first)[1] == xrs.Ack(xrs.MessageType.BEAM_ON)
    assert device.requests_executed == executed and device.duplicates == 1
    assert len([e for e in events if e["event"] == "beam_on"]) == 1


def test_same_sequence_number_with_other_content_is_a_new_command():
    _, _, device, _ = make_device()
    exchange(device, xrs.encode_frame(5, xrs.GetStatus()))
    reply = exchange(device, xrs.encode_frame(5, xrs.Heartbeat(9)))
    assert isinstance(xrs.decode(reply)[1], xrs.HeartbeatReply)


def test_identify_clears_the_reply_cache_so_a_new_session_gets_fresh_answers():
    clock, _, device, _ = make_device()
    first = exchange(device, xrs.encode_frame(0, xrs.GetStatus()))
    exchange(device, xrs.encode_frame(0, xrs.Identify(1, xrs.SCHEMA_HASH)))
    clock.advance(1.0)
    again = exchange(device, xrs.encode_frame(0, xrs.GetStatus()))
    assert xrs.decode(again)[1].device_time_us == 1_000_000 != xrs.decode(first)[1].device_time_us


def test_a_frame_with_a_bad_crc_gets_no_reply_and_does_not_feed_the_watchdog():
    clock, model, device, _ = ready_and_armed()
    exchange(device, xrs.encode_frame(1, xrs.BeamOn(PLAN)))
    bad = bytearray(xrs.encode_frame(2, xrs.Heartbeat(1)))
    bad[3] ^= 0x01
    for _ in range(6):
        clock.advance(0.1)
        assert exchange(device, bytes(bad)) == b""
    device.tick()
    assert device.crc_errors == 6
    assert xrs.FaultBit.WATCHDOG_EXPIRED in model.status().faults


def body_frame(body: bytes) -> bytes:
    return cobs_encode(body + crc32(body).to_bytes(4, "little")) + b"\x00"


@pytest.mark.parametrize("body, code", [
    (bytes([1, 9, 0x07, 1, 0]), xrs.ErrorCode.BAD_PAYLOAD),           # beam off with reason 0
    (bytes([1, 9, 0x02, 1, 0]), xrs.ErrorCode.BAD_PAYLOAD),           # trailing byte
    (bytes([1, 9, 0x33, 0]), xrs.ErrorCode.UNKNOWN_TYPE),
    (bytes([1, 9, 0x80, 1, 2]), xrs.ErrorCode.UNKNOWN_TYPE),          # a reply sent as request
    (bytes([2, 9, 0x02, 0]), xrs.ErrorCode.VERSION),
    (bytes([1, 9, 0x01, 9, 2]) + xrs.SCHEMA_HASH, xrs.ErrorCode.PROTOCOL_MISMATCH),
    (bytes([1, 9, 0x01, 9, 1]) + bytes(8), xrs.ErrorCode.PROTOCOL_MISMATCH),
])
def test_crc_valid_but_malformed_requests_get_a_nak_with_a_specific_code_and_the_same_seq(body, code):
    _, _, device, _ = make_device()
    seq, reply = xrs.decode(exchange(device, body_frame(body)))
    assert seq == 9 and isinstance(reply, xrs.Nak) and reply.error_code == code
    assert reply.request_type == body[2] and reply.detail


def test_beam_on_with_another_plan_hash_is_refused_even_with_a_valid_frame():
    _, model, device, _ = ready_and_armed()
    reply = xrs.decode(exchange(device, xrs.encode_frame(1, xrs.BeamOn(bytes(range(2, 34))))))[1]
    assert reply.error_code == xrs.ErrorCode.PLAN_HASH_MISMATCH
    assert not model.status().hv_on


# ---- property: no corruption can switch the beam on --------------------------------------------

def _near_miss_plans():
    """Plan hashes one bit away from the armed one: the closest a corruption could get."""
    return st.integers(0, 255).map(lambda bit: bytes(b ^ (1 << (bit % 8)) if i == bit // 8 else b
                                                    for i, b in enumerate(PLAN)))


harmless = st.one_of(
    st.just(xrs.GetStatus()), st.just(xrs.ReadIsotropy()), st.integers(0, 2**32 - 1).map(xrs.Heartbeat),
    st.sampled_from(list(xrs.BeamOffReasonCode)[1:]).map(xrs.BeamOff),
    _near_miss_plans().map(xrs.BeamOn),
    st.builds(xrs.SetTechnique, st.integers(0, 65535), st.integers(0, 65535)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), harmless), min_size=1, max_size=12),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), max_size=30),
       st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=8)), max_size=5),
       st.integers(1, 50))
def test_no_corruption_of_a_stream_without_a_matching_beam_on_switches_the_beam_on(
        frames, bit_flips, insertions, chunk):
    clock, model, device, _ = ready_and_armed()
    stream = bytearray(b"".join(xrs.encode_frame(seq, m) for seq, m in frames))
    for pos, bit in bit_flips:
        stream[pos % len(stream)] ^= 1 << bit
    for pos, junk in insertions:
        stream[pos % len(stream):pos % len(stream)] = junk
    for i in range(0, len(stream), chunk):
        device.receive(bytes(stream[i:i + chunk]))
        device.transmit()
        clock.advance(0.001)
        device.tick()
        assert not model.status().hv_on
    assert model.status().state in (xrs.DeviceState.ARMED, xrs.DeviceState.READY)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 64))
def test_random_bytes_never_crash_the_device_or_switch_the_beam_on(data, chunk):
    _, model, device, _ = ready_and_armed()
    for i in range(0, len(data), chunk):
        device.receive(data[i:i + chunk])
        device.transmit()
        device.tick()
    assert not model.status().hv_on
