"""Treatment state machine: every legal transition succeeds, every other (state, event) pair is refused
with a reason, the docs table equals the code's table, and the timer follows BRIEF §6."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from orconsole.interlocks import InterlockBank, InterlockId
from orconsole.models import ApprovedPlan
from orconsole.statemachine import (TRANSITIONS, Event, State, TimerError, TreatmentStateMachine, TreatmentTimer,
                                    illegal_reason)
from simulators.clock import ManualClock

from tests.core import factories as f

DOCS = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"


@dataclass(frozen=True)
class Unfinished:
    treatment_id: str = "T-1"
    preset_s: float = 1379.3
    elapsed_s: float = 612.4


def good_context(event: Event, approved: ApprovedPlan) -> dict:
    if event in (Event.LOAD_PLAN, Event.REVISE_PLAN):
        return {"plan": ApprovedPlan(plan=approved.plan)}
    if event is Event.APPROVE:
        return {"plan": approved}
    if event is Event.ACKNOWLEDGE_FAULT:
        return {"beam_confirmed_off": True}
    if event is Event.RECOVER:
        return {"unfinished": Unfinished()}
    return {}


PATHS: dict[State, list[Event]] = {
    State.IDLE: [],
    State.PLAN_LOADED: [Event.LOAD_PLAN],
    State.APPROVED: [Event.LOAD_PLAN, Event.APPROVE],
    State.READY: [Event.LOAD_PLAN, Event.APPROVE, Event.CONFIRM_READY],
    State.ARMED: [Event.LOAD_PLAN, Event.APPROVE, Event.CONFIRM_READY, Event.ARM],
    State.BEAM_ON: [Event.LOAD_PLAN, Event.APPROVE, Event.CONFIRM_READY, Event.ARM, Event.BEAM_ON],
    State.PAUSED: [Event.LOAD_PLAN, Event.APPROVE, Event.CONFIRM_READY, Event.ARM, Event.BEAM_ON, Event.PAUSE],
    State.COMPLETED: [Event.LOAD_PLAN, Event.APPROVE, Event.CONFIRM_READY, Event.ARM, Event.BEAM_ON, Event.COMPLETE],
    State.TERMINATED: [Event.LOAD_PLAN, Event.APPROVE, Event.CONFIRM_READY, Event.ARM, Event.BEAM_ON, Event.STOP],
    State.FAULT: [Event.LOAD_PLAN, Event.APPROVE, Event.CONFIRM_READY, Event.ARM, Event.BEAM_ON, Event.FAULT],
    State.INTERRUPTED: [Event.RECOVER],
}


def machine_in(state: State, approved: ApprovedPlan | None = None):
    approved = approved or f.approved()
    clock = ManualClock(100.0)
    sm = TreatmentStateMachine(clock, InterlockBank())
    for event in PATHS[state]:
        result = sm.handle(event, **good_context(event, approved))
        assert result.ok, result.reason
        if event is Event.BEAM_ON:
            clock.advance(10.0)
    assert sm.state is state
    return sm, clock, approved


@pytest.fixture(scope="module")
def approved_plan():
    return f.approved()


def test_every_state_is_reachable_by_the_paths_used_here():
    assert set(PATHS) == set(State)


@pytest.mark.parametrize("pair", list(TRANSITIONS), ids=lambda p: f"{p[0].value}-{p[1].value}")
def test_every_legal_transition_succeeds(pair, approved_plan):
    state, event = pair
    sm, _, approved = machine_in(state, approved_plan)
    context = good_context(event, approved)
    if event is Event.REVISE_PLAN:
        newer = approved.plan.revised(created_at=f.NOW, created_by="x")
        context = {"plan": ApprovedPlan(plan=newer)}
    result = sm.handle(event, **context)
    assert result.ok, result.reason
    assert result.from_state is state and result.to_state is TRANSITIONS[pair] and sm.state is TRANSITIONS[pair]


ILLEGAL = [(s, e) for s, e in itertools.product(State, Event) if (s, e) not in TRANSITIONS]


def test_the_cross_product_is_covered():
    assert len(ILLEGAL) + len(TRANSITIONS) == len(State) * len(Event)
    assert len(ILLEGAL) > 150


@pytest.mark.parametrize("pair", ILLEGAL, ids=lambda p: f"{p[0].value}-{p[1].value}")
def test_every_illegal_event_is_refused_with_a_reason(pair, approved_plan):
    state, event = pair
    sm, _, approved = machine_in(state, approved_plan)
    result = sm.handle(event, **good_context(event, approved))
    assert not result.ok
    assert sm.state is state and result.to_state is state
    assert result.reason == illegal_reason(state, event)
    assert state.value in result.reason and "Possible now" in result.reason


def test_unknown_command_is_refused():
    sm, _, _ = machine_in(State.IDLE)
    result = sm.handle("fire_beam")
    assert not result.ok and "unknown command" in result.reason and sm.state is State.IDLE


def test_docs_table_matches_the_code():
    rows = set()
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*([a-z_]+)\s*\|\s*([a-z_]+)\s*\|\s*([a-z_]+)\s*\|", line)
        if m and m.group(1) != "from":
            rows.add((m.group(1), m.group(2), m.group(3)))
    code = {(s.value, e.value, t.value) for (s, e), t in TRANSITIONS.items()}
    assert rows == code, f"only in docs: {rows - code}; only in code: {code - rows}"


# -- guards ------------------------------------------------------------------------------------------

def test_approval_needs_both_roles():
    sm, _, approved = machine_in(State.PLAN_LOADED)
    half = ApprovedPlan(plan=approved.plan).with_approval(approved.approvals[0])
    result = sm.handle(Event.APPROVE, plan=half)
    assert not result.ok and "physicist approval" in result.reason and sm.state is State.PLAN_LOADED


def test_approval_of_another_version_is_refused():
    sm, _, approved = machine_in(State.PLAN_LOADED)
    other = f.approved(f.plan(4.0))
    result = sm.handle(Event.APPROVE, plan=other)
    assert not result.ok and "different plan version" in result.reason


def test_revision_returns_to_plan_loaded_and_needs_new_approval():
    sm, _, approved = machine_in(State.READY)
    newer = approved.plan.revised(created_at=f.NOW, created_by="x", cavity=f.cavity())
    assert sm.handle(Event.REVISE_PLAN, plan=ApprovedPlan(plan=newer)).ok
    assert sm.state is State.PLAN_LOADED
    assert not sm.handle(Event.APPROVE, plan=approved).ok   # old approvals do not carry over


def test_revision_must_be_a_later_version_of_the_same_plan():
    sm, _, approved = machine_in(State.PLAN_LOADED)
    result = sm.handle(Event.REVISE_PLAN, plan=ApprovedPlan(plan=approved.plan))
    assert not result.ok and "later version" in result.reason


@pytest.mark.parametrize("state, event", [(State.APPROVED, Event.CONFIRM_READY), (State.READY, Event.ARM),
                                          (State.ARMED, Event.BEAM_ON), (State.PAUSED, Event.RESUME)])
def test_an_active_interlock_blocks_start_with_its_message(state, event):
    sm, clock, approved = machine_in(state)
    sm.interlocks.update(InterlockId.IDENTITY_NOT_VERIFIED, True, now_s=clock.now_s(), detail="MRN not scanned")
    result = sm.handle(event)
    assert not result.ok and sm.state is state
    assert "identity" in result.reason and "MRN not scanned" in result.reason


def test_fault_acknowledgement_needs_beam_confirmed_off():
    sm, _, _ = machine_in(State.FAULT)
    result = sm.handle(Event.ACKNOWLEDGE_FAULT)
    assert not result.ok and "beam is off" in result.reason and sm.state is State.FAULT


def test_recover_needs_an_unfinished_treatment():
    sm, _, _ = machine_in(State.IDLE)
    assert not sm.handle(Event.RECOVER).ok
    assert not sm.handle(Event.RECOVER, unfinished=Unfinished(elapsed_s=float("nan"))).ok
    assert sm.handle(Event.RECOVER, unfinished=Unfinished()).ok
    assert sm.timer.elapsed_s == 612.4 and sm.timer.preset_s == 1379.3


def test_loading_needs_a_plan():
    sm, _, _ = machine_in(State.IDLE)
    result = sm.handle(Event.LOAD_PLAN)
    assert not result.ok and "select a plan" in result.reason


# -- timer -------------------------------------------------------------------------------------------

def test_timer_is_cumulative_across_pause_and_resume():
    sm, clock, approved = machine_in(State.BEAM_ON)    # 10 s of beam so far
    preset = approved.plan.preset_time_s
    assert sm.timer.preset_s == preset
    assert sm.handle(Event.PAUSE).ok
    clock.advance(300.0)                                 # paused time does not count
    assert sm.timer.elapsed_s == pytest.approx(10.0)
    assert sm.handle(Event.RESUME).ok
    clock.advance(5.25)
    assert sm.timer.elapsed_s == pytest.approx(15.25)
    assert sm.timer.remaining_s == pytest.approx(preset - 15.25)


def test_timer_keeps_its_reading_after_termination_until_reset():
    sm, clock, _ = machine_in(State.TERMINATED)
    clock.advance(50.0)
    assert sm.timer.elapsed_s == pytest.approx(10.0)
    assert sm.handle(Event.RESET).ok
    assert sm.timer.elapsed_s == 0.0 and sm.timer.preset_s == 0.0 and sm.plan is None


def test_no_start_with_the_timer_at_zero():
    sm, clock, approved = machine_in(State.BEAM_ON)
    assert sm.handle(Event.PAUSE).ok
    sm.timer._accumulated_s = sm.timer.preset_s          # the preset time was used up before the pause
    result = sm.handle(Event.RESUME)
    assert not result.ok and "no exposure starts at zero" in result.reason


def test_timer_refuses_start_at_zero_and_preset_over_a_reading():
    clock = ManualClock()
    timer = TreatmentTimer(clock)
    with pytest.raises(TimerError, match="zero"):
        timer.start()
    timer.set_preset(20.0)
    timer.start()
    clock.advance(1.0)
    timer.stop()
    with pytest.raises(TimerError, match="reset"):
        timer.set_preset(30.0)
    with pytest.raises(TimerError):
        timer.set_preset(float("nan"))


def test_timer_display_resolution_is_0_1_s():
    clock = ManualClock()
    timer = TreatmentTimer(clock)
    timer.set_preset(1379.3)
    timer.start()
    clock.advance(12.37)
    assert timer.shown(timer.elapsed_s) == 12.3
    assert timer.remaining_shown_s == 1367.0       # 1366.93 rounds up: it reads 0.0 only when time is up
    clock.advance(1366.93 - 0.001)
    assert timer.remaining_shown_s == 0.1
    clock.advance(0.001)
    assert timer.remaining_shown_s == 0.0


def test_timer_uses_the_injected_monotonic_clock_only():
    clock = ManualClock(5000.0)
    timer = TreatmentTimer(clock)
    timer.set_preset(60.0)
    timer.start()
    assert timer.elapsed_s == 0.0                  # no wall-clock time leaks in
    clock.advance(60.0)
    assert timer.remaining_s == 0.0


@pytest.mark.parametrize("pair", list(TRANSITIONS)[:12] + ILLEGAL[:40], ids=str)
def test_check_predicts_handle_without_changing_state(pair, approved_plan):
    state, event = pair
    sm, _, approved = machine_in(state, approved_plan)
    ctx = good_context(event, approved)
    if event is Event.REVISE_PLAN:
        ctx = {"plan": ApprovedPlan(plan=approved.plan.revised(created_at=f.NOW, created_by="x"))}
    predicted = sm.check(event, **ctx)
    assert sm.state is state
    result = sm.handle(event, **ctx)
    assert (predicted is None) is result.ok
    if predicted is not None:
        assert predicted == result.reason
