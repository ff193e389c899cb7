"""The simulated X-ray unit's behaviour on a manual clock: ramps, timers, IRM, watchdog, drift, faults."""
from __future__ import annotations

import math

import pytest

from protocol.xrs import BeamOffCauseCode, BeamOffReasonCode, DeviceState, ErrorCode, FaultBit, InterlockBit
from simulators.clock import ManualClock
from simulators.runner import LineFaults
from simulators.sources import load_source
from simulators.xrs_model import FAULT_KINDS, XrsModel, XrsRefusal

PLAN = bytes(range(1, 33))
OTHER_PLAN = bytes(range(2, 34))


class Rig:
    def __init__(self, source: str = "fast", **kwargs) -> None:
        self.clock = ManualClock(1000.0)
        self.events: list[dict] = []
        self.source = load_source(source)
        self.model = XrsModel(self.clock, self.source, seed=3, on_event=self.events.append, **kwargs)

    def run(self, seconds: float, *, step_s: float = 0.1, console_alive: bool = True) -> None:
        """Let time pass; the console sends a frame every step while alive."""
        remaining = seconds
        while remaining > 1e-12:
            dt = min(step_s, remaining)
            self.clock.advance(dt)
            self.model.tick()
            if console_alive:
                self.model.heard_from_console()
            remaining -= dt

    def ready(self) -> "Rig":
        self.model.warm_up()
        self.run(self.model.warm_up_s)
        assert self.model.status().state == DeviceState.READY
        return self

    def beam(self, backup_time_s: float = 60.0, irm_limit_gy: float = 30.0) -> "Rig":
        self.model.arm(backup_time_s, irm_limit_gy, PLAN)
        self.model.beam_on(PLAN)
        return self

    def rate_gy_per_s(self, diameter_cm: float = 3.0) -> float:
        return self.source.rate_for(diameter_cm) / 60.0

    def named(self, name: str) -> list[dict]:
        return [e for e in self.events if e["event"] == name]


@pytest.fixture
def rig() -> Rig:
    return Rig()


def refusal(fn, *args) -> XrsRefusal:
    with pytest.raises(XrsRefusal) as info:
        fn(*args)
    return info.value


# ---- timers and dose limits ------------------------------------------------------------------

def test_backup_timer_stops_the_beam_at_the_armed_time(rig):
    rig.ready().beam(backup_time_s=5.0)
    rig.run(6.0)
    status = rig.model.status()
    assert not status.hv_on
    assert status.beam_on_time_s == pytest.approx(5.0, abs=1e-9)
    assert status.last_beam_off_cause == BeamOffCauseCode.BACKUP_TIMER
    (off,) = rig.named("beam_off")
    assert off["reason"] == "backup_timer" and off["beam_on_time_s"] == pytest.approx(5.0)


def test_backup_timer_stops_the_beam_even_when_the_clock_jumps_past_it(rig):
    rig.ready().beam(backup_time_s=2.0)
    rig.clock.advance(0.3)
    rig.model.heard_from_console()
    rig.clock.advance(0.3)
    rig.model.heard_from_console()
    rig.run(2.0, step_s=0.3)
    assert rig.model.status().beam_on_time_s == pytest.approx(2.0, abs=1e-9)


def test_irm_limit_stops_the_beam_when_the_irm_dose_reaches_it(rig):
    rig.ready().beam(backup_time_s=60.0, irm_limit_gy=5.0)
    rig.run(8.0)
    status = rig.model.status()
    assert status.last_beam_off_cause == BeamOffCauseCode.IRM_LIMIT
    (off,) = rig.named("beam_off")
    assert off["irm_dose_gy"] == pytest.approx(5.0, abs=1e-9)
    expected_time_s = 5.0 / rig.rate_gy_per_s() + rig.model.hv_ramp_s / 2
    assert status.beam_on_time_s == pytest.approx(expected_time_s, rel=2e-3)
    # the ramp-down tail adds about half a ramp of full output
    assert status.irm_dose_gy == pytest.approx(5.0 + rig.rate_gy_per_s() * rig.model.hv_ramp_s / 2, rel=1e-4)


def test_timer_terminated_20_gy_on_the_fast_source_is_within_0_05_percent():
    rig = Rig()
    rig.ready()
    treatment_time_s = 20.0 / rig.rate_gy_per_s()
    rig.beam(backup_time_s=round(treatment_time_s, 3), irm_limit_gy=25.0)
    rig.run(treatment_time_s + 1.0, step_s=0.05)
    status = rig.model.status()
    assert status.last_beam_off_cause == BeamOffCauseCode.BACKUP_TIMER
    assert status.irm_dose_gy == pytest.approx(20.0, rel=5e-4)


def test_irm_counts_are_proportional_to_the_actual_output(rig):
    rig.ready().beam()
    rig.run(2.0)
    counts_full = rig.model.status().irm_counts
    rig.model.inject("output_drop", fraction=0.5)
    rig.run(2.0)
    counts_half = rig.model.status().irm_counts - counts_full
    assert counts_half / counts_full == pytest.approx(0.5, rel=0.01)


# ---- ramps, drift, readback ------------------------------------------------------------------

def test_hv_ramps_up_and_down_linearly_over_the_ramp_time(rig):
    rig.ready().beam()
    t0 = rig.clock.now_s()
    ramp_s = rig.model.hv_ramp_s
    assert ramp_s == pytest.approx(0.02)
    assert rig.model.status().state == DeviceState.RAMP_UP
    assert rig.model.output_fraction(t0 + ramp_s / 2) == pytest.approx(0.5, rel=1e-3)
    rig.run(ramp_s)
    assert rig.model.status().state == DeviceState.BEAM_ON
    assert rig.model.output_fraction(rig.clock.now_s()) == pytest.approx(1.0, rel=1e-3)
    rig.model.beam_off(BeamOffReasonCode.OPERATOR_STOP)
    t_off = rig.clock.now_s()
    status = rig.model.status()
    assert status.state == DeviceState.RAMP_DOWN and not status.hv_on
    assert rig.model.output_fraction(t_off + ramp_s / 2) == pytest.approx(0.5, rel=1e-3)
    rig.run(ramp_s)
    assert rig.model.status().state == DeviceState.READY
    assert rig.model.output_fraction(rig.clock.now_s()) == 0.0


def test_kv_and_ua_readback_follow_the_technique_with_small_noise(rig):
    rig.model.set_technique(45.0, 30.0)
    rig.ready().beam()
    rig.run(0.5)
    status = rig.model.status()
    assert status.kv == pytest.approx(45.0, abs=0.2) and status.kv != 45.0
    assert status.ua == pytest.approx(30.0, abs=0.2)


def test_output_drifts_about_minus_0_9_percent_over_30_minutes_of_beam():
    rig = Rig("clinical")
    rig.ready().beam(backup_time_s=3600.0, irm_limit_gy=30.0)
    rig.run(1800.0, step_s=0.25)
    assert rig.model.output_fraction(rig.clock.now_s()) == pytest.approx(0.991, abs=5e-4)


# ---- watchdog --------------------------------------------------------------------------------

def test_watchdog_switches_hv_off_and_latches_a_fault_after_0_5_s_of_console_silence(rig):
    rig.ready().beam()
    rig.run(1.0)
    rig.run(0.45, step_s=0.05, console_alive=False)
    assert rig.model.status().hv_on
    rig.run(0.1, step_s=0.05, console_alive=False)
    status = rig.model.status()
    assert not status.hv_on and status.state == DeviceState.FAULT
    assert FaultBit.WATCHDOG_EXPIRED in status.faults
    assert status.last_beam_off_cause == BeamOffCauseCode.WATCHDOG
    assert rig.named("beam_off")[0]["reason"] == "fault:watchdog_expired"


def test_watchdog_does_not_trip_while_the_console_keeps_talking(rig):
    rig.ready().beam()
    rig.run(10.0, step_s=0.4)
    assert rig.model.status().hv_on


def test_watchdog_does_not_trip_with_hv_off(rig):
    rig.ready()
    rig.run(5.0, console_alive=False)
    assert rig.model.status().faults == FaultBit(0)


# ---- arm / beam-on rules ---------------------------------------------------------------------

def test_beam_on_requires_an_arm_with_the_same_plan_hash(rig):
    rig.ready()
    assert refusal(rig.model.beam_on, PLAN).code == ErrorCode.NOT_ARMED
    rig.model.arm(10.0, 5.0, PLAN)
    assert refusal(rig.model.beam_on, OTHER_PLAN).code == ErrorCode.PLAN_HASH_MISMATCH
    assert not rig.model.status().hv_on


def test_beam_off_consumes_the_arm_so_resuming_needs_a_new_arm(rig):
    rig.ready().beam(backup_time_s=10.0)
    rig.run(2.0)
    rig.model.beam_off(BeamOffReasonCode.OPERATOR_PAUSE)
    rig.run(0.1)
    status = rig.model.status()
    assert not status.armed and status.armed_plan_hash is None
    assert status.last_beam_off_reason == BeamOffReasonCode.OPERATOR_PAUSE
    assert refusal(rig.model.beam_on, PLAN).code == ErrorCode.NOT_ARMED
    rig.model.arm(10.0 - status.beam_on_time_s, 30.0, PLAN)
    rig.model.beam_on(PLAN)
    assert rig.model.status().hv_on


def test_arm_before_warm_up_is_refused(rig):
    assert refusal(rig.model.arm, 10.0, 5.0, PLAN).code == ErrorCode.NOT_WARMED_UP


@pytest.mark.parametrize("backup_time_s, irm_limit_gy, plan", [
    (-1.0, 5.0, PLAN), (math.nan, 5.0, PLAN), (4000.0, 5.0, PLAN), (10.0, 0.0, PLAN), (10.0, math.inf, PLAN),
    (10.0, 31.0, PLAN), (10.0, 5.0, bytes(32)), (10.0, 5.0, b"short")])
def test_arm_values_out_of_range_are_refused_not_clipped(rig, backup_time_s, irm_limit_gy, plan):
    rig.ready()
    assert refusal(rig.model.arm, backup_time_s, irm_limit_gy, plan).code == ErrorCode.OUT_OF_RANGE
    assert not rig.model.status().armed


@pytest.mark.parametrize("kv, ua", [(60.0, 40.0), (39.9, 40.0), (50.0, 41.0), (50.0, 4.0), (math.nan, 40.0)])
def test_technique_out_of_range_is_refused_not_clipped(rig, kv, ua):
    err = refusal(rig.model.set_technique, kv, ua)
    assert err.code == ErrorCode.OUT_OF_RANGE and "outside" in err.detail


def test_beam_off_is_never_refused_even_in_fault(rig):
    rig.ready().beam()
    rig.model.inject("hv_arc")
    rig.model.beam_off(BeamOffReasonCode.OPERATOR_STOP)
    assert not rig.model.status().hv_on


def test_reset_fault_needs_an_operator_acknowledgement(rig):
    rig.ready()
    rig.model.inject("hv_arc")
    assert refusal(rig.model.reset_fault, "  ").code == ErrorCode.ACK_REQUIRED
    rig.model.reset_fault("arc seen, cable checked")
    assert rig.model.status().state == DeviceState.READY
    assert rig.named("fault_reset")[0]["operator_acknowledgement"] == "arc seen, cable checked"


# ---- faults, one by one ------------------------------------------------------------------------

def test_hv_arc_during_beam_cuts_hv_at_once_and_latches(rig):
    rig.ready().beam()
    rig.run(1.0)
    rig.model.inject("hv_arc")
    status = rig.model.status()
    assert status.state == DeviceState.FAULT and not status.hv_on and status.kv == 0.0
    assert FaultBit.HV_ARC in status.faults and status.last_beam_off_cause == BeamOffCauseCode.FAULT
    assert rig.model.output_fraction(rig.clock.now_s()) == 0.0


def test_hv_failure_cannot_be_reset_until_the_cause_is_cleared(rig):
    rig.ready()
    rig.model.inject("hv_failure")
    assert FaultBit.HV_FAILURE in rig.model.status().faults
    assert refusal(rig.model.reset_fault, "ok").code == ErrorCode.FAULT_PERSISTS
    rig.model.clear("hv_failure")
    rig.model.reset_fault("HV supply replaced")
    assert rig.model.status().faults == FaultBit(0)


def test_interlock_opening_during_beam_stops_it_and_blocks_arming_while_open(rig):
    rig.ready().beam()
    rig.run(0.5)
    rig.model.inject("interlock_open")
    status = rig.model.status()
    assert FaultBit.INTERLOCK_OPENED in status.faults
    assert InterlockBit.EXTERNAL_INTERLOCK_OPEN in status.interlocks
    assert status.last_beam_off_cause == BeamOffCauseCode.INTERLOCK
    assert refusal(rig.model.reset_fault, "door").code == ErrorCode.FAULT_PERSISTS
    rig.model.clear("interlock_open")
    rig.model.reset_fault("door closed")
    rig.model.inject("interlock_open")
    assert refusal(rig.model.arm, 10.0, 5.0, PLAN).code == ErrorCode.INTERLOCK_OPEN


def test_key_switch_off_blocks_arming(rig):
    rig.ready()
    rig.model.inject("key_switch_off")
    assert refusal(rig.model.arm, 10.0, 5.0, PLAN).code == ErrorCode.INTERLOCK_OPEN


def test_emergency_stop_stops_the_beam_and_reset_waits_for_release(rig):
    rig.ready().beam()
    rig.run(0.5)
    rig.model.inject("emergency_stop")
    status = rig.model.status()
    assert FaultBit.EMERGENCY_STOP in status.faults and InterlockBit.EMERGENCY_STOP in status.interlocks
    assert status.last_beam_off_cause == BeamOffCauseCode.EMERGENCY_STOP and not status.hv_on
    assert refusal(rig.model.reset_fault, "ok").code == ErrorCode.FAULT_PERSISTS
    rig.model.clear("emergency_stop")
    rig.model.reset_fault("e-stop released")
    assert rig.model.status().state == DeviceState.READY


def test_output_drop_lowers_output_and_tube_current_by_the_fraction(rig):
    rig.ready().beam()
    rig.run(0.5)
    rig.model.inject("output_drop", fraction=0.15)
    rig.run(0.1)
    assert rig.model.output_fraction(rig.clock.now_s()) == pytest.approx(0.85, rel=1e-3)
    assert rig.model.status().ua == pytest.approx(34.0, abs=0.2)
    rig.model.clear("output_drop")
    assert rig.model.output_fraction(rig.clock.now_s()) == pytest.approx(1.0, rel=1e-3)


def test_output_drift_reaches_its_fraction_after_its_duration(rig):
    rig.ready().beam()
    rig.model.inject("output_drift", fraction=-0.10, duration_s=10.0)
    rig.run(5.0)
    assert rig.model.output_fraction(rig.clock.now_s()) == pytest.approx(0.95, abs=1e-3)
    rig.run(10.0)
    assert rig.model.output_fraction(rig.clock.now_s()) == pytest.approx(0.90, abs=1e-3)


def test_a_command_line_value_is_the_drift_fraction_only_the_duration_keeps_its_default(rig):
    rig.ready().beam()
    rig.model.inject("output_drift", value=-0.06)      # orconsole-sim --fault output_drift:-0.06@T
    rig.run(30.0)
    assert rig.model.output_fraction(rig.clock.now_s()) == pytest.approx(0.97, abs=1e-3)   # half of 60 s


def test_applicator_removed_during_beam_is_a_fault_and_reported_as_no_applicator(rig):
    rig.ready().beam()
    rig.run(0.5)
    rig.model.inject("applicator_removed")
    status = rig.model.status()
    assert status.applicator_cm is None and InterlockBit.NO_APPLICATOR in status.interlocks
    assert FaultBit.APPLICATOR_REMOVED in status.faults and not status.hv_on
    rig.model.clear("applicator_removed")
    assert rig.model.status().applicator_cm == 3.0


@pytest.mark.parametrize("kind, field, value", [
    ("silent", "silent", True), ("bit_errors", "bit_error_rate", 1e-3), ("byte_drops", "byte_drop_rate", 1e-3)])
def test_link_fault_kinds_set_and_clear_the_runner_line_faults(rig, kind, field, value):
    line = LineFaults()
    rig.model.attach_line_faults(line)
    rig.model.inject(kind)
    assert getattr(line, field) == value
    rig.model.clear(kind)
    assert getattr(line, field) in (False, 0.0)


def test_link_fault_without_line_faults_attached_says_what_to_do(rig):
    with pytest.raises(RuntimeError, match="attach_line_faults"):
        rig.model.inject("silent")


def test_value_parameter_is_accepted_as_the_first_parameter_like_orconsole_sim_passes_it(rig):
    rig.ready().beam()
    rig.model.inject("output_drop", value=0.3)
    rig.run(0.1)
    assert rig.model.output_fraction(rig.clock.now_s()) == pytest.approx(0.7, rel=1e-3)


def test_unknown_fault_kind_lists_the_known_kinds(rig):
    with pytest.raises(ValueError, match="hv_arc"):
        rig.model.inject("gremlins")
    assert len(FAULT_KINDS) == len(set(FAULT_KINDS)) == 11


def test_scheduled_fault_fires_the_given_time_after_the_next_beam_on(rig):
    rig.model.schedule_fault("hv_arc", after_beam_on_s=2.0)
    rig.ready()
    rig.run(3.0)
    assert rig.model.status().faults == FaultBit(0)      # counts from beam on, not from scheduling
    rig.beam()
    t_on = rig.clock.now_s()
    rig.run(1.9, step_s=0.05)
    assert rig.model.status().hv_on
    rig.run(0.2, step_s=0.05)
    status = rig.model.status()
    assert FaultBit.HV_ARC in status.faults
    fault = rig.named("fault")[0]
    assert fault["device_time_s"] == pytest.approx(t_on + 2.0 - 1000.0)


# ---- events and isotropy -----------------------------------------------------------------------

def test_beam_on_and_beam_off_events_carry_device_time_dose_and_reason(rig):
    rig.ready().beam()
    rig.run(1.0)
    rig.model.beam_off(BeamOffReasonCode.OPERATOR_STOP)
    (on,) = rig.named("beam_on")
    (off,) = rig.named("beam_off")
    assert on["device_time_s"] == pytest.approx(0.5) and on["plan_hash"] == PLAN.hex()
    assert off["reason"] == "console:operator_stop"
    assert off["beam_on_time_s"] == pytest.approx(1.0)
    assert off["irm_dose_gy"] == pytest.approx(rig.rate_gy_per_s() * (1.0 - rig.model.hv_ramp_s / 2), rel=1e-3)
    assert rig.named("arm")


def test_isotropy_needs_the_beam_and_reads_about_one_at_full_output(rig):
    rig.ready()
    assert refusal(rig.model.read_isotropy).code == ErrorCode.WRONG_STATE
    rig.beam()
    rig.run(0.1)
    readings = rig.model.read_isotropy()
    assert set(readings) == {"plus_x", "minus_x", "plus_y", "minus_y", "plus_z"}
    assert all(v == pytest.approx(1.0, abs=0.01) for v in readings.values())
