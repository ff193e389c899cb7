"""The output-check procedure step by step against deterministic fake devices (manual clock)."""
from __future__ import annotations

from datetime import date

import pytest

from drivers.hal import BeamOffReason
from orconsole.models import QaOutcome
from orconsole.qa import (InMemoryQaRepository, OutputCheck, OutputCheckRequest, QaIncomplete, QaInputError,
                          QaPolicy, acknowledge_warning, k_tp, output_check_gate, qa_results_for_planning)
from orconsole.qa_models import CalibrationApplicator, CalibrationRecord
from tests.qa.fakes import FakeReadout, FakeXrs, World

TODAY = date(2026, 11, 26)


def calibration(reference_reading_nc: float = 3.0) -> CalibrationRecord:
    return CalibrationRecord(source_serial="XRS-TEST-1", source_model="fake", calibration_date=date(2026, 6, 1),
                             valid_until=date(2027, 6, 1), calibrated_by="A. Physicist", nominal_kv=50.0,
                             nominal_ua=40.0, qa_exposure_s=1.0, reference_reading_nc=reference_reading_nc,
                             applicators=(CalibrationApplicator(diameter_cm=3.0, surface_dose_rate_gy_per_min=0.87),),
                             imported_from="test", file_sha256="0" * 64)


def make_check(world: World, *, policy: QaPolicy | None = None, readout: FakeReadout | None = None,
               reference_reading_nc: float = 3.0):
    xrs = FakeXrs(world)
    readout = readout or FakeReadout(world)
    check = OutputCheck(xrs=xrs, readout=readout, calibration=calibration(reference_reading_nc),
                        policy=policy or QaPolicy(), sleep=world.clock.sleep, monotonic=world.clock.monotonic,
                        today=lambda: TODAY)
    return check, xrs, readout


def test_nominal_room_passes_and_the_beam_is_switched_off_after_every_reading():
    world = World()
    check, xrs, readout = make_check(world)
    record = check.run(OutputCheckRequest("20.0 C", "101.325 kPa", chamber_serial="34013-001"))
    assert record.result is QaOutcome.PASS
    assert record.k_out == pytest.approx(1.0, abs=1e-3)
    assert len(record.readings) == 3 and record.used_attempt == 1
    assert xrs.calls.count("beam_on") == 3 == xrs.calls.count("beam_off")
    for i, call in enumerate(xrs.calls):
        if call == "beam_on":
            assert xrs.calls[i + 1] == "beam_off"
    assert set(xrs.beam_off_reasons) == {BeamOffReason.QA_EXPOSURE_END}
    assert readout.calls[0] == "token" and readout.calls[-1] == "release"
    assert readout.calls.index("zero") < readout.calls.index("range LOW") < readout.calls.index("reset")
    assert record.instruments.electrometer_serial == "654321" and record.instruments.chamber_serial == "34013-001"
    assert record.performed_on == TODAY


def test_zero_correction_waits_out_the_electrometer_warm_up():
    world = World()
    readout = FakeReadout(world, warm_up_s=120.0, zero_s=30.0)
    start = world.clock.now_s
    check, _, readout = make_check(world, readout=readout)
    check.run(OutputCheckRequest("20", "101.325"))
    assert "zero" in readout.calls
    assert world.clock.now_s - start >= 150.0


def test_warm_low_pressure_room_reads_low_raw_but_k_out_stays_one():
    world = World(room_k_tp=k_tp(30.0, 95.0))
    check, _, _ = make_check(world)
    record = check.run(OutputCheckRequest("30 C", "950 hPa"))
    assert record.raw_mean_c == pytest.approx(3.0e-9 / 1.10296, rel=1e-3)   # 9.3 % low raw
    assert record.k_tp == pytest.approx(1.10296, abs=1e-5)
    assert record.k_out == pytest.approx(1.0, abs=1e-3) and record.result is QaOutcome.PASS


def test_wrong_chamber_voltage_stops_before_any_exposure():
    world = World()
    check, xrs, readout = make_check(world, readout=FakeReadout(World(), hv_v=200))
    with pytest.raises(QaIncomplete, match="chamber voltage is 200 V"):
        check.run(OutputCheckRequest("20", "101.3"))
    assert "beam_on" not in xrs.calls
    assert readout.calls[-1] == "release"


def test_electrometer_overload_gives_no_result_and_says_to_change_range():
    world = World()
    check, xrs, _ = make_check(world, policy=QaPolicy(measurement_range="VERY_LOW"))
    with pytest.raises(QaIncomplete, match="overloaded") as info:
        check.run(OutputCheckRequest("20", "101.3"))
    assert "range" in info.value.message
    assert xrs.calls.count("beam_on") == xrs.calls.count("beam_off") == 1


def test_scattering_readings_repeat_the_series_then_give_no_result():
    world = World(noise_fraction=0.02)
    check, xrs, _ = make_check(world)
    with pytest.raises(QaIncomplete, match="scatter") as info:
        check.run(OutputCheckRequest("20", "101.3"))
    assert len(info.value.readings) == 6            # two series of three
    assert xrs.calls.count("beam_on") == xrs.calls.count("beam_off") == 6


def test_source_output_ten_percent_low_fails_and_blocks_treatment():
    world = World(output_fraction=0.90)
    check, _, _ = make_check(world)
    record = check.run(OutputCheckRequest("20", "101.325"))
    assert record.k_out == pytest.approx(0.90, abs=1e-3)
    assert record.result is QaOutcome.FAIL and "No treatment" in record.message
    repo = InMemoryQaRepository()
    repo.save(record)                               # unsigned: a fail counts anyway
    gate = output_check_gate(repo, source_serial="XRS-TEST-1", day=TODAY)
    assert not gate.allowed and "FAILED" in gate.reason
    assert [q.result for q in qa_results_for_planning(repo, source_serial="XRS-TEST-1", day=TODAY)] == [QaOutcome.FAIL]


def test_the_incident_reading_never_becomes_a_scale_factor():
    # source not fully inserted: the chamber saw about half the output (230.7 s became 436.6 s)
    world = World(output_fraction=230.7 / 436.6)
    check, _, _ = make_check(world)
    record = check.run(OutputCheckRequest("20", "101.325"))
    assert record.result is QaOutcome.FAIL
    repo = InMemoryQaRepository()
    repo.save(record)
    repo.mark_signed(record.qa_id, "A. Physicist")
    assert not output_check_gate(repo, source_serial="XRS-TEST-1", day=TODAY).allowed


def test_a_fail_blocks_until_a_new_check_passes_and_is_signed():
    repo = InMemoryQaRepository()
    bad, _, _ = make_check(World(output_fraction=0.9))
    repo.save(bad.run(OutputCheckRequest("20", "101.325")))
    good, _, _ = make_check(World())
    passed = good.run(OutputCheckRequest("20", "101.325"))
    repo.save(passed)
    gate = output_check_gate(repo, source_serial="XRS-TEST-1", day=TODAY)
    assert not gate.allowed and "FAILED" in gate.reason         # the pass is not signed yet
    repo.mark_signed(passed.qa_id, "A. Physicist")
    gate = output_check_gate(repo, source_serial="XRS-TEST-1", day=TODAY)
    assert gate.allowed and gate.qa_result.qa_id == passed.qa_id
    # valid for that calendar day only
    assert not output_check_gate(repo, source_serial="XRS-TEST-1", day=date(2026, 11, 27)).allowed
    assert not output_check_gate(repo, source_serial="XRS-OTHER", day=TODAY).allowed


def test_a_warning_needs_a_physicists_acknowledgement():
    world = World(output_fraction=1.025)
    check, _, _ = make_check(world)
    record = check.run(OutputCheckRequest("20", "101.325"))
    assert record.result is QaOutcome.WARNING
    repo = InMemoryQaRepository()
    repo.save(record)
    repo.mark_signed(record.qa_id, "A. Physicist")
    gate = output_check_gate(repo, source_serial="XRS-TEST-1", day=TODAY)
    assert not gate.allowed and "acknowledge" in gate.reason
    with pytest.raises(QaInputError):
        acknowledge_warning(repo, record.qa_id, physicist="phys", comment="  ")
    acknowledge_warning(repo, record.qa_id, physicist="phys", comment="setup re-checked, T/P re-read")
    gate = output_check_gate(repo, source_serial="XRS-TEST-1", day=TODAY)
    assert gate.allowed and gate.qa_result.acknowledged and gate.qa_result.k_out == pytest.approx(1.025, abs=1e-3)


def test_acknowledging_a_fail_is_refused():
    check, _, _ = make_check(World(output_fraction=0.9))
    repo = InMemoryQaRepository()
    record = check.run(OutputCheckRequest("20", "101.325"))
    repo.save(record)
    with pytest.raises(QaInputError, match="not a warning"):
        acknowledge_warning(repo, record.qa_id, physicist="phys", comment="looks fine")


def test_implausible_entries_stop_the_check_before_any_device_traffic():
    world = World()
    check, xrs, readout = make_check(world)
    with pytest.raises(QaIncomplete, match="hPa"):
        check.run(OutputCheckRequest("20", "1013"))
    assert xrs.calls == [] and readout.calls == []


def test_source_serial_must_match_the_calibration():
    world = World()
    check, xrs, _ = make_check(world)
    xrs.serial = "XRS-OTHER"
    with pytest.raises(QaIncomplete, match="XRS-OTHER"):
        check.run(OutputCheckRequest("20", "101.325"))
    assert "beam_on" not in xrs.calls


def test_isotropy_against_baseline_and_beam_switched_off():
    from orconsole.qa import evaluate_isotropy, run_isotropy_check

    world = World()
    xrs = FakeXrs(world)
    record = run_isotropy_check(xrs, calibration(), sleep=world.clock.sleep, monotonic=world.clock.monotonic)
    assert record.passed and record.deviations["plus_x"] == pytest.approx(0.01)
    assert xrs.calls[-1] == "beam_off" and xrs.state.value == "ready"
    bad = evaluate_isotropy({"plus_x": 1.05, "minus_x": 1.0, "plus_y": 1.0, "minus_y": 0.96, "plus_z": 1.0},
                            source_serial="XRS-TEST-1", baseline={"plus_x": 1.01, "minus_x": 1.0, "plus_y": 1.0,
                                                                  "minus_y": 1.0, "plus_z": 1.0})
    assert not bad.passed and set(d for d, v in bad.deviations.items() if abs(v) > 0.03) == {"plus_x", "minus_y"}
    assert "plus_x +3.96 %" in bad.message and "minus_y -4.00 %" in bad.message


def test_mechanics_pass_fail_against_tolerance():
    from orconsole.qa import evaluate_mechanics

    assert evaluate_mechanics(source_serial="S", probe_straightness_mm=0.1, beam_centering_mm=0.2).passed
    failed = evaluate_mechanics(source_serial="S", probe_straightness_mm=0.25, beam_centering_mm=0.1)
    assert not failed.passed and "probe straightness 0.25 mm" in failed.message
    with pytest.raises(QaInputError, match="µm"):
        evaluate_mechanics(source_serial="S", probe_straightness_mm=100, beam_centering_mm=0.1)
    with pytest.raises(QaInputError):
        evaluate_mechanics(source_serial="S", probe_straightness_mm=-0.1, beam_centering_mm=0.1)


def test_k_out_does_not_depend_on_the_sites_t0_convention():
    eu, _, _ = make_check(World(room_k_tp=k_tp(23.5, 102.0)), policy=QaPolicy(reference_temperature_c=20.0))
    us, _, _ = make_check(World(room_k_tp=k_tp(23.5, 102.0)), policy=QaPolicy(reference_temperature_c=22.0))
    a = eu.run(OutputCheckRequest("23.5", "102.0"))
    b = us.run(OutputCheckRequest("23.5", "102.0"))
    assert b.k_tp == pytest.approx(0.99843, abs=5e-6) and a.k_tp == pytest.approx(1.00521, abs=5e-5)
    assert a.k_out == pytest.approx(b.k_out, rel=1e-9) and a.k_out == pytest.approx(1.0, abs=1e-3)
    assert b.reference_reading_c == pytest.approx(3.0e-9 * 293.15 / 295.15, rel=1e-12)


def test_a_sagging_chamber_voltage_stops_the_check_even_with_the_right_setpoint():
    world = World()

    class SaggingReadout(FakeReadout):
        def measured_values(self):
            values = super().measured_values()
            return type(values)(**{**values.__dict__, "hv_v": 120.0})

    check, xrs, _ = make_check(world, readout=SaggingReadout(world))
    with pytest.raises(QaIncomplete, match="measures 120 V"):
        check.run(OutputCheckRequest("20", "101.3"))
    assert "beam_on" not in xrs.calls


def test_isotropy_baseline_is_checked_for_plausibility_and_used_when_recorded():
    from orconsole.qa import evaluate_isotropy, make_isotropy_baseline

    with pytest.raises(QaInputError, match="plus_z"):
        make_isotropy_baseline({"plus_x": 1.0, "minus_x": 1.0, "plus_y": 1.0, "minus_y": 1.0, "plus_z": 7.0},
                               source_serial="S", recorded_by="pia")
    repo = InMemoryQaRepository()
    assert repo.baseline("S") is None
    reading = {"plus_x": 1.012, "minus_x": 0.991, "plus_y": 1.004, "minus_y": 0.987, "plus_z": 1.006}
    repo.save_baseline(make_isotropy_baseline(reading, source_serial="S", recorded_by="pia"))
    today = {d: v * 1.035 for d, v in reading.items()}      # 3.5 % more in every direction
    assert not evaluate_isotropy(today, source_serial="S", baseline=repo.baseline("S").readings).passed
    nominal = evaluate_isotropy(reading, source_serial="S")
    assert nominal.passed and "no baseline recorded" in nominal.message


def test_room_conditions_read_from_a_sensor_are_checked_like_entries():
    world = World(room_k_tp=k_tp(25.0, 99.0))
    check, _, _ = make_check(world)
    check.environment = lambda: (25.0, 99.0)
    record = check.run(OutputCheckRequest(None, None))
    assert record.temperature_entered == "25.0 C (sensor)" and record.pressure_entered == "99.0 kPa (sensor)"
    assert record.k_out == pytest.approx(1.0, abs=1e-3)
    broken, xrs, _ = make_check(World())
    broken.environment = lambda: (25.0, 9.9)          # a sensor reporting nonsense is refused, not clipped
    with pytest.raises(QaIncomplete, match="plausible"):
        broken.run(OutputCheckRequest(None, None))
    assert xrs.calls == []
    nothing, _, _ = make_check(World())
    with pytest.raises(QaIncomplete, match="enter the temperature"):
        nothing.run(OutputCheckRequest(None, "101.3"))


def test_cancel_during_an_exposure_switches_the_beam_off_and_gives_no_result():
    world = World()
    check, xrs, readout = make_check(world)
    progress = []
    check.on_progress = progress.append
    real_sleep = world.clock.sleep

    def sleep_and_cancel_mid_second_reading(seconds):
        real_sleep(seconds)
        if xrs.calls.count("beam_on") == 2 and xrs.state.value == "beam_on":
            check.cancel()

    check.sleep = sleep_and_cancel_mid_second_reading
    with pytest.raises(QaIncomplete, match="cancelled") as info:
        check.run(OutputCheckRequest("20", "101.325"))
    assert xrs.beam_off_reasons[-1] is BeamOffReason.OPERATOR_STOP and xrs.state.value == "ready"
    assert len(info.value.readings) == 1 and readout.calls[-1] == "release"
    assert progress and progress[-1].beam_may_be_on and len(progress[-1].readings_nc) == 1
    assert any(p.readings_nc == () for p in progress)


def test_an_electrometer_error_after_arming_still_ends_with_beam_off():
    from drivers.errors import LinkLost

    world = World()

    class DeadReadout(FakeReadout):
        def start(self):
            raise LinkLost("electrometer link lost: check the cable", device="readout")

    check, xrs, _ = make_check(world, readout=DeadReadout(world))
    with pytest.raises(QaIncomplete, match="link lost"):
        check.run(OutputCheckRequest("20", "101.325"))
    assert "beam_on" not in xrs.calls and xrs.calls[-1] == "beam_off"
    assert xrs.beam_off_reasons == [BeamOffReason.CONSOLE_FAULT]
