"""Supervisor behaviour the delivery record depends on, on a ManualClock (no thread): the final IRM dose is
read after HV has ramped down, a journal that cannot be opened leaves the console up with the interlock
active, and a unit that keeps irradiating after a lost beam off is switched off again."""
from __future__ import annotations

import pytest

from drivers.hal import BeamOffCause, XrsFault, XrsInterlock, XrsState
from orconsole.config import DeliveryConfig, SiteConfig
from orconsole.interlocks import InterlockId
from orconsole.models import ApprovedPlan
from orconsole.statemachine import State
from orconsole.supervisor import Supervisor
from simulators.clock import ManualClock

from tests.core import factories as f
from tests.core.fake_xrs import FakeXrs

PLAN_TIME_S = 10.0
CONFIG = SiteConfig(delivery=DeliveryConfig(ramp_up_s=0.3))


class RampingFakeXrs(FakeXrs):
    """After beam off, HV ramps down for `ramp_s` while the IRM keeps counting (at the full rate: an upper
    bound); the IRM is reset at the next arm, as the real unit does."""

    ramp_s = 0.04

    def __init__(self, clock, **kwargs) -> None:
        super().__init__(clock, **kwargs)
        self._ramp_until: float | None = None

    def _advance(self) -> None:
        super()._advance()
        if self._ramp_until is not None:
            now = self.clock.now_s()
            end = min(now, self._ramp_until)
            self.irm_dose_gy += max(0.0, end - self._ramp_from) * self.rate_gy_per_s
            self._ramp_from = end
            if now >= self._ramp_until:
                self._ramp_until = None
                self.state = XrsState.READY

    def beam_off(self, reason) -> None:
        was_on = self.state is XrsState.BEAM_ON
        super().beam_off(reason)
        if was_on:
            self.state = XrsState.RAMP_DOWN
            self._ramp_from = self.clock.now_s()
            self._ramp_until = self._ramp_from + self.ramp_s


def approved() -> ApprovedPlan:
    p = f.plan().model_copy(update={"treatment_time_s": PLAN_TIME_S, "preset_time_s": PLAN_TIME_S})
    return (ApprovedPlan(plan=p).with_approval(f.physician_approval(p))
            .with_approval(f.physicist_approval(p, physicist_time_s=PLAN_TIME_S)))


def make(tmp_path, xrs_cls=FakeXrs, journal_path=None):
    clock = ManualClock(100.0)
    xrs = xrs_cls(clock, dose_rate_gy_per_s=20.0 / PLAN_TIME_S, serial=f.SERIAL)
    sup = Supervisor(xrs, journal_path=journal_path or tmp_path / "journal.jsonl", clock=clock,
                     device_source_serial=f.SERIAL, config=CONFIG, today=lambda: f.TODAY, qa_results=lambda: [f.qa()])
    return sup, xrs, clock


def do(sup, name, **kwargs):
    future = sup.submit(name, **kwargs)
    sup._drain()
    return future.result(timeout=0)


def start_beam(sup, plan):
    for name, kwargs in (("load_plan", {"plan": ApprovedPlan(plan=plan.plan)}), ("approve", {"plan": plan}),
                         ("verify_identity", {"medical_record_number": "MRN-100234",
                                              "date_of_birth": f.patient().date_of_birth}),
                         ("confirm_ready", {}), ("arm", {}), ("beam_on", {})):
        result = do(sup, name, **kwargs)
        assert result.ok, result.reason


def run_for(sup, clock, seconds, dt=0.05):
    for _ in range(int(round(seconds / dt))):
        clock.advance(dt)
        sup.poll_once()


def test_the_ramp_down_dose_after_a_pause_is_counted_and_resume_waits_for_it(tmp_path):
    sup, xrs, clock = make(tmp_path, RampingFakeXrs)
    reports = sup.subscribe_reports()
    start_beam(sup, approved())
    run_for(sup, clock, 2.0)
    assert do(sup, "pause", reason="surgeon asks").ok
    assert sup.snapshot().closing_segment
    refused = do(sup, "resume")
    assert not refused.ok and "ramping HV down" in refused.reason
    run_for(sup, clock, 1.0)                      # the unit reaches READY; the segment closes with its full IRM
    assert not sup.snapshot().closing_segment
    segment_gy = sup._segments[0].irm_dose_gy
    assert segment_gy > 2.0 * 2.0 + 0.04 * 2.0 * 0.9   # beam (2 s) plus the 0.04 s ramp, at 2 Gy/s
    assert do(sup, "resume").ok
    run_for(sup, clock, 12.0)
    report = reports.get_nowait()
    assert [p[2] for p in report.pauses] == ["surgeon asks"]
    assert report.secondary_dose_gy == sum(s.irm_dose_gy for s in report.segments)
    assert len(report.segments) == 2 and all(s.final_read for s in report.segments)


def test_a_journal_that_cannot_be_opened_starts_the_console_with_the_interlock_active(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    sup, xrs, clock = make(tmp_path, journal_path=blocker / "journal.jsonl")
    assert sup.interlocks.is_active(InterlockId.JOURNAL_WRITE_FAILURE)
    result = do(sup, "load_plan", plan=ApprovedPlan(plan=approved().plan))
    assert result.ok
    do(sup, "approve", plan=approved())
    do(sup, "verify_identity", medical_record_number="MRN-100234", date_of_birth=f.patient().date_of_birth)
    refused = do(sup, "confirm_ready")
    assert not refused.ok and "journal" in refused.reason.lower()
    assert xrs.state is not XrsState.BEAM_ON


def test_a_unit_still_irradiating_after_a_lost_beam_off_is_switched_off_again(tmp_path):
    sup, xrs, clock = make(tmp_path)
    start_beam(sup, approved())
    run_for(sup, clock, 1.0)
    xrs.link_down = True
    assert do(sup, "pause").ok                    # the beam off did not reach the unit
    assert xrs.state is XrsState.BEAM_ON
    xrs.link_down = False
    clock.advance(0.05)
    sup.poll_once()
    assert xrs.state is not XrsState.BEAM_ON and xrs.cause is BeamOffCause.CONSOLE_COMMAND
    assert sup.interlocks.is_active(InterlockId.DEVICE_FAULT)
    assert sup.sm.state is State.FAULT


def test_reconnect_is_refused_during_beam_and_restores_the_link_otherwise(tmp_path):
    sup, xrs, clock = make(tmp_path)
    start_beam(sup, approved())
    refused = do(sup, "reconnect")
    assert not refused.ok and "stop it before reconnecting" in refused.reason
    xrs.link_down = True
    run_for(sup, clock, 1.0)
    assert sup.sm.state is State.FAULT and sup.interlocks.is_active(InterlockId.LINK_LOST)
    xrs.link_down = False
    result = do(sup, "reconnect")
    assert result.ok and "clear the link-lost interlock" in result.reason
    assert sup.interlocks.is_active(InterlockId.LINK_LOST)        # latched until a person clears it


def test_an_interlock_that_ends_the_beam_is_in_the_delivery_report(tmp_path):
    sup, xrs, clock = make(tmp_path)
    reports = sup.subscribe_reports()
    start_beam(sup, approved())
    run_for(sup, clock, 1.0)
    xrs.interlocks |= XrsInterlock.EXTERNAL_INTERLOCK_OPEN      # the OR door chain opens during beam
    run_for(sup, clock, 2.0)
    assert sup.sm.state in (State.TERMINATED, State.FAULT)
    report = reports.get_nowait()
    raised = [c.interlock for c in report.interlock_changes if c.state == "raised"]
    assert "device_interlock_open" in raised, report.interlock_changes


def test_a_unit_that_stopped_itself_raises_only_its_own_interlock_not_technique_alarms(tmp_path):
    sup, xrs, clock = make(tmp_path)
    start_beam(sup, approved())
    run_for(sup, clock, 1.0)
    xrs.faults |= XrsFault.INTERLOCK_OPENED     # the unit's own chain stops the beam: FAULT, 0 kV, 0 µA
    run_for(sup, clock, 1.0)
    active = {s.id.value for s in sup.interlocks.active()}
    assert "device_fault" in active
    assert not active & {"kv_out_of_tolerance", "ua_out_of_tolerance", "dose_rate_out_of_tolerance"}, active


def test_a_unit_that_lost_its_counters_never_lowers_the_delivered_dose_below_the_journal():
    from orconsole.supervisor import RecoveredReading

    rebooted = RecoveredReading(irm_since_last_arm_gy=0.0, beam_on_time_since_last_arm_s=0.0,
                                irm_before_last_arm_gy=0.0, device_state="standby", detail="",
                                journal_irm_gy=8.1, unjournalled_bound_gy=0.03)
    assert rebooted.counters_reset and rebooted.unit_counter_gy == 0.0
    assert rebooted.delivered_gy == pytest.approx(8.13)          # journal + the most it could have missed
    intact = RecoveredReading(irm_since_last_arm_gy=8.4, beam_on_time_since_last_arm_s=9.7,
                              irm_before_last_arm_gy=0.0, device_state="ready", detail="",
                              journal_irm_gy=8.1, unjournalled_bound_gy=0.03)
    assert not intact.counters_reset and intact.delivered_gy == 8.4   # the unit's own counter when it has one


def test_a_wall_clock_jump_during_beam_is_flagged_and_beam_timing_is_unaffected(tmp_path):
    from datetime import datetime, timedelta, timezone

    clock = ManualClock(100.0)
    jump = {"s": 0.0}
    base = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
    xrs = FakeXrs(clock, dose_rate_gy_per_s=20.0 / PLAN_TIME_S, serial=f.SERIAL)
    sup = Supervisor(xrs, journal_path=tmp_path / "journal.jsonl", clock=clock, device_source_serial=f.SERIAL,
                     config=CONFIG, today=lambda: f.TODAY, qa_results=lambda: [f.qa()],
                     utc_now=lambda: base + timedelta(seconds=clock.now_s() + jump["s"]))
    reports = sup.subscribe_reports()
    start_beam(sup, approved())
    run_for(sup, clock, 1.0)
    jump["s"] = -3600.0                         # somebody sets the wall clock back one hour
    run_for(sup, clock, PLAN_TIME_S + 3.0)
    report = reports.get_nowait()
    jumps = [c for c in report.interlock_changes if c.interlock == "wall_clock_jump"]
    assert len(jumps) == 1 and "-3600.0 s" in jumps[0].detail
    assert report.console_beam_on_s == pytest.approx(PLAN_TIME_S, abs=0.06)   # monotonic timing unaffected
