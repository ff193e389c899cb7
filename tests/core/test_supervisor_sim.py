"""The supervisor with the real XRS driver over sim:// against the fast simulated source: a continuation
plan calculated, independently checked, approved, delivered and journalled end to end."""
from __future__ import annotations

import itertools
import time

import pytest

from drivers.hal import XrsState
from drivers.xrs import XrsDriver
from orconsole.config import DeliveryConfig, PlanningConfig, SiteConfig
from orconsole.dosecalc import compute_treatment_time, make_plan
from orconsole.dosecheck import check_plan
from orconsole.journal import read_journal
from orconsole.models import (ApplicatorDoseRate, Approval, ApprovedPlan, ApproverRole, SourceCalibration)
from orconsole.statemachine import State
from orconsole.supervisor import Supervisor, TerminationStatus
from simulators.bench import get_bench, reset_benches
from simulators.clock import MonotonicClock
from simulators.sources import load_source

from tests.core import factories as f

_names = itertools.count()
CONFIG = SiteConfig(planning=PlanningConfig(treatment_time_min_s=10.0), delivery=DeliveryConfig(ramp_up_s=0.5))


@pytest.fixture
def xrs():
    name = f"core-sup-{next(_names)}"
    get_bench(name, source="fast", applicator="3.0", seed="5")
    driver = XrsDriver(f"sim://xrs?bench={name}")
    yield driver
    driver.close()
    reset_benches()


def fast_calibration() -> SourceCalibration:
    source = load_source("fast")
    return SourceCalibration(
        source_serial=source.serial, qa_reference_reading_c=source.reference_reading_c,
        dose_rates=tuple(ApplicatorDoseRate(diameter_cm=a.diameter_cm,
                                            surface_dose_rate_gy_per_min=a.surface_dose_rate_gy_per_min,
                                            assumption=a.assumption) for a in source.applicators),
        calibration_date=f.TODAY, valid_until=f.TODAY, calibrated_by="simulator data")


def test_a_continuation_is_delivered_end_to_end_on_the_simulator(xrs, tmp_path):
    identity = xrs.connect()
    xrs.set_technique(50.0, 40.0)
    xrs.warm_up()
    deadline = time.monotonic() + 10
    while xrs.status().state is not XrsState.READY:
        assert time.monotonic() < deadline, "the simulated unit did not warm up"
        time.sleep(0.05)
    calibration = fast_calibration()
    qa = f.qa(source_serial=identity.serial_number)
    # 18 Gy were delivered before an interruption: 2 Gy remain (≈ 2.3 s on the ×60 fast source)
    t = compute_treatment_time(prescription_dose_gy=20.0, applicator_cm=3.0, protocol=f.protocol(),
                               calibration=calibration, qa_results=[qa], device_source_serial=identity.serial_number,
                               today=f.TODAY, config=CONFIG, previously_delivered_gy=18.0)
    plan = make_plan(t, plan_id="PLAN-SIM-1", patient=f.patient(), cavity=f.cavity(), protocol=f.protocol(),
                     created_at=f.NOW, created_by="test", supersedes_hash="cd" * 32)
    check = check_plan(plan, calibration, agreement_fraction=CONFIG.planning.independent_check_agreement_fraction)
    approved = (ApprovedPlan(plan=plan).with_approval(f.physician_approval(plan))
                .with_approval(Approval(plan_content_hash=plan.content_hash, role=ApproverRole.PHYSICIST,
                                        approver_id="p", approver_name="P", approved_at=f.NOW, signature_ref="s",
                                        independent_check=check)))
    sup = Supervisor(xrs, journal_path=tmp_path / "j.jsonl", clock=MonotonicClock(),
                     device_source_serial=identity.serial_number, config=CONFIG, today=lambda: f.TODAY,
                     qa_results=lambda: [qa])
    box = sup.subscribe()
    sup.start()
    try:
        for future in (sup.load_plan(ApprovedPlan(plan=plan)), sup.approve(approved),
                       sup.verify_identity(medical_record_number="MRN-100234", date_of_birth=f.patient().date_of_birth),
                       sup.confirm_ready(), sup.arm(), sup.beam_on()):
            result = future.result(timeout=5)
            assert result.ok, result.reason
        snap = box.wait_for(lambda s: s.state in (State.COMPLETED, State.TERMINATED, State.FAULT), 30)
        assert snap is not None and snap.state is State.COMPLETED, box.latest()
        assert snap.termination is TerminationStatus.NORMAL
        assert snap.secondary_dose_gy == pytest.approx(2.0, rel=0.05)
        assert snap.elapsed_s == pytest.approx(t.preset_time_s, abs=0.2)
    finally:
        sup.close()
    assert not xrs.status().hv_on          # read once the supervisor no longer owns the driver
    entries = read_journal(tmp_path / "j.jsonl").entries
    assert entries[0]["kind"] == "treatment_opened" and entries[-1]["kind"] == "treatment_closed"
    assert sum(e["kind"] == "progress" for e in entries) >= 1
