"""Codec fuzzing in CI: 20 000 random and mutated frames per codec (the qualification benchmark runs
100 000). XRS: no crash, corrupt frames accepted no more often than CRC-32 allows, no accepted frame
switches on a unit armed with another plan. UNIDOS: no crash, replies to another command refused."""
from __future__ import annotations

from protocol import xrs
from tests.qualification.fuzzing import (ARMED_HASH, _armed_unit, fuzz_unidos, fuzz_xrs, unidos_claims_hold,
                                         xrs_claims_hold)

CI_FRAMES = 20_000


def test_xrs_stream_decoder_survives_random_and_mutated_frames_within_the_crc_bound():
    stats = fuzz_xrs(CI_FRAMES, seed=7)
    assert stats["random"] + stats["mutated"] == CI_FRAMES
    assert stats["crc_errors"] + stats["framing_errors"] > CI_FRAMES * 0.9   # the fuzz really was corrupt
    assert xrs_claims_hold(stats) == [], stats


def test_the_armed_unit_check_would_see_a_beam_on_with_the_armed_hash():
    """Positive control: the fuzz harness's armed unit does switch on for an intact BEAM_ON of its plan."""
    bench, model = _armed_unit()
    try:
        bench.devices["xrs"].receive(xrs.encode_frame(1, xrs.BeamOn(plan_hash=ARMED_HASH)))
        bench.devices["xrs"].tick()
        assert model.hv_on or model.status().state.name in ("RAMP_UP", "BEAM_ON")
    finally:
        bench.stop()


def test_unidos_reply_decoder_survives_random_mutated_truncated_and_wrong_replies():
    stats = fuzz_unidos(CI_FRAMES, seed=11)
    assert stats["corpus_commands"] >= 15
    assert stats["rejected"] > CI_FRAMES * 0.5
    assert unidos_claims_hold(stats) == [], stats
