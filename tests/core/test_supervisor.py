"""The supervisor on its own thread against a fake X-ray source: complete treatments, the three stops,
pause/resume as continuation, journal before beam, faults, e-stop, link loss, crash recovery.

Short plans (about 1.5 s) on the real monotonic clock; assertions leave room for a loaded machine.
"""
from __future__ import annotations

import pytest

from drivers.hal import BeamOffReason, XrsFault, XrsInterlock
from orconsole.config import DeliveryConfig, SiteConfig
from orconsole.interlocks import ClearRole, InterlockId
from orconsole.journal import Journal, read_journal
from orconsole.models import ApprovedPlan, QaOutcome
from orconsole.statemachine import State
from orconsole.supervisor import CommandResult, Supervisor, TerminationStatus
from simulators.clock import MonotonicClock

from tests.core import factories as f
from tests.core.fake_xrs import FakeXrs

PLAN_TIME_S = 1.5
TIMEOUT_S = 10.0


def short_plan(time_s: float = PLAN_TIME_S) -> ApprovedPlan:
    p = f.plan().model_copy(update={"treatment_time_s": time_s, "preset_time_s": time_s})
    return (ApprovedPlan(plan=p).with_approval(f.physician_approval(p))
            .with_approval(f.physicist_approval(p, physicist_time_s=time_s)))


CONFIG = SiteConfig(delivery=DeliveryConfig(ramp_up_s=0.3))


@pytest.fixture
def rig(tmp_path):
    clock = MonotonicClock()
    xrs = FakeXrs(clock, dose_rate_gy_per_s=20.0 / PLAN_TIME_S)
    qa_results = [f.qa()]
    store_ok = {"value": True}
    sup = Supervisor(xrs, journal_path=tmp_path / "journal.jsonl", clock=clock, device_source_serial=f.SERIAL,
                     config=CONFIG, today=lambda: f.TODAY, qa_results=lambda: qa_results,
                     record_store_available=lambda: store_ok["value"])
    box = sup.subscribe()
    sup.start()
    yield sup, xrs, box, tmp_path / "journal.jsonl", qa_results, store_ok
    sup.close()


def ok(future) -> CommandResult:
    result = future.result(timeout=TIMEOUT_S)
    assert result.ok, result.reason
    return result


def to_ready(sup, plan=None, xrs=None) -> ApprovedPlan:
    plan = plan or short_plan()
    if xrs is not None:                       # the fake source delivers at the plan's rate
        xrs.rate_gy_per_s = plan.plan.dose_to_deliver_gy / plan.plan.treatment_time_s
    ok(sup.load_plan(ApprovedPlan(plan=plan.plan)))
    ok(sup.approve(plan))
    ok(sup.verify_identity(medical_record_number="MRN-100234", date_of_birth=f.patient().date_of_birth))
    ok(sup.confirm_ready())
    return plan


def wait_state(box, *states, timeout_s=TIMEOUT_S):
    snap = box.wait_for(lambda s: s.state in states, timeout_s)
    assert snap is not None, f"state never became {states}; last {box.latest()}"
    return snap


def test_a_full_treatment_ends_at_the_preset_time(rig):
    sup, xrs, box, journal_path, *_ = rig
    xrs.output_factor = 0.98                 # the timer, not the IRM, ends it
    plan = to_ready(sup)
    ok(sup.arm())
    armed = xrs.arm_calls[-1]
    assert armed["backup_time_s"] == pytest.approx(round(PLAN_TIME_S * 1.05, 1))
    assert armed["irm_limit_gy"] == pytest.approx(20.0 * 1.05)
    assert armed["plan_hash"] == bytes.fromhex(plan.plan.content_hash)
    ok(sup.beam_on())
    snap = wait_state(box, State.COMPLETED, State.TERMINATED, State.FAULT)
    assert snap.state is State.COMPLETED, snap.last_message
    assert snap.termination is TerminationStatus.NORMAL
    assert BeamOffReason.PRESET_TIME_REACHED in xrs.beam_off_reasons
    assert snap.elapsed_s == pytest.approx(PLAN_TIME_S, abs=0.3)
    assert snap.secondary_dose_gy == pytest.approx(20.0 * 0.98, rel=0.05)
    kinds = [e["kind"] for e in read_journal(journal_path).entries]
    assert kinds[0] == "treatment_opened" and kinds[1] == "beam_on" and kinds[-1] == "treatment_closed"
    assert read_journal(journal_path).unfinished == ()


def test_the_secondary_dose_channel_stops_a_hot_beam(rig):
    sup, xrs, box, *_ = rig
    xrs.output_factor = 1.04
    to_ready(sup)
    ok(sup.arm())
    ok(sup.beam_on())
    snap = wait_state(box, State.COMPLETED, State.TERMINATED, State.FAULT)
    assert snap.state is State.COMPLETED, snap.last_message
    assert BeamOffReason.DOSE_MONITOR_REACHED in xrs.beam_off_reasons
    assert snap.elapsed_s < PLAN_TIME_S


def test_pause_and_resume_deliver_only_the_remainder(rig):
    sup, xrs, box, *_ = rig
    xrs.output_factor = 0.98
    to_ready(sup)
    ok(sup.arm())
    ok(sup.beam_on())
    box.wait_for(lambda s: s.elapsed_s >= 0.5, TIMEOUT_S)
    paused = ok(sup.pause())
    assert paused.state is State.PAUSED
    elapsed = box.latest().elapsed_s
    ok(sup.resume())
    rearm = xrs.arm_calls[-1]
    remaining = PLAN_TIME_S - elapsed
    assert rearm["backup_time_s"] == pytest.approx(remaining * 1.05, abs=0.15)
    assert rearm["irm_limit_gy"] < 20.0 * 1.05 * (remaining + 0.2) / PLAN_TIME_S
    snap = wait_state(box, State.COMPLETED, State.TERMINATED, State.FAULT)
    assert snap.state is State.COMPLETED, snap.last_message
    assert snap.elapsed_s == pytest.approx(PLAN_TIME_S, abs=0.3)
    assert snap.secondary_dose_gy == pytest.approx(20.0 * 0.98, rel=0.05)   # both segments counted


def test_illegal_commands_are_refused_with_a_reason(rig):
    sup, *_ = rig
    result = sup.beam_on().result(timeout=TIMEOUT_S)
    assert not result.ok and "not possible now" in result.reason and result.state is State.IDLE
    result = sup.submit("launch").result(timeout=TIMEOUT_S)
    assert not result.ok and "unknown command" in result.reason


def test_ready_needs_verified_identity_and_todays_output_check(rig):
    sup, xrs, box, _, qa_results, store_ok = rig
    plan = short_plan()
    ok(sup.load_plan(ApprovedPlan(plan=plan.plan)))
    ok(sup.approve(plan))
    wrong = sup.verify_identity(medical_record_number="MRN-999", date_of_birth=f.patient().date_of_birth)
    assert "medical record number" in wrong.result(timeout=TIMEOUT_S).reason
    refused = sup.confirm_ready().result(timeout=TIMEOUT_S)
    assert not refused.ok and "identity" in refused.reason
    ok(sup.verify_identity(medical_record_number="MRN-100234", date_of_birth=f.patient().date_of_birth))
    qa_results[:] = [f.qa(1.05, QaOutcome.FAIL)]
    refused = sup.confirm_ready().result(timeout=TIMEOUT_S)
    assert not refused.ok and "FAILED" in refused.reason
    qa_results[:] = [f.qa()]
    store_ok["value"] = False
    refused = sup.confirm_ready().result(timeout=TIMEOUT_S)
    assert not refused.ok and "record store" in refused.reason.lower()
    store_ok["value"] = True
    ok(sup.confirm_ready())


def test_journal_failure_before_beam_on_refuses_the_beam(tmp_path):
    clock = MonotonicClock()
    xrs = FakeXrs(clock, dose_rate_gy_per_s=20.0 / PLAN_TIME_S)
    calls = {"n": 0, "fail": False}

    def fsync(fd):
        calls["n"] += 1
        if calls["fail"]:
            raise OSError(28, "No space left on device")

    sup = Supervisor(xrs, journal_path=tmp_path / "j.jsonl", clock=clock, device_source_serial=f.SERIAL,
                     config=CONFIG, today=lambda: f.TODAY, qa_results=lambda: [f.qa()], journal_fsync=fsync).start()
    try:
        to_ready(sup)
        ok(sup.arm())
        calls["fail"] = True
        result = sup.beam_on().result(timeout=TIMEOUT_S)
        assert not result.ok and "journal" in result.reason.lower()
        assert xrs.state.value != "beam_on"
        assert sup.interlocks.is_active(InterlockId.JOURNAL_WRITE_FAILURE)
    finally:
        sup.close()


def test_a_device_fault_during_beam_ends_in_fault_and_needs_confirmation(rig):
    sup, xrs, box, *_ = rig
    to_ready(sup, short_plan(3.0), xrs)
    ok(sup.arm())
    ok(sup.beam_on())
    box.wait_for(lambda s: s.elapsed_s >= 0.3, TIMEOUT_S)
    xrs.faults = XrsFault.HV_ARC
    snap = wait_state(box, State.FAULT, State.TERMINATED, State.COMPLETED)
    assert snap.state is State.FAULT
    assert any(s.id is InterlockId.DEVICE_FAULT and "hv arc" in s.detail for s in snap.interlocks)
    refused = sup.acknowledge_fault(beam_confirmed_off=False).result(timeout=TIMEOUT_S)
    assert not refused.ok and "beam is off" in refused.reason
    ok(sup.acknowledge_fault(beam_confirmed_off=True))
    ok(sup.reset())


def test_kv_out_of_tolerance_terminates_with_its_message(rig):
    sup, xrs, box, *_ = rig
    to_ready(sup, short_plan(3.0), xrs)
    ok(sup.arm())
    ok(sup.beam_on())
    box.wait_for(lambda s: s.elapsed_s >= 0.4, TIMEOUT_S)
    xrs.kv_offset = -3.0
    snap = wait_state(box, State.TERMINATED, State.FAULT, State.COMPLETED)
    assert snap.state is State.TERMINATED and snap.termination is TerminationStatus.MACHINE
    assert "47.00 kV" in snap.last_message and "physicist" in snap.last_message
    assert BeamOffReason.CONSOLE_INTERLOCK in xrs.beam_off_reasons
    refused = sup.clear_interlock(InterlockId.KV_OUT_OF_TOLERANCE, role=ClearRole.THERAPIST,
                                  acknowledgement="ok").result(timeout=TIMEOUT_S)
    assert not refused.ok


def test_emergency_stop_terminates(rig):
    sup, xrs, box, *_ = rig
    to_ready(sup, short_plan(3.0), xrs)
    ok(sup.arm())
    ok(sup.beam_on())
    result = ok(sup.emergency_stop())
    assert result.state is State.TERMINATED
    assert xrs.state.value != "beam_on"
    assert sup.interlocks.is_active(InterlockId.EMERGENCY_STOP)


def test_emergency_stop_at_the_unit_terminates(rig):
    sup, xrs, box, *_ = rig
    to_ready(sup, short_plan(3.0), xrs)
    ok(sup.arm())
    ok(sup.beam_on())
    xrs.interlocks = XrsInterlock.EMERGENCY_STOP
    snap = wait_state(box, State.TERMINATED, State.FAULT, State.COMPLETED)
    assert snap.state is State.TERMINATED and snap.termination is TerminationStatus.OPERATOR


def test_lost_link_ends_in_fault(rig):
    sup, xrs, box, *_ = rig
    to_ready(sup, short_plan(3.0), xrs)
    ok(sup.arm())
    ok(sup.beam_on())
    xrs.link_down = True
    snap = wait_state(box, State.FAULT, State.TERMINATED, State.COMPLETED)
    assert snap.state is State.FAULT and not snap.link_ok


def test_an_unfinished_journal_starts_the_supervisor_interrupted(tmp_path):
    path = tmp_path / "j.jsonl"
    clock = MonotonicClock()
    with Journal(path, clock=clock) as journal:
        journal.treatment_opened("T-9", plan_id="P", plan_hash="ab" * 32, preset_s=1379.3, prescription_dose_gy=20.0,
                                 dose_to_deliver_gy=20.0, applicator_cm=3.0, source_serial=f.SERIAL,
                                 delivery_type="TREATMENT")
        journal.progress("T-9", elapsed_s=600.0, primary_dose_gy=8.7, irm_dose_gy=8.69, beam_on=True)
    xrs = FakeXrs(clock, dose_rate_gy_per_s=0.0145)
    sup = Supervisor(xrs, journal_path=path, clock=clock, device_source_serial=f.SERIAL, config=CONFIG,
                     today=lambda: f.TODAY)
    box = sup.subscribe()
    sup.start()
    try:
        snap = wait_state(box, State.INTERRUPTED)
        assert snap.elapsed_s == pytest.approx(600.0) and "T-9" in snap.last_message
        assert not sup.acknowledge_interruption(delivered_dose_gy=8.69, acknowledgement=" ").result(TIMEOUT_S).ok
        ok(sup.acknowledge_interruption(delivered_dose_gy=8.69, acknowledgement="IRM counter read at the unit"))
        ok(sup.reset())
    finally:
        sup.close()
    assert read_journal(path).unfinished == ()


def test_status_is_polled_continuously_as_heartbeat(rig):
    sup, xrs, box, *_ = rig
    start = xrs.status_calls
    box.wait_for(lambda s: False, 1.0)        # just wait one second
    assert xrs.status_calls - start >= 10      # nominal 20; loose for a loaded machine


def test_a_bug_in_the_status_evaluation_switches_the_beam_off_and_ends_in_fault(rig):
    sup, xrs, box, *_ = rig
    to_ready(sup, xrs=xrs)
    ok(sup.arm())
    ok(sup.beam_on())
    wait_state(box, State.BEAM_ON)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated evaluation bug")

    sup._evaluate = broken               # the next poll fails inside the supervisor's own code
    snap = wait_state(box, State.FAULT)
    assert BeamOffReason.CONSOLE_FAULT in xrs.beam_off_reasons
    assert "internal console error" in snap.last_message and "service" in snap.last_message
    assert sup._thread.is_alive(), "the supervisor thread must survive its own bug"


def test_a_failing_output_check_probe_blocks_the_start_with_its_reason_and_faults_nothing(tmp_path):
    clock = MonotonicClock()
    xrs = FakeXrs(clock, dose_rate_gy_per_s=20.0 / PLAN_TIME_S)

    def unreadable():
        raise OSError("record store down")
    sup = Supervisor(xrs, journal_path=tmp_path / "journal.jsonl", clock=clock, device_source_serial=f.SERIAL,
                     config=CONFIG, today=lambda: f.TODAY, qa_results=unreadable,
                     record_store_available=lambda: True)
    box = sup.subscribe()
    sup.start()
    try:
        plan = short_plan()
        ok(sup.load_plan(ApprovedPlan(plan=plan.plan)))
        ok(sup.approve(plan))
        ok(sup.verify_identity(medical_record_number="MRN-100234", date_of_birth=f.patient().date_of_birth))
        refused = sup.confirm_ready().result(timeout=TIMEOUT_S)
        assert not refused.ok and "output check could not be read (record store down)" in refused.reason
        assert box.wait_for(lambda s: s.seq >= 0, 1.0).state is not State.FAULT
    finally:
        sup.close()
