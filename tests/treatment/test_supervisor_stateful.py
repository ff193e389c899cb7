"""Stateful property tests: random operator commands, clock steps and device faults against the Supervisor
on a ManualClock-driven fake source (no thread: commands are drained and polls run by the test).

Invariants (checked after every step):
- no beam while a beam-terminating interlock is active (the link-lost case: the unit's own watchdog stops it
  within its bound, since the console cannot reach it), and no beam starts while any interlock is active;
- the delivered dose (the unit's IRM over all arms) never exceeds the prescription by more than 0.5 %;
- every command's future resolves, with ok or a reason; nothing is silently dropped;
- at the end, every beam-on in the journal is followed by a beam-off, and every opened delivery produced a
  DeliveryReport.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from drivers.hal import BeamOffCause, XrsFault, XrsInterlock, XrsState
from orconsole.config import DeliveryConfig, SiteConfig
from orconsole.interlocks import ClearRole, Effect, InterlockId
from orconsole.journal import BEAM_OFF, BEAM_ON, TREATMENT_OPENED, read_journal
from orconsole.models import ApprovedPlan
from orconsole.statemachine import State
from orconsole.supervisor import CommandResult, Supervisor
from simulators.clock import ManualClock

from tests.core import factories as f
from tests.core.fake_xrs import FakeXrs

PLAN_TIME_S = 60.0
PRESCRIPTION_GY = 20.0
WATCHDOG_S = 0.5
CONFIG = SiteConfig(delivery=DeliveryConfig(ramp_up_s=0.3))


class WatchdogFakeXrs(FakeXrs):
    """The fake source plus what the real unit does by itself: a heartbeat watchdog, and the total IRM dose
    over every arm (what the patient received)."""

    def __init__(self, clock, **kwargs) -> None:
        super().__init__(clock, **kwargs)
        self.total_irm_gy = 0.0
        self.last_heard_s = clock.now_s()

    def _advance(self) -> None:
        before = self.irm_dose_gy
        super()._advance()
        self.total_irm_gy += max(0.0, self.irm_dose_gy - before)
        if self.state is XrsState.BEAM_ON and self.clock.now_s() - self.last_heard_s > WATCHDOG_S:
            self.faults |= XrsFault.WATCHDOG_EXPIRED
            self._off(BeamOffCause.WATCHDOG, XrsState.FAULT)

    def status(self):
        status = super().status()
        self.last_heard_s = self.clock.now_s()
        return status

    def arm(self, **kwargs) -> None:
        super().arm(**kwargs)
        self.last_heard_s = self.clock.now_s()

    def beam_on(self, **kwargs) -> None:
        super().beam_on(**kwargs)
        self.last_heard_s = self.clock.now_s()

    def device_tick(self) -> None:
        """The unit's own time passing (without the console asking)."""
        with self._lock:
            self._advance()


def approved_plan() -> ApprovedPlan:
    p = f.plan().model_copy(update={"treatment_time_s": PLAN_TIME_S, "preset_time_s": PLAN_TIME_S})
    return (ApprovedPlan(plan=p).with_approval(f.physician_approval(p))
            .with_approval(f.physicist_approval(p, physicist_time_s=PLAN_TIME_S)))


class SupervisorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sup-stateful-"))
        self.clock = ManualClock(1000.0)
        self.xrs = WatchdogFakeXrs(self.clock, dose_rate_gy_per_s=PRESCRIPTION_GY / PLAN_TIME_S, serial=f.SERIAL)
        self.store_ok = True
        self.sup = Supervisor(self.xrs, journal_path=self.dir / "journal.jsonl", clock=self.clock,
                              device_source_serial=f.SERIAL, config=CONFIG, today=lambda: f.TODAY,
                              qa_results=lambda: [f.qa()], record_store_available=lambda: self.store_ok)
        self.reports = self.sup.subscribe_reports()
        self.plan = approved_plan()
        self.link_down_since: float | None = None
        self.polled_since_link_back = True

    # -- helpers --------------------------------------------------------------------------------
    def command(self, name: str, **kwargs) -> CommandResult:
        future = self.sup.submit(name, **kwargs)
        self.sup._drain()
        assert future.done(), f"command {name} was not executed"
        result = future.result(timeout=0)
        assert isinstance(result, CommandResult) and isinstance(result.reason, str) and result.reason.strip(), \
            f"command {name} resolved without a reason: {result!r}"
        if result.ok and name in ("arm", "beam_on", "resume"):
            assert not self.sup.interlocks.start_blockers(), \
                f"{name} accepted while interlocks are active: {self.sup.interlocks.start_blockers()}"
        return result

    def beam_emitting(self) -> bool:
        return self.xrs.state is XrsState.BEAM_ON

    # -- operator commands ---------------------------------------------------------------------------
    @rule()
    def load_plan(self):
        self.command("load_plan", plan=ApprovedPlan(plan=self.plan.plan))

    @rule()
    def approve(self):
        self.command("approve", plan=self.plan)

    @rule(right=st.booleans())
    def verify_identity(self, right):
        self.command("verify_identity", medical_record_number="MRN-100234" if right else "MRN-999",
                     date_of_birth=f.patient().date_of_birth)

    @rule(name=st.sampled_from(["confirm_ready", "arm", "beam_on", "disarm", "resume", "stop", "emergency_stop",
                                "reset", "unload_plan"]))
    def simple_command(self, name):
        self.command(name)

    @rule()
    def pause(self):
        self.command("pause", reason="property test pause")

    @rule(confirmed=st.booleans())
    def acknowledge_fault(self, confirmed):
        self.command("acknowledge_fault", beam_confirmed_off=confirmed)

    @rule(interlock=st.sampled_from(list(InterlockId)))
    def clear_interlock(self, interlock):
        self.command("clear_interlock", interlock=interlock, role=ClearRole.PHYSICIST, acknowledgement="checked")

    @rule()
    def reset_device_fault(self):
        self.command("reset_device_fault", acknowledgement="checked at the unit")

    @rule(text=st.sampled_from(["bogus", "", "shutdown_now"]))
    def unknown_command(self, text):
        result = self.command(text) if text else self.command("nothing")
        assert not result.ok

    @rule()
    def whole_start_sequence(self):
        """What the therapist does in order, so that examples reach the beam often."""
        if self.sup.sm.state in (State.COMPLETED, State.TERMINATED):
            self.command("reset")
        for name, kwargs in (("load_plan", {"plan": ApprovedPlan(plan=self.plan.plan)}), ("approve", {"plan": self.plan}),
                             ("verify_identity", {"medical_record_number": "MRN-100234",
                                                  "date_of_birth": f.patient().date_of_birth}),
                             ("confirm_ready", {}), ("arm", {}), ("beam_on", {})):
            if not self.command(name, **kwargs).ok:
                break

    # -- time and polling ------------------------------------------------------------------------------
    @rule(steps=st.one_of(st.integers(1, 100), st.integers(1000, 1500)), dt=st.floats(0.005, 0.05))
    def run(self, steps, dt):
        for _ in range(steps):
            self.clock.advance(dt)
            if self.xrs.link_down:
                self.xrs.device_tick()
            self.sup.poll_once()
            self.polled_since_link_back = True
            self.check_beam_vs_interlocks()

    # -- device faults ---------------------------------------------------------------------------------
    @rule(fault=st.sampled_from([XrsFault.HV_ARC, XrsFault.IRM_FAILURE, XrsFault.OVER_TEMPERATURE]))
    def device_fault(self, fault):
        self.xrs.faults |= fault

    @rule(bit=st.sampled_from([XrsInterlock.EXTERNAL_INTERLOCK_OPEN, XrsInterlock.EMERGENCY_STOP,
                               XrsInterlock.KEY_SWITCH_OFF]))
    def device_interlock_opens(self, bit):
        self.xrs.interlocks |= bit
        if self.xrs.state is XrsState.BEAM_ON:       # the unit's chain cuts HV itself
            with self.xrs._lock:
                self.xrs._advance()
                cause = BeamOffCause.EMERGENCY_STOP if bit is XrsInterlock.EMERGENCY_STOP else BeamOffCause.INTERLOCK
                self.xrs._off(cause, XrsState.READY)

    @rule()
    def device_interlocks_close(self):
        self.xrs.interlocks = XrsInterlock.NONE

    @rule(cm=st.sampled_from([None, 3.5, 3.0]))
    def applicator(self, cm):
        self.xrs.applicator_cm = cm

    @rule()
    def link_goes_down(self):
        if not self.xrs.link_down:
            self.xrs.link_down = True
            self.link_down_since = self.clock.now_s()

    @rule()
    def link_comes_back(self):
        self.xrs.link_down = False
        self.link_down_since = None
        self.polled_since_link_back = False

    @rule(ok=st.booleans())
    def record_store(self, ok):
        self.store_ok = ok

    # -- invariants ------------------------------------------------------------------------------------
    def check_beam_vs_interlocks(self):
        terminating = self.sup.interlocks.active(Effect.TERMINATES_BEAM)
        if terminating and self.beam_emitting():
            ids = {s.id for s in terminating}
            # only a lost link excuses it: the console's beam off could not reach the unit (and it has not polled
            # since the link came back)
            assert InterlockId.LINK_LOST in ids and (self.xrs.link_down or not self.polled_since_link_back), \
                f"beam on while {sorted(i.value for i in ids)} active (state {self.sup.sm.state.value})"
            # the console cannot reach the unit: its watchdog must have stopped the beam within its bound
            assert self.clock.now_s() - self.xrs.last_heard_s <= WATCHDOG_S + 0.05 + 1e-9

    @invariant()
    def beam_never_on_with_a_terminating_interlock(self):
        self.check_beam_vs_interlocks()

    @invariant()
    def dose_never_exceeds_the_prescription_by_more_than_half_a_percent(self):
        assert self.xrs.total_irm_gy <= PRESCRIPTION_GY * 1.005, self.xrs.total_irm_gy

    @invariant()
    def console_beam_state_matches_the_unit(self):
        if self.beam_emitting() and not self.xrs.link_down and self.polled_since_link_back:
            assert self.sup.sm.state is State.BEAM_ON or self.sup._closing is not None or \
                self.sup.sm.state in (State.FAULT,), f"unit emits while the console is {self.sup.sm.state.value}"

    def teardown(self):
        try:
            self.xrs.link_down = False
            for name in ("stop", "emergency_stop"):
                self.command(name)
            for _ in range(5):
                self.clock.advance(0.05)
                self.sup.poll_once()
            assert not self.beam_emitting()
            self.sup.close()
            entries = read_journal(self.dir / "journal.jsonl").entries
            open_beam: dict[str, bool] = {}
            opened = set()
            for e in entries:
                if e["kind"] == TREATMENT_OPENED:
                    opened.add(e["treatment_id"])
                elif e["kind"] == BEAM_ON:
                    assert not open_beam.get(e["treatment_id"]), "two beam-ons without a beam-off between them"
                    open_beam[e["treatment_id"]] = True
                elif e["kind"] == BEAM_OFF:
                    open_beam[e["treatment_id"]] = False
            assert not any(open_beam.values()), f"beam-on without a recorded beam-off: {open_beam}"
            reported = set()
            while not self.reports.empty():
                reported.add(self.reports.get_nowait().treatment_id)
            assert opened <= reported, f"deliveries without a report: {opened - reported}"
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


SupervisorMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
TestSupervisorProperties = SupervisorMachine.TestCase
