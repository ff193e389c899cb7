"""The output check against the coupled simulator bench (real drivers over sim://): the chamber in
the QA holder sees the simulated source, so the room, the HV, overloads, noise and the source output
act on the reading as they would on a real bench."""
from __future__ import annotations

import itertools
import json
from datetime import date, timedelta

import pytest

from drivers.unidos import UnidosDriver
from drivers.xrs import XrsDriver
from orconsole.calibration import parse_calibration_json
from orconsole.models import QaOutcome, Refused
from orconsole.qa import (InMemoryQaRepository, OutputCheck, OutputCheckRequest, QaIncomplete, QaPolicy,
                          output_check_gate, qa_results_for_planning)
from simulators.bench import get_bench, reset_benches
from simulators.sources import calibration_document

_names = itertools.count()


@pytest.fixture
def bench():
    name = f"qa-sim-{next(_names)}"
    b = get_bench(name, seed="11")
    b.unidos_model.warmup_s = 0.3          # real instrument: 300 s; the procedure must wait it out
    b.unidos_model.zero_duration_s = 0.3
    b.name = name
    yield b
    reset_benches()


@pytest.fixture
def devices(bench):
    xrs = XrsDriver(f"sim://xrs?bench={bench.name}")
    readout = UnidosDriver(f"sim://unidos?bench={bench.name}")
    yield xrs, readout
    xrs.close()
    readout.close()


def fast_calibration():
    doc = calibration_document("fast", calibrated_on=date.today() - timedelta(days=1))
    return parse_calibration_json(json.dumps(doc), file="fast.json", max_dose_rate_gy_per_min=200.0)


def run_check(devices, temperature="20 C", pressure="101.325 kPa", policy=None):
    xrs, readout = devices
    return OutputCheck(xrs=xrs, readout=readout, calibration=fast_calibration(),
                       policy=policy or QaPolicy()).run(OutputCheckRequest(temperature, pressure))


def beam_is_off(bench) -> bool:
    return not bench.xrs_model.hv_on


def test_nominal_bench_passes_with_k_out_near_one(bench, devices):
    record = run_check(devices)
    assert record.result is QaOutcome.PASS
    assert record.k_out == pytest.approx(1.0, abs=0.01)
    assert len(record.readings) == 3 and record.spread_fraction < 0.005
    assert record.instruments.xrs_serial == "XRS-SIM-FAST-01" and record.instruments.electrometer_serial
    assert beam_is_off(bench)


def test_warm_low_pressure_room_lowers_the_raw_reading_but_not_k_out(bench, devices):
    bench.room.temperature_c = 30.0
    bench.room.pressure_kpa = 95.0
    record = run_check(devices, "30 C", "950 hPa")
    assert record.raw_mean_c == pytest.approx(3.0e-9 / 1.10296, rel=0.01)     # about 9 % low
    assert record.k_tp == pytest.approx(1.10296, abs=1e-5)
    assert record.k_out == pytest.approx(1.0, abs=0.01) and record.result is QaOutcome.PASS


def test_wrong_room_entry_is_not_corrected_away(bench, devices):
    # the room is warm and low, but the physicist enters reference conditions: k_out shows the error
    bench.room.temperature_c = 30.0
    bench.room.pressure_kpa = 95.0
    record = run_check(devices, "20 C", "101.325 kPa")
    assert record.k_out == pytest.approx(1 / 1.10296, abs=0.01) and record.result is QaOutcome.FAIL


def test_wrong_chamber_hv_setpoint_stops_before_any_exposure(bench, devices):
    _, readout = devices
    readout.connect()
    readout.acquire_write_permission()
    readout.set_hv(200)
    readout.release_write_permission()
    with pytest.raises(QaIncomplete, match="chamber voltage is 200 V"):
        run_check(devices)
    xrs, _ = devices
    status = xrs.status()
    assert status.last_beam_off_cause.value == "none" and status.beam_on_time_s == 0.0   # never irradiated


def test_sagging_chamber_hv_stops_the_check(bench, devices):
    bench.unidos_model.inject("hv_fault", value=50)
    with pytest.raises(QaIncomplete, match="chamber"):
        run_check(devices, policy=QaPolicy(hv_settle_timeout_s=1.0))
    assert beam_is_off(bench)


def test_electrometer_overload_gives_no_result_and_the_beam_ends_off(bench, devices):
    bench.unidos_model.inject("overload", which="charge")
    with pytest.raises(QaIncomplete, match="overload"):
        run_check(devices)
    assert beam_is_off(bench)


def test_range_too_sensitive_overloads(bench, devices):
    # 3 nC per fast-source exposure exceeds the VERY_LOW range (3 nC max, 300 pA)
    with pytest.raises(QaIncomplete, match="overload"):
        run_check(devices, policy=QaPolicy(measurement_range="VERY_LOW"))
    assert beam_is_off(bench)


def test_scattering_readings_are_repeated_then_refused(bench, devices):
    bench.unidos_model.noise_fraction = 0.02
    with pytest.raises(QaIncomplete, match="scatter") as info:
        run_check(devices)
    assert len(info.value.readings) == 6
    assert beam_is_off(bench)


def test_source_output_ten_percent_low_fails_and_blocks_treatment(bench, devices):
    from orconsole.dosecalc import todays_output_check

    bench.xrs_model.inject("output_drop", fraction=0.10)
    record = run_check(devices)
    assert record.k_out == pytest.approx(0.90, abs=0.01)
    assert record.result is QaOutcome.FAIL
    repo = InMemoryQaRepository()
    repo.save(record)
    gate = output_check_gate(repo, source_serial=record.source_serial, day=record.performed_on)
    assert not gate.allowed and "FAILED" in gate.reason
    results = qa_results_for_planning(repo, source_serial=record.source_serial, day=record.performed_on)
    with pytest.raises(Refused) as refused:
        todays_output_check(results, source_serial=record.source_serial, today=record.performed_on)
    assert refused.value.code == "qa_failed"


def test_zeroing_waits_out_the_electrometer_warm_up(bench, devices):
    import time

    bench.unidos_model.warmup_s = 2.0
    steps = []
    xrs, readout = devices
    started = time.monotonic()
    record = OutputCheck(xrs=xrs, readout=readout, calibration=fast_calibration(),
                         on_step=steps.append).run(OutputCheckRequest("20", "101.325"))
    assert record.result is QaOutcome.PASS
    assert "electrometer warming up; waiting to zero" in steps
    assert steps.index("zero correction passed") > steps.index("electrometer warming up; waiting to zero")
    assert time.monotonic() - started >= 1.5


def test_isotropy_reads_the_photodiodes_with_the_beam_on_and_switches_it_off(bench, devices):
    from orconsole.qa import run_isotropy_check

    xrs, _ = devices
    record = run_isotropy_check(xrs, fast_calibration())
    assert record.passed and set(record.readings) == {"plus_x", "minus_x", "plus_y", "minus_y", "plus_z"}
    assert all(abs(v) < 0.03 for v in record.deviations.values())
    assert beam_is_off(bench)


def test_isotropy_fails_when_the_output_drops(bench, devices):
    from orconsole.qa import run_isotropy_check

    bench.xrs_model.inject("output_drop", fraction=0.10)
    record = run_isotropy_check(devices[0], fast_calibration())
    assert not record.passed and "FAIL" in record.message
    assert beam_is_off(bench)
