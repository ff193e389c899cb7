"""Byte-exact wire images of every XRS message: a change here is a protocol change (bump the version).

The pins were checked by hand for GET_STATUS (header 01 02 02 00, CRC-32 LE, COBS, 00) and are
cross-checked below with an encoder written independently of the codec.
"""
import zlib

import pytest

from protocol import xrs

PLAN_HASH = bytes(range(1, 33))

PINNED = [
    ("identify", 1, xrs.Identify(1, bytes.fromhex("0ac49f4d39430eec")),
     "1201010109010ac49f4d39430eec70aba64e00"),
    ("get_status", 2, xrs.GetStatus(),
     "0401020205950e4aa800"),
    ("set_technique", 3, xrs.SetTechnique(voltage_v=50000, current_na=40000),
     "0d0103030450c3409cd5a650ba00"),
    ("warm_up", 4, xrs.WarmUp(),
     "0401040405a1d59dfa00"),
    ("arm", 5, xrs.Arm(backup_time_ms=23000, irm_limit_ugy=20_100_000, plan_hash=PLAN_HASH),
     "0701050528d8590129a0b332010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20d27ebfca00"),
    ("beam_on", 6, xrs.BeamOn(plan_hash=PLAN_HASH),
     "29010606200102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202a42171e00"),
    ("beam_off", 7, xrs.BeamOff(reason=xrs.BeamOffReasonCode.OPERATOR_STOP),
     "0a0107070104c905ac7d00"),
    ("reset_fault", 8, xrs.ResetFault(operator_acknowledgement="ok: door closed"),
     "19010808100f6f6b3a20646f6f7220636c6f7365644a384bca00"),
    ("heartbeat", 9, xrs.Heartbeat(host_time_ms=123456),
     "080109090440e201029e03f6c600"),
    ("read_isotropy", 10, xrs.ReadIsotropy(),
     "04010a0a0525d5806e00"),
    ("ack", 7, xrs.Ack(request_type=xrs.MessageType.BEAM_OFF),
     "0901078001077659df0100"),
    ("identify_reply", 1, xrs.IdentifyReply(1, bytes.fromhex("0ac49f4d39430eec"), "SIM-FAST-0001",
                                            "ORC-XRS50-SIM", "1.0.0"),
     "340101812b010ac49f4d39430eec0d53494d2d464153542d303030310d4f52432d58525335302d53494d05312e302e308c88991200"),
    ("status_reply", 2, xrs.StatusReply(xrs.DeviceState.BEAM_ON, 50012, 39987, True, 123456, 1_234_567, 4,
                                        xrs.InterlockBit(0), xrs.FaultBit(0), 25_000_000, 1_500,
                                        xrs.BeamOffCauseCode.NONE, xrs.BeamOffReasonCode.NONE, True, PLAN_HASH),
     "0e01028242055cc3339c0140e2010487d61202040101010540787d0101010103dc0501010126010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2081dd927500"),
    ("heartbeat_reply", 9, xrs.HeartbeatReply(host_time_ms=123456, device_time_us=2_500_000),
     "080109890c40e20104a025260101010105c6b5fbc500"),
    ("isotropy_reply", 10, xrs.IsotropyReply(1_000_000, 990_000, 1_010_000, 1_000_500, 985_000),
     "08010a8a1440420f04301b0f0450690f0434440f04a8070f05778d7d2500"),
    ("device_heartbeat", 0, xrs.DeviceHeartbeat(250_000, xrs.DeviceState.BEAM_ON, True, xrs.FaultBit(0)),
     "020106c00c90d0030101010103050101058d3008a400"),
    ("nak", 6, xrs.Nak(6, xrs.ErrorCode.PLAN_HASH_MISMATCH, "plan hash differs from the armed one"),
     "300106ff27060524706c616e206861736820646966666572732066726f6d207468652061726d6564206f6e650b58afa000"),
]


def test_every_message_type_has_a_pinned_wire_image():
    assert {type(m).TYPE for _, _, m, _ in PINNED} == set(xrs.MESSAGES)


@pytest.mark.parametrize("name, seq, message, wire_hex", PINNED, ids=[p[0] for p in PINNED])
def test_message_encodes_to_the_pinned_bytes_and_decodes_back(name, seq, message, wire_hex):
    wire = bytes.fromhex(wire_hex)
    assert xrs.encode_frame(seq, message) == wire
    assert xrs.decode(wire) == (seq, message)


def _independent_frame(seq: int, msg_type: int, payload: bytes) -> bytes:
    body = bytes([1, seq, msg_type, len(payload)]) + payload
    raw = body + zlib.crc32(body).to_bytes(4, "little")
    out, block = bytearray(), bytearray()
    for b in raw:  # frames here are < 254 bytes: no 0xFF blocks needed
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
        else:
            block.append(b)
    return bytes(out + bytes([len(block) + 1]) + block + b"\x00")


@pytest.mark.parametrize("name, seq, message, wire_hex", PINNED, ids=[p[0] for p in PINNED])
def test_pinned_bytes_agree_with_an_independent_encoder(name, seq, message, wire_hex):
    assert _independent_frame(seq, int(message.TYPE), message.encode_payload()) == bytes.fromhex(wire_hex)


def test_status_reply_payload_is_66_bytes_as_in_the_spec():
    _, _, message, _ = next(p for p in PINNED if p[0] == "status_reply")
    assert len(message.encode_payload()) == 66


def test_schema_hash_is_pinned_so_a_schema_change_is_deliberate():
    # Changing any message layout changes this hash: bump PROTOCOL_VERSION and the device firmware.
    assert xrs.SCHEMA_HASH.hex() == "99e04a44b6cebda2"
