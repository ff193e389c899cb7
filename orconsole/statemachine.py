"""The treatment state machine: explicit states, one transition table, guards that give reasons,
and the cumulative treatment timer (BRIEF §6).

An event not in the table, or whose guard fails, is refused with the reason the therapist reads;
never ignored, never silently mapped to another state. No I/O, no threads, no Qt: the supervisor
owns one instance and drives it from its own thread.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from orconsole.interlocks import InterlockBank
from orconsole.models import ApprovedPlan


class State(str, enum.Enum):
    IDLE = "idle"
    PLAN_LOADED = "plan_loaded"
    APPROVED = "approved"
    READY = "ready"
    ARMED = "armed"
    BEAM_ON = "beam_on"
    PAUSED = "paused"
    COMPLETED = "completed"
    TERMINATED = "terminated"
    FAULT = "fault"
    INTERRUPTED = "interrupted"


class Event(str, enum.Enum):
    LOAD_PLAN = "load_plan"
    UNLOAD_PLAN = "unload_plan"
    REVISE_PLAN = "revise_plan"
    APPROVE = "approve"
    CONFIRM_READY = "confirm_ready"
    READINESS_LOST = "readiness_lost"
    ARM = "arm"
    DISARM = "disarm"
    BEAM_ON = "beam_on"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    STOP = "stop"
    EMERGENCY_STOP = "emergency_stop"
    INTERLOCK = "interlock"
    FAULT = "fault"
    ACKNOWLEDGE_FAULT = "acknowledge_fault"
    RESET = "reset"
    RECOVER = "recover"
    ACKNOWLEDGE_INTERRUPTION = "acknowledge_interruption"


S, E = State, Event

# The table. docs/state-machine.md shows the same rows (a test compares them).
TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (S.IDLE, E.LOAD_PLAN): S.PLAN_LOADED,
    (S.IDLE, E.RECOVER): S.INTERRUPTED,
    (S.PLAN_LOADED, E.APPROVE): S.APPROVED,
    (S.PLAN_LOADED, E.REVISE_PLAN): S.PLAN_LOADED,
    (S.PLAN_LOADED, E.UNLOAD_PLAN): S.IDLE,
    (S.APPROVED, E.CONFIRM_READY): S.READY,
    (S.APPROVED, E.REVISE_PLAN): S.PLAN_LOADED,
    (S.APPROVED, E.UNLOAD_PLAN): S.IDLE,
    (S.READY, E.ARM): S.ARMED,
    (S.READY, E.READINESS_LOST): S.APPROVED,
    (S.READY, E.REVISE_PLAN): S.PLAN_LOADED,
    (S.READY, E.UNLOAD_PLAN): S.IDLE,
    (S.ARMED, E.BEAM_ON): S.BEAM_ON,
    (S.ARMED, E.DISARM): S.READY,
    (S.ARMED, E.READINESS_LOST): S.APPROVED,
    (S.ARMED, E.EMERGENCY_STOP): S.TERMINATED,
    (S.ARMED, E.FAULT): S.FAULT,
    (S.BEAM_ON, E.PAUSE): S.PAUSED,
    (S.BEAM_ON, E.COMPLETE): S.COMPLETED,
    (S.BEAM_ON, E.STOP): S.TERMINATED,
    (S.BEAM_ON, E.EMERGENCY_STOP): S.TERMINATED,
    (S.BEAM_ON, E.INTERLOCK): S.TERMINATED,
    (S.BEAM_ON, E.FAULT): S.FAULT,
    (S.PAUSED, E.RESUME): S.BEAM_ON,
    (S.PAUSED, E.STOP): S.TERMINATED,
    (S.PAUSED, E.EMERGENCY_STOP): S.TERMINATED,
    (S.PAUSED, E.FAULT): S.FAULT,
    (S.FAULT, E.ACKNOWLEDGE_FAULT): S.TERMINATED,
    (S.COMPLETED, E.RESET): S.IDLE,
    (S.TERMINATED, E.RESET): S.IDLE,
    (S.INTERRUPTED, E.ACKNOWLEDGE_INTERRUPTION): S.TERMINATED,
}

STATE_DESCRIPTIONS: Mapping[State, str] = {
    S.IDLE: "no plan is loaded",
    S.PLAN_LOADED: "a plan is loaded but not yet approved by physician and physicist",
    S.APPROVED: "the plan is approved; patient, applicator and device are not yet confirmed ready",
    S.READY: "everything is confirmed; the device is not armed",
    S.ARMED: "the device holds the preset; the beam is off",
    S.BEAM_ON: "the beam is on",
    S.PAUSED: "the beam is paused; the timer keeps its reading and the remainder can be resumed",
    S.COMPLETED: "the treatment is complete",
    S.TERMINATED: "the treatment was terminated; the timer must be reset before anything else",
    S.FAULT: "a device fault or lost link stopped the treatment; the beam state must be confirmed",
    S.INTERRUPTED: "the console restarted during an unfinished treatment",
}

EVENT_LABELS: Mapping[Event, str] = {
    E.LOAD_PLAN: "load plan", E.UNLOAD_PLAN: "unload plan", E.REVISE_PLAN: "load revised plan",
    E.APPROVE: "approve plan", E.CONFIRM_READY: "confirm ready", E.READINESS_LOST: "readiness lost",
    E.ARM: "arm", E.DISARM: "disarm", E.BEAM_ON: "beam on", E.PAUSE: "pause", E.RESUME: "resume",
    E.COMPLETE: "complete", E.STOP: "stop", E.EMERGENCY_STOP: "emergency stop", E.INTERLOCK: "interlock",
    E.FAULT: "fault", E.ACKNOWLEDGE_FAULT: "acknowledge fault", E.RESET: "reset timer",
    E.RECOVER: "recover unfinished treatment", E.ACKNOWLEDGE_INTERRUPTION: "acknowledge interruption",
}

# Guard descriptions for the docs (the checks themselves are in TreatmentStateMachine._guard_*).
GUARD_TEXT: Mapping[Event, str] = {
    E.LOAD_PLAN: "a plan with preset time > 0",
    E.REVISE_PLAN: "same plan id, higher version; approvals start again",
    E.APPROVE: "this plan version carries physician and physicist approvals",
    E.CONFIRM_READY: "no interlock active",
    E.ARM: "no interlock active; remaining time > 0",
    E.BEAM_ON: "no interlock active; remaining time > 0 (no start at zero)",
    E.RESUME: "no interlock active; remaining time > 0",
    E.ACKNOWLEDGE_FAULT: "beam confirmed off at the device",
    E.RECOVER: "the journal holds an unfinished treatment",
    E.RESET: "timer reset to zero",
}


class MonotonicClock(Protocol):
    def now_s(self) -> float: ...


class TimerError(RuntimeError):
    pass


class TreatmentTimer:
    """Preset and cumulative elapsed time across interruptions; reset only by the machine after the end.

    Reads a monotonic clock (`now_s()`); values are shown at `resolution_s` (0.1 s).
    """

    def __init__(self, clock: MonotonicClock, *, resolution_s: float = 0.1) -> None:
        self._clock = clock
        self.resolution_s = resolution_s
        self._preset_s = 0.0
        self._accumulated_s = 0.0
        self._started_at_s: float | None = None

    @property
    def running(self) -> bool:
        return self._started_at_s is not None

    @property
    def preset_s(self) -> float:
        return self._preset_s

    def set_preset(self, preset_s: float) -> None:
        if self.running or self._accumulated_s > 0:
            raise TimerError("the timer holds a reading: reset it (after termination) before a new preset")
        if not (isinstance(preset_s, (int, float)) and math.isfinite(preset_s) and preset_s >= 0):
            raise TimerError(f"preset {preset_s!r} s is not a time")
        self._preset_s = float(preset_s)

    def restore(self, *, preset_s: float, elapsed_s: float) -> None:
        """Crash recovery: the reading the journal holds."""
        if self.running:
            raise TimerError("cannot restore a running timer")
        self._preset_s, self._accumulated_s = float(preset_s), float(elapsed_s)

    def start(self) -> None:
        if self.running:
            raise TimerError("the timer is already running")
        if self.remaining_s <= 0:
            raise TimerError("no exposure can start with the timer at zero remaining")
        self._started_at_s = self._clock.now_s()

    def start_earlier(self, started_at_s: float) -> None:
        """Move the running exposure's start back to when the beam-on command was first sent: the unit may
        have switched on then, and a lost reply that had to be retransmitted must not make the console's timer
        end the beam late. Never moves the start later."""
        if self._started_at_s is None:
            raise TimerError("the timer is not running")
        if not math.isfinite(started_at_s) or started_at_s > self._started_at_s:
            raise TimerError(f"the start can only move earlier ({started_at_s!r} s is after {self._started_at_s} s)")
        self._started_at_s = started_at_s

    def stop(self) -> None:
        if self._started_at_s is not None:
            self._accumulated_s += max(0.0, self._clock.now_s() - self._started_at_s)
            self._started_at_s = None

    def reset(self) -> None:
        if self.running:
            raise TimerError("cannot reset a running timer")
        self._preset_s = 0.0
        self._accumulated_s = 0.0

    @property
    def elapsed_s(self) -> float:
        running_s = 0.0 if self._started_at_s is None else max(0.0, self._clock.now_s() - self._started_at_s)
        return self._accumulated_s + running_s

    @property
    def remaining_s(self) -> float:
        return max(0.0, self._preset_s - self.elapsed_s)

    def shown(self, seconds: float) -> float:
        """A value as displayed: truncated to the resolution (never shows more elapsed than true)."""
        steps = math.floor(seconds / self.resolution_s + 1e-9)
        return round(steps * self.resolution_s, 6)

    @property
    def remaining_shown_s(self) -> float:
        """Remaining as displayed: rounded up, so the display reaches 0.0 only when time is up."""
        steps = math.ceil(self.remaining_s / self.resolution_s - 1e-9)
        return round(steps * self.resolution_s, 6)


@dataclass(frozen=True)
class TransitionResult:
    ok: bool
    event: Event | str
    from_state: State
    to_state: State
    reason: str


class TreatmentStateMachine:
    """One treatment session's state. Not thread-safe: only the supervisor's thread calls `handle`."""

    def __init__(self, clock: MonotonicClock, interlocks: InterlockBank, *, resolution_s: float = 0.1) -> None:
        self._state = State.IDLE
        self.interlocks = interlocks
        self.timer = TreatmentTimer(clock, resolution_s=resolution_s)
        self.plan: ApprovedPlan | None = None
        self.recovered: Any = None
        self._guards: dict[Event, Callable[[dict[str, Any]], str | None]] = {
            E.LOAD_PLAN: self._guard_load, E.REVISE_PLAN: self._guard_revise, E.APPROVE: self._guard_approve,
            E.CONFIRM_READY: self._guard_no_interlock, E.ARM: self._guard_start,
            E.BEAM_ON: self._guard_start, E.RESUME: self._guard_start,
            E.ACKNOWLEDGE_FAULT: self._guard_beam_off, E.RECOVER: self._guard_recover,
        }

    @property
    def state(self) -> State:
        return self._state

    def allowed_events(self, state: State | None = None) -> tuple[Event, ...]:
        state = self._state if state is None else state
        return tuple(e for (s, e) in TRANSITIONS if s is state)

    def check(self, event: Event | str, **context: Any) -> str | None:
        """Would `event` be accepted now? None if yes, else the reason. Changes nothing (for callers that
        must do side effects, such as arming the device, only when the transition will be taken)."""
        try:
            event = Event(event)
        except ValueError:
            return f"unknown command {event!r}: nothing was done"
        if (self._state, event) not in TRANSITIONS:
            return illegal_reason(self._state, event)
        guard = self._guards.get(event)
        reason = guard(context) if guard else None
        return None if reason is None else f"cannot {EVENT_LABELS[event]}: {reason}"

    def handle(self, event: Event | str, **context: Any) -> TransitionResult:
        """Apply `event`; refuse it (ok=False, state unchanged) with the reason when not allowed."""
        try:
            event = Event(event)
        except ValueError:
            return TransitionResult(False, str(event), self._state, self._state,
                                    f"unknown command {event!r}: nothing was done")
        here = self._state
        target = TRANSITIONS.get((here, event))
        if target is None:
            return TransitionResult(False, event, here, here, illegal_reason(here, event))
        guard = self._guards.get(event)
        reason = guard(context) if guard else None
        if reason is not None:
            return TransitionResult(False, event, here, here,
                                    f"cannot {EVENT_LABELS[event]}: {reason}")
        self._apply(event, target, context)
        return TransitionResult(True, event, here, target, f"{EVENT_LABELS[event]}: {here.value} → {target.value}")

    # -- guards: return None when allowed, else the reason ------------------------------------

    def _guard_load(self, ctx: dict[str, Any]) -> str | None:
        plan = ctx.get("plan")
        if not isinstance(plan, ApprovedPlan):
            return "no plan was given: select a plan to load"
        if not plan.plan.preset_time_s > 0:
            return "the plan's preset time is zero: recalculate the plan"
        return None

    def _guard_revise(self, ctx: dict[str, Any]) -> str | None:
        reason = self._guard_load(ctx)
        if reason:
            return reason
        new, old = ctx["plan"].plan, self.plan.plan if self.plan else None
        if old is not None and (new.plan_id != old.plan_id or new.version <= old.version):
            return (f"the revision must be a later version of plan {old.plan_id} (loaded version {old.version}, "
                    f"given {new.plan_id} version {new.version}): unload the plan to load another one")
        return None

    def _guard_approve(self, ctx: dict[str, Any]) -> str | None:
        approved = ctx.get("plan")
        if not isinstance(approved, ApprovedPlan) or self.plan is None:
            return "no approved plan was given"
        if approved.plan.content_hash != self.plan.plan.content_hash:
            return ("the approvals are for a different plan version than the one loaded: approve the loaded "
                    f"version {self.plan.plan.version}")
        missing = approved.missing_roles()
        if missing:
            return f"the plan still lacks the {' and '.join(r.value for r in missing)} approval"
        return None

    def _guard_no_interlock(self, ctx: dict[str, Any]) -> str | None:
        active = self.interlocks.start_blockers()
        if active:
            return "; ".join(s.text for s in active)
        return None

    def _guard_start(self, ctx: dict[str, Any]) -> str | None:
        reason = self._guard_no_interlock(ctx)
        if reason:
            return reason
        if self.timer.remaining_s <= 0:
            return "the timer has no time remaining: no exposure starts at zero; terminate and reset"
        return None

    def _guard_beam_off(self, ctx: dict[str, Any]) -> str | None:
        if ctx.get("beam_confirmed_off") is not True:
            return "confirm at the X-ray unit that the beam is off (HV off) before acknowledging the fault"
        return None

    def _guard_recover(self, ctx: dict[str, Any]) -> str | None:
        unfinished = ctx.get("unfinished")
        if unfinished is None:
            return "the journal holds no unfinished treatment to recover"
        for name in ("preset_s", "elapsed_s"):
            value = getattr(unfinished, name, None)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                return f"the journal's {name} is unusable ({value!r}): recover from the device counters by hand"
        return None

    # -- effects -----------------------------------------------------------------------------

    def _apply(self, event: Event, target: State, ctx: dict[str, Any]) -> None:
        if event in (E.LOAD_PLAN, E.REVISE_PLAN):
            self.plan = ctx["plan"]
            self.timer.reset()
            self.timer.set_preset(self.plan.plan.preset_time_s)
        elif event is E.APPROVE:
            self.plan = ctx["plan"]
        elif event is E.UNLOAD_PLAN:
            self.plan = None
            self.timer.reset()
        elif event in (E.BEAM_ON, E.RESUME):
            self.timer.start()
        elif event in (E.PAUSE, E.COMPLETE, E.STOP, E.EMERGENCY_STOP, E.INTERLOCK, E.FAULT):
            self.timer.stop()
        elif event is E.RESET:
            self.timer.reset()
            self.plan = None
            self.recovered = None
        elif event is E.RECOVER:
            unfinished = ctx["unfinished"]
            self.recovered = unfinished
            self.timer.restore(preset_s=unfinished.preset_s, elapsed_s=unfinished.elapsed_s)
        self._state = target


def illegal_reason(state: State, event: Event) -> str:
    """Why `event` is refused in `state`, with what is possible instead."""
    possible = ", ".join(EVENT_LABELS[e] for (s, e) in TRANSITIONS if s is state) or "nothing"
    return (f"'{EVENT_LABELS[event]}' is not possible now: {STATE_DESCRIPTIONS[state]} "
            f"(state '{state.value}'). Possible now: {possible}.")


def render_markdown() -> str:
    """The body of docs/state-machine.md's transition table (the doc is checked against TRANSITIONS)."""
    lines = ["| from | event | to | guard |", "|---|---|---|---|"]
    for (src, ev), dst in TRANSITIONS.items():
        lines.append(f"| {src.value} | {ev.value} | {dst.value} | {GUARD_TEXT.get(ev, '—')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
