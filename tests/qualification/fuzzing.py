"""Codec fuzzing for qualification: random and mutated frames for the XRS link (protocol.xrs.StreamDecoder)
and random and mutated reply lines for the UNIDOS link (protocol.unidos), seeded and counted.

Claims checked: no crash (only the codec's own decode errors); corrupt XRS frames accepted no more often than
CRC-32 allows (2^-32 per random corrupt frame); no accepted frame switches on a simulated unit armed with
another plan's hash. UNIDOS lines carry no checksum: how often a mutated reply decodes to a different value is
measured and reported, not bounded. Never mutes a codec exception it did not expect.
"""
from __future__ import annotations

import math
import random
import time

from protocol import unidos, xrs

ARMED_HASH = bytes(range(1, 33))          # the plan the simulated unit is armed with
OTHER_HASH = bytes(range(101, 133))       # the plan hash in the frames we mutate


def _valid_frames(rng: random.Random) -> list[bytes]:
    """Encoded frames of every host request (and some device replies), the BEAM_ON ones with OTHER_HASH."""
    frames = []
    for cls in xrs.MESSAGES.values():
        try:
            if cls is xrs.BeamOn:
                m = xrs.BeamOn(plan_hash=OTHER_HASH)
            elif cls is xrs.Arm:
                m = xrs.Arm(backup_time_ms=24000, irm_limit_ugy=21000000, plan_hash=OTHER_HASH)
            elif cls is xrs.BeamOff:
                m = xrs.BeamOff(reason=xrs.BeamOffReasonCode.PRESET_TIME_REACHED)
            elif not getattr(cls, "FIELDS", ()):
                m = cls()
            else:
                continue
            frames.append(xrs.encode_frame(rng.randrange(256), m))
        except Exception:  # noqa: BLE001 - a message class this corpus cannot build without values
            continue
    return frames


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data[:-1])            # keep the delimiter out of the mutation, add it back
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.6 and b:              # flip 1..3 bits
            i = rng.randrange(len(b))
            for _ in range(rng.randint(1, 3)):
                b[i] ^= 1 << rng.randrange(8)
        elif op < 0.75 and b:           # drop a byte
            del b[rng.randrange(len(b))]
        elif op < 0.9:                  # insert a byte
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif b:                         # truncate
            del b[rng.randrange(len(b)):]
    return bytes(b) + b"\x00"


def _armed_unit():
    from simulators.bench import Bench
    from simulators.clock import ManualClock
    clock = ManualClock()
    bench = Bench(clock=clock)
    model = bench.xrs_model
    model.set_technique(50.0, 40.0)
    model.warm_up()
    for _ in range(200):
        clock.advance(0.01)
        model.tick()
    model.arm(backup_time_s=30.0, irm_limit_gy=21.0, plan_hash=ARMED_HASH)
    return bench, model


def fuzz_xrs(frames: int = 100_000, seed: int = 7) -> dict:
    """Half random byte strings, half mutated valid frames; every accepted frame goes to an armed unit."""
    rng = random.Random(seed)
    started = time.monotonic()
    valid = _valid_frames(rng)
    valid_set = {v[:-1] for v in valid}
    decoder = xrs.StreamDecoder()
    bench, model = _armed_unit()
    device = bench.devices["xrs"]
    stats = {"frames": frames, "random": 0, "mutated": 0, "accepted_random": 0, "accepted_mutated_changed": 0,
             "accepted_mutated_identical": 0, "beam_on_with_armed_hash": 0, "unit_beam_switched_on": 0,
             "crashes": 0, "crc_errors": 0, "framing_errors": 0}
    for i in range(frames):
        if i % 2 == 0:
            data = bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 60))) + b"\x00"
            stats["random"] += 1
            source = None
        else:
            source = rng.choice(valid)
            data = _mutate(source, rng)
            stats["mutated"] += 1
        try:
            accepted = decoder.feed(data)
        except Exception:  # noqa: BLE001 - the claim is: the stream decoder never raises
            stats["crashes"] += 1
            decoder = xrs.StreamDecoder()
            continue
        for frame in accepted:
            raw = xrs.encode_raw_frame(frame.version, frame.seq, frame.msg_type, frame.payload)
            if source is None:
                stats["accepted_random"] += 1
            elif raw[:-1] in valid_set:
                stats["accepted_mutated_identical"] += 1   # e.g. a mutation that only touched the fill
            else:
                stats["accepted_mutated_changed"] += 1
            try:
                msg = xrs.parse_message(frame)
            except xrs.XrsDecodeError:
                msg = None
            if isinstance(msg, xrs.BeamOn) and msg.plan_hash == ARMED_HASH:
                stats["beam_on_with_armed_hash"] += 1
            if raw[:-1] in valid_set:
                continue                 # an intact frame is a valid command, not a corrupt one
            if model.status().state.name != "ARMED":
                model.arm(backup_time_s=30.0, irm_limit_gy=21.0, plan_hash=ARMED_HASH)   # stay armed
            device.receive(raw)
            device.tick()
            device.transmit()
            if model.hv_on:
                stats["unit_beam_switched_on"] += 1
    stats["crc_errors"] = decoder.crc_errors
    stats["framing_errors"] = decoder.framing_errors
    corrupt = stats["random"] + stats["mutated"]
    stats["crc_bound_expected_accepts"] = corrupt * 2.0 ** -32
    # P(≥ 2 accepts | bound) < 1e-9 at 10^5 frames: more than one accept means the check is weaker than CRC-32
    stats["accept_limit"] = 1
    stats["seconds"] = round(time.monotonic() - started, 2)
    bench.stop()
    return stats


def _unidos_corpus() -> list[tuple[unidos.Request, bytes]]:
    from simulators.bench import Bench
    from simulators.clock import ManualClock
    clock = ManualClock()
    bench = Bench(clock=clock)
    device = bench.devices["unidos"]
    corpus = []
    for mnemonic in ("PTW", "SER", "S", "MV", "HV", "IT", "RGE", "NUS", "ASS", "MVM", "MVR", "TFI", "UEL", "ASE",
                     "ASR", "ASL", "RIR", "RMR", "MAC"):
        req = unidos.request(mnemonic)
        device.receive(unidos.encode_request(req))
        out = b""
        for _ in range(10):
            clock.advance(0.01)
            device.tick()
            out += device.transmit()
        line = out.split(b"\r\n")[0] + b"\r\n"
        try:
            unidos.decode_reply(req, line)
        except unidos.UnidosDecodeError:
            continue
        corpus.append((req, line))
    bench.stop()
    return corpus


def fuzz_unidos(lines: int = 100_000, seed: int = 11) -> dict:
    """Random lines, mutated valid replies, replies to the wrong command, truncated replies."""
    rng = random.Random(seed)
    started = time.monotonic()
    corpus = _unidos_corpus()
    stats = {"lines": lines, "corpus_commands": len(corpus), "crashes": 0, "crash_examples": [],
             "rejected": 0, "accepted_unchanged": 0, "accepted_changed_value": 0, "wrong_command_accepted": 0,
             "splitter_lines": 0}
    splitter = unidos.LineSplitter(unidos.MAX_REPLY_LINE_BYTES)
    for i in range(lines):
        req, good = rng.choice(corpus)
        kind = i % 4
        body = good[:-2]
        if kind == 0:
            line = bytes(rng.randrange(256) for _ in range(rng.randint(0, 80))) + b"\r\n"
        elif kind == 1:
            b = bytearray(body)
            for _ in range(rng.randint(1, 3)):
                if b:
                    b[rng.randrange(len(b))] = rng.randrange(32, 127)
            line = bytes(b) + b"\r\n"
        elif kind == 2:
            other_req, line = rng.choice(corpus)
            if other_req.mnemonic == req.mnemonic:
                continue
        else:
            line = body[:rng.randrange(len(body))] + (b"\r\n" if rng.random() < 0.7 else b"")
        try:
            value = unidos.decode_reply(req, line)
        except unidos.UnidosDecodeError:
            stats["rejected"] += 1
        except Exception as exc:  # noqa: BLE001 - the claim is: only the codec's own errors
            stats["crashes"] += 1
            if len(stats["crash_examples"]) < 5:
                stats["crash_examples"].append(f"{req.mnemonic} {line!r}: {type(exc).__name__}: {exc}")
        else:
            if kind == 2:
                stats["wrong_command_accepted"] += 1
            elif value == unidos.decode_reply(req, good):
                stats["accepted_unchanged"] += 1
            else:
                stats["accepted_changed_value"] += 1
        try:
            stats["splitter_lines"] += len(splitter.feed(line))
        except Exception as exc:  # noqa: BLE001
            stats["crashes"] += 1
            if len(stats["crash_examples"]) < 5:
                stats["crash_examples"].append(f"LineSplitter {line!r}: {type(exc).__name__}: {exc}")
    mutated = lines // 4
    stats["changed_value_rate_of_mutated"] = round(stats["accepted_changed_value"] / max(mutated, 1), 4)
    stats["seconds"] = round(time.monotonic() - started, 2)
    return stats


def xrs_claims_hold(stats: dict) -> list[str]:
    problems = []
    if stats["crashes"]:
        problems.append(f"StreamDecoder raised {stats['crashes']} times")
    accepted_corrupt = stats["accepted_random"] + stats["accepted_mutated_changed"]
    if accepted_corrupt > stats["accept_limit"]:
        problems.append(f"{accepted_corrupt} corrupt frames accepted (CRC-32 bound: "
                        f"{stats['crc_bound_expected_accepts']:.2e} expected)")
    if stats["beam_on_with_armed_hash"] or stats["unit_beam_switched_on"]:
        problems.append(f"an accepted corrupt frame switched the beam on ({stats['unit_beam_switched_on']}) or "
                        f"carried the armed hash ({stats['beam_on_with_armed_hash']})")
    return problems


def unidos_claims_hold(stats: dict) -> list[str]:
    problems = []
    if stats["crashes"]:
        problems.append(f"{stats['crashes']} unexpected exceptions: {stats['crash_examples']}")
    if stats["wrong_command_accepted"]:
        problems.append(f"{stats['wrong_command_accepted']} replies to another command were accepted")
    if not math.isfinite(stats["changed_value_rate_of_mutated"]):
        problems.append("rate not computed")
    return problems
