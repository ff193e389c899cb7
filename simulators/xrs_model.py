"""Physics and state machine of the simulated X-ray unit, driven by an injectable clock.

HV ramps, warm-up, kV/µA readback with noise, an IRM that integrates the surface dose rate of the
mounted applicator × the actual output, slow drift, the unit's own backup timer / IRM limit /
heartbeat watchdog / e-stop, isotropy photodiodes, and fault injection. It never calls time.*
itself (only its clock) and never imports the console's code: it is the device, not a mirror of it.
"""
from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from typing import Callable

from protocol.xrs import (APPLICATOR_DIAMETERS_CM, BeamOffCauseCode, BeamOffReasonCode, DeviceState, ErrorCode,
                          FaultBit, InterlockBit)
from simulators.sources import SourceData

EventSink = Callable[[dict], None]

MAX_STEP_S = 0.25               # integration step in steady beam (output is linear within a step)
BACKUP_TIME_RANGE_S = (0.1, 3600.0)
IRM_LIMIT_RANGE_GY = (1e-6, 30.0)
ACKNOWLEDGEMENT_MAX_BYTES = 64

DEVICE_FAULT_KINDS = ("hv_arc", "hv_failure", "interlock_open", "emergency_stop", "key_switch_off",
                      "output_drop", "output_drift", "applicator_removed")
LINK_FAULT_KINDS = ("silent", "bit_errors", "byte_drops")
FAULT_KINDS = DEVICE_FAULT_KINDS + LINK_FAULT_KINDS
"""Every kind accepted by XrsModel.inject(kind, **params):

hv_arc                       latched HV_ARC fault; beam (if on) stops at once. clear(): no-op (reset it)
hv_failure                   latched HV_FAILURE; the cause persists until clear(), reset refused before
interlock_open               external interlock input opens; during beam: INTERLOCK_OPENED fault
emergency_stop               e-stop pressed: EMERGENCY_STOP fault (always); clear() releases the button
key_switch_off               key switch off: arm/beam refused; during beam: INTERLOCK_OPENED fault
output_drop(fraction=0.15)   tube output (and µA readback) drops by `fraction` until clear()
output_drift(fraction=-0.05, duration_s=60)  extra output change reaching `fraction` after duration_s
applicator_removed           no applicator sensed; during beam: APPLICATOR_REMOVED fault; clear() remounts
silent                       the line goes silent both ways (runner LineFaults); clear() restores
bit_errors(rate=1e-3)        each bit on the line flips with probability `rate`
byte_drops(rate=1e-3)        each byte on the line is lost with probability `rate`

`value=` is accepted as the first parameter of any kind (orconsole-sim passes KIND:VALUE that way).
"""


class XrsRefusal(Exception):
    """The unit refuses a command; becomes a NAK with `code` and the readable `detail`."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ModelStatus:
    state: DeviceState
    kv: float
    ua: float
    hv_on: bool
    irm_counts: int
    irm_dose_gy: float
    applicator_cm: float | None
    interlocks: InterlockBit
    faults: FaultBit
    device_time_s: float
    beam_on_time_s: float
    last_beam_off_cause: BeamOffCauseCode
    last_beam_off_reason: BeamOffReasonCode
    armed: bool
    armed_plan_hash: bytes | None


_FAULT_CAUSE = {
    FaultBit.WATCHDOG_EXPIRED: BeamOffCauseCode.WATCHDOG,
    FaultBit.EMERGENCY_STOP: BeamOffCauseCode.EMERGENCY_STOP,
    FaultBit.INTERLOCK_OPENED: BeamOffCauseCode.INTERLOCK,
}


class XrsModel:
    """The simulated unit. Thread-safe: the runner's thread drives it, tests and the bench poke it."""

    def __init__(self, clock, source: SourceData, *, applicator_cm: float | None = 3.0, seed: int | None = None,
                 on_event: EventSink | None = None, watchdog_s: float = 0.5,
                 hv_ramp_s: float | None = None, warm_up_s: float | None = None) -> None:
        if applicator_cm is not None and applicator_cm not in APPLICATOR_DIAMETERS_CM:
            raise ValueError(f"applicator {applicator_cm} cm does not exist: choose one of "
                             f"{', '.join(map(str, APPLICATOR_DIAMETERS_CM))} cm or None")
        if not watchdog_s > 0:
            raise ValueError(f"watchdog_s must be > 0, got {watchdog_s!r}")
        self.clock = clock
        self.source = source
        self.watchdog_s = float(watchdog_s)
        self.hv_ramp_s = source.hv_ramp_s if hv_ramp_s is None else float(hv_ramp_s)
        self.warm_up_s = source.warm_up_s if warm_up_s is None else float(warm_up_s)
        self._on_event = on_event
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._pending_events: list[dict] = []
        self.line_faults = None                      # runner.LineFaults, see attach_line_faults()

        now = clock.now_s()
        self._boot_s = now
        self._t = now                                # model time advanced up to here
        self._state = DeviceState.STANDBY
        self._warmed_up = False
        self._warm_up_end_s = 0.0
        self._kv_set = source.nominal_kv
        self._ua_set = source.nominal_ua
        self._configured_applicator_cm = applicator_cm
        self._applicator_cm = applicator_cm
        self._interlocks = InterlockBit(0) if applicator_cm is not None else InterlockBit.NO_APPLICATOR
        self._faults = FaultBit(0)
        self._hv_failure_present = False
        # arm
        self._armed = False
        self._backup_time_s = 0.0
        self._irm_limit_gy = 0.0
        self._plan_hash: bytes | None = None
        # beam
        self._t_on = 0.0
        self._t_off = 0.0
        self._level_at_off = 0.0
        self._beam_on_time_s = 0.0                   # of the current/last beam since the last arm
        self._beam_total_s = 0.0                     # lifetime beam time (drives the slow drift)
        self._output_integral_s = 0.0                # ∫ output_fraction dt since power-up (QA chamber)
        self._irm_dose_gy = 0.0
        self._irm_counts = 0.0
        self._last_cause = BeamOffCauseCode.NONE
        self._last_reason = BeamOffReasonCode.NONE
        # output faults
        self._output_drop = 0.0
        self._drifts: list[tuple[float, float, float]] = []   # (start_s, fraction, duration_s)
        # watchdog
        self._last_heard_s = now
        # scheduled faults: [kind, after_beam_on_s, params, fire_at_s or None]
        self._scheduled: list[list] = []

    # ---------------------------------------------------------------------------------- plumbing

    def attach_line_faults(self, line_faults) -> None:
        """Give the model the runner's LineFaults so inject('silent'|'bit_errors'|'byte_drops') works."""
        self.line_faults = line_faults

    def _emit(self, event: str, t: float, **fields) -> None:
        self._pending_events.append({"event": event, "device_time_s": round(t - self._boot_s, 6), **fields})

    def _flush_events(self) -> None:
        with self._lock:
            events, self._pending_events = self._pending_events, []
        if self._on_event is not None:
            for event in events:
                self._on_event(event)

    def _run(self, fn, *args, **kwargs):
        """Advance to now, run `fn` under the lock, then deliver events outside it."""
        try:
            with self._lock:
                self._advance(self.clock.now_s())
                return fn(*args, **kwargs)
        finally:
            self._flush_events()

    # ---------------------------------------------------------------------------------- physics

    @property
    def hv_on(self) -> bool:
        return self._state in (DeviceState.RAMP_UP, DeviceState.BEAM_ON)

    def _hv_level(self, t: float) -> float:
        if self._state == DeviceState.RAMP_UP:
            return min(1.0, max(0.0, (t - self._t_on) / self.hv_ramp_s)) if self.hv_ramp_s > 0 else 1.0
        if self._state == DeviceState.BEAM_ON:
            return 1.0
        if self._state == DeviceState.RAMP_DOWN:
            if self.hv_ramp_s <= 0:
                return 0.0
            return self._level_at_off * max(0.0, 1.0 - (t - self._t_off) / self.hv_ramp_s)
        return 0.0

    def _output_factor(self, t: float) -> float:
        """Output relative to nominal at full HV: technique × drift × injected drop/drift."""
        s = self.source
        beam_s = self._beam_total_s + (max(0.0, t - self._t) if self.hv_on else 0.0)
        factor = (self._ua_set / s.nominal_ua) * (self._kv_set / s.nominal_kv) ** 2
        factor *= 1.0 + s.output_drift_fraction * beam_s / s.output_drift_over_beam_s
        factor *= 1.0 - self._output_drop
        for start_s, fraction, duration_s in self._drifts:
            progress = 1.0 if duration_s <= 0 else min(1.0, max(0.0, (t - start_s) / duration_s))
            factor *= 1.0 + fraction * progress
        return max(0.0, factor)

    def _output(self, t: float) -> float:
        level = self._hv_level(t)
        return level * self._output_factor(t) if level > 0 else 0.0

    def output_fraction(self, now_s: float) -> float:
        """Emitted output relative to nominal full output (0 with HV off); what the QA chamber sees."""
        with self._lock:
            return self._output(max(now_s, self._t))

    def output_integral_s(self, now_s: float) -> float:
        """∫ output_fraction dt from power-up to now_s (exact across ramps and stops): the charge a
        chamber collects between two instants is the difference of two values of this, times its
        full-output current — independent of how often anybody ticks the model."""
        return self._run(lambda: self._output_integral_s)

    def _surface_rate_gy_per_s(self) -> float:
        if self._applicator_cm is None:
            return 0.0
        return self.source.rate_for(self._applicator_cm) / 60.0

    def _boundaries(self) -> list[float]:
        b = [t for *_, t in self._scheduled if t is not None]
        if self._state == DeviceState.WARMING_UP:
            b.append(self._warm_up_end_s)
        if self._state == DeviceState.RAMP_UP:
            b.append(self._t_on + self.hv_ramp_s)
        if self.hv_on:
            b.append(self._t_on + self._backup_time_s)
            b.append(self._last_heard_s + self.watchdog_s)
        if self._state == DeviceState.RAMP_DOWN:
            b.append(self._t_off + self.hv_ramp_s)
        return b

    def _advance(self, now: float) -> None:
        while self._t < now:
            t0 = self._t
            t1 = min(now, t0 + MAX_STEP_S)
            for b in self._boundaries():
                if t0 < b < t1:
                    t1 = b
            dt = t1 - t0
            out = self._output((t0 + t1) / 2)
            dose = out * self._surface_rate_gy_per_s() * dt
            limit_hit = False
            if (self.hv_on and self._armed and dose > 0
                    and self._irm_dose_gy < self._irm_limit_gy <= self._irm_dose_gy + dose):
                fraction = (self._irm_limit_gy - self._irm_dose_gy) / dose
                t1 = t0 + fraction * dt
                dt = t1 - t0
                dose = self._irm_limit_gy - self._irm_dose_gy
                limit_hit = True
            self._irm_dose_gy += dose
            self._irm_counts += out * self.source.irm_counts_per_s * dt
            self._output_integral_s += out * dt
            if self.hv_on:
                self._beam_total_s += dt
            self._t = t1
            if limit_hit:
                self._irm_dose_gy = self._irm_limit_gy
                self._stop_beam(t1, BeamOffCauseCode.IRM_LIMIT, BeamOffReasonCode.NONE)
            self._events_at(t1)
        if now > self._t:
            self._t = now

    def _events_at(self, t: float) -> None:
        if self._state == DeviceState.WARMING_UP and t >= self._warm_up_end_s:
            self._warmed_up = True
            self._state = DeviceState.READY
            self._emit("warm_up_complete", t)
        if self._state == DeviceState.RAMP_UP and t >= self._t_on + self.hv_ramp_s:
            self._state = DeviceState.BEAM_ON
        if self.hv_on and t >= self._t_on + self._backup_time_s:
            self._stop_beam(t, BeamOffCauseCode.BACKUP_TIMER, BeamOffReasonCode.NONE)
        if self.hv_on and t >= self._last_heard_s + self.watchdog_s:
            self._latch_fault(t, FaultBit.WATCHDOG_EXPIRED,
                              f"no valid frame from the console for {t - self._last_heard_s:.3f} s "
                              f"(watchdog {self.watchdog_s} s)")
        if self._state == DeviceState.RAMP_DOWN and t >= self._t_off + self.hv_ramp_s:
            self._state = DeviceState.READY if self._warmed_up else DeviceState.STANDBY
        due = [s for s in self._scheduled if s[3] is not None and s[3] <= t]
        for entry in due:
            self._scheduled.remove(entry)
            try:
                self._inject(entry[0], t, **entry[2])
            except (ValueError, RuntimeError) as exc:   # reported, never kills the runner thread
                self._emit("fault_injection_failed", t, kind=entry[0], error=str(exc))

    def _end_beam(self, t: float, cause: BeamOffCauseCode, reason: BeamOffReasonCode, *, immediate: bool,
                  why: str) -> None:
        self._beam_on_time_s = t - self._t_on
        self._level_at_off = self._hv_level(t)
        self._t_off = t
        self._armed = False                       # every beam off consumes the arm
        self._plan_hash = None
        self._last_cause = cause
        self._last_reason = reason
        self._state = DeviceState.FAULT if immediate else DeviceState.RAMP_DOWN
        self._emit("beam_off", t, reason=why, cause=cause.name.lower(),
                   console_reason=reason.name.lower() if reason else None,
                   beam_on_time_s=round(self._beam_on_time_s, 6), irm_dose_gy=round(self._irm_dose_gy, 6),
                   irm_counts=int(self._irm_counts))

    def _stop_beam(self, t: float, cause: BeamOffCauseCode, reason: BeamOffReasonCode) -> None:
        why = f"console:{reason.name.lower()}" if cause == BeamOffCauseCode.CONSOLE_COMMAND else cause.name.lower()
        self._end_beam(t, cause, reason, immediate=False, why=why)

    def _latch_fault(self, t: float, bit: FaultBit, detail: str) -> None:
        self._faults |= bit
        was_on = self.hv_on
        self._emit("fault", t, fault=bit.name.lower(), detail=detail, during_beam=was_on)
        if was_on:
            cause = _FAULT_CAUSE.get(bit, BeamOffCauseCode.FAULT)
            self._end_beam(t, cause, BeamOffReasonCode.NONE, immediate=True, why=f"fault:{bit.name.lower()}")
        self._state = DeviceState.FAULT

    # ---------------------------------------------------------------------------------- commands

    def tick(self) -> None:
        """Advance time-driven behaviour to the clock's now (runner calls this at least every 1 ms)."""
        self._run(lambda: None)

    def heard_from_console(self) -> None:
        """A CRC-valid frame arrived from the console: feeds the watchdog."""
        def do():
            self._last_heard_s = self._t
        self._run(do)

    def identity(self) -> tuple[str, str, str]:
        return self.source.serial, self.source.model, self.source.firmware

    def device_time_s(self) -> float:
        with self._lock:
            return max(self.clock.now_s(), self._t) - self._boot_s

    def heartbeat_snapshot(self) -> tuple[float, DeviceState, bool, FaultBit]:
        """(device_time_s, state, hv_on, faults) for DEVICE_HEARTBEAT; draws no noise."""
        def do():
            return self._t - self._boot_s, self._state, self.hv_on, self._faults
        return self._run(do)

    def status(self) -> ModelStatus:
        def do():
            t = self._t
            level = self._hv_level(t)
            if level > 0:
                kv = self._kv_set * level + self._rng.gauss(0.0, self.source.kv_noise_kv)
                ua = self._ua_set * level * (1.0 - self._output_drop) + self._rng.gauss(0.0, self.source.ua_noise_ua)
            else:
                kv = ua = 0.0
            beam_on_time = (t - self._t_on) if self.hv_on else self._beam_on_time_s
            return ModelStatus(
                state=self._state, kv=max(0.0, kv), ua=max(0.0, ua), hv_on=self.hv_on,
                irm_counts=int(self._irm_counts), irm_dose_gy=self._irm_dose_gy,
                applicator_cm=self._applicator_cm, interlocks=self._interlocks, faults=self._faults,
                device_time_s=t - self._boot_s, beam_on_time_s=beam_on_time,
                last_beam_off_cause=self._last_cause, last_beam_off_reason=self._last_reason,
                armed=self._armed, armed_plan_hash=self._plan_hash if self._armed else None)
        return self._run(do)

    def _refuse_if_faulted(self, what: str) -> None:
        if self._faults:
            names = ", ".join(f.name.lower() for f in FaultBit if f in self._faults)
            raise XrsRefusal(ErrorCode.FAULT_LATCHED,
                             f"{what} refused: fault latched ({names}); reset the fault with an operator acknowledgement")

    def _refuse_if_interlocked(self, what: str, ignore: InterlockBit = InterlockBit(0)) -> None:
        open_bits = self._interlocks & ~ignore
        if open_bits:
            names = ", ".join(f.name.lower() for f in InterlockBit if f in open_bits)
            raise XrsRefusal(ErrorCode.INTERLOCK_OPEN, f"{what} refused: interlock open ({names}); close it first")

    def set_technique(self, kv: float, ua: float) -> None:
        def do():
            lo_kv, hi_kv = self.source.kv_range
            lo_ua, hi_ua = self.source.ua_range
            if not (math.isfinite(kv) and lo_kv <= kv <= hi_kv):
                raise XrsRefusal(ErrorCode.OUT_OF_RANGE, f"{kv} kV outside {lo_kv}-{hi_kv} kV")
            if not (math.isfinite(ua) and lo_ua <= ua <= hi_ua):
                raise XrsRefusal(ErrorCode.OUT_OF_RANGE, f"{ua} uA outside {lo_ua}-{hi_ua} uA")
            self._refuse_if_faulted("set technique")
            if self._state not in (DeviceState.STANDBY, DeviceState.READY):
                raise XrsRefusal(ErrorCode.WRONG_STATE, f"set technique refused in state {self._state.name}: "
                                 "only in STANDBY or READY (beam off, not armed)")
            self._kv_set, self._ua_set = float(kv), float(ua)
            self._emit("technique", self._t, kv=self._kv_set, ua=self._ua_set)
        self._run(do)

    def warm_up(self) -> None:
        def do():
            self._refuse_if_faulted("warm-up")
            if self._state not in (DeviceState.STANDBY, DeviceState.READY):
                raise XrsRefusal(ErrorCode.WRONG_STATE, f"warm-up refused in state {self._state.name}: "
                                 "only in STANDBY or READY")
            self._refuse_if_interlocked("warm-up", ignore=InterlockBit.NO_APPLICATOR)
            self._state = DeviceState.WARMING_UP
            self._warm_up_end_s = self._t + self.warm_up_s
            self._emit("warm_up_started", self._t, duration_s=self.warm_up_s)
            self._events_at(self._t)              # a zero-length warm-up completes at once
        self._run(do)

    def arm(self, backup_time_s: float, irm_limit_gy: float, plan_hash: bytes) -> None:
        def do():
            lo_t, hi_t = BACKUP_TIME_RANGE_S
            lo_d, hi_d = IRM_LIMIT_RANGE_GY
            if not (math.isfinite(backup_time_s) and lo_t <= backup_time_s <= hi_t):
                raise XrsRefusal(ErrorCode.OUT_OF_RANGE, f"backup time {backup_time_s} s outside {lo_t}-{hi_t} s")
            if not (math.isfinite(irm_limit_gy) and lo_d <= irm_limit_gy <= hi_d):
                raise XrsRefusal(ErrorCode.OUT_OF_RANGE, f"IRM limit {irm_limit_gy} Gy outside {lo_d}-{hi_d} Gy")
            if len(plan_hash) != 32 or not any(plan_hash):
                raise XrsRefusal(ErrorCode.OUT_OF_RANGE, "plan hash must be 32 bytes and not all zero")
            self._refuse_if_faulted("arm")
            if self._state in (DeviceState.STANDBY, DeviceState.WARMING_UP):
                raise XrsRefusal(ErrorCode.NOT_WARMED_UP, "arm refused: the unit is not warmed up; "
                                 "run warm-up and wait for READY")
            if self._state not in (DeviceState.READY, DeviceState.ARMED):
                raise XrsRefusal(ErrorCode.WRONG_STATE, f"arm refused in state {self._state.name}: "
                                 "wait until the beam is off and HV ramped down")
            if self._applicator_cm is None:
                raise XrsRefusal(ErrorCode.NO_APPLICATOR, "arm refused: no applicator sensed; mount the planned applicator")
            self._refuse_if_interlocked("arm")
            self._armed = True
            self._backup_time_s = float(backup_time_s)
            self._irm_limit_gy = float(irm_limit_gy)
            self._plan_hash = bytes(plan_hash)
            self._irm_dose_gy = 0.0
            self._irm_counts = 0.0
            self._beam_on_time_s = 0.0
            self._last_cause = BeamOffCauseCode.NONE
            self._last_reason = BeamOffReasonCode.NONE
            self._state = DeviceState.ARMED
            self._emit("arm", self._t, backup_time_s=self._backup_time_s, irm_limit_gy=self._irm_limit_gy,
                       plan_hash=self._plan_hash.hex(), applicator_cm=self._applicator_cm)
        self._run(do)

    def beam_on(self, plan_hash: bytes) -> None:
        def do():
            self._refuse_if_faulted("beam on")
            if self._state in (DeviceState.RAMP_UP, DeviceState.BEAM_ON, DeviceState.RAMP_DOWN):
                raise XrsRefusal(ErrorCode.WRONG_STATE, f"beam on refused in state {self._state.name}")
            if not self._armed or self._state != DeviceState.ARMED:
                raise XrsRefusal(ErrorCode.NOT_ARMED, "beam on refused: not armed (every beam off consumes "
                                 "the arm); arm with the remaining time and dose first")
            if bytes(plan_hash) != self._plan_hash:
                raise XrsRefusal(ErrorCode.PLAN_HASH_MISMATCH, "beam on refused: plan hash differs from the "
                                 "armed plan hash; re-arm with the approved plan")
            if self._applicator_cm is None:
                raise XrsRefusal(ErrorCode.NO_APPLICATOR, "beam on refused: no applicator sensed")
            self._refuse_if_interlocked("beam on")
            self._state = DeviceState.RAMP_UP
            self._t_on = self._t
            self._last_heard_s = self._t            # the beam-on frame itself was heard
            self._beam_on_time_s = 0.0
            for entry in self._scheduled:
                if entry[3] is None:
                    entry[3] = self._t + entry[1]
            self._emit("beam_on", self._t, plan_hash=self._plan_hash.hex(), kv=self._kv_set, ua=self._ua_set,
                       applicator_cm=self._applicator_cm, backup_time_s=self._backup_time_s,
                       irm_limit_gy=self._irm_limit_gy)
            self._events_at(self._t)
        self._run(do)

    def beam_off(self, reason: BeamOffReasonCode) -> None:
        """Never refused: beam off is the safe state. In ARMED it disarms."""
        def do():
            reason_code = BeamOffReasonCode(reason)
            if self.hv_on:
                self._stop_beam(self._t, BeamOffCauseCode.CONSOLE_COMMAND, reason_code)
            elif self._armed:
                self._armed = False
                self._plan_hash = None
                self._state = DeviceState.READY
                self._emit("disarm", self._t, console_reason=reason_code.name.lower())
        self._run(do)

    def reset_fault(self, operator_acknowledgement: str) -> None:
        def do():
            ack = operator_acknowledgement.strip()
            if not ack:
                raise XrsRefusal(ErrorCode.ACK_REQUIRED, "reset refused: an operator acknowledgement is required")
            if len(ack.encode()) > ACKNOWLEDGEMENT_MAX_BYTES:
                raise XrsRefusal(ErrorCode.OUT_OF_RANGE, "acknowledgement longer than 64 bytes")
            if not self._faults:
                raise XrsRefusal(ErrorCode.WRONG_STATE, "reset refused: no latched fault")
            persisting = []
            if self._hv_failure_present:
                persisting.append("HV supply failure still present (service the HV supply)")
            if self._interlocks & InterlockBit.EMERGENCY_STOP:
                persisting.append("emergency stop still pressed (release it)")
            if self._interlocks & InterlockBit.EXTERNAL_INTERLOCK_OPEN:
                persisting.append("external interlock still open (close the door/chain)")
            if self._interlocks & InterlockBit.KEY_SWITCH_OFF:
                persisting.append("key switch off (turn it on)")
            if (self._faults & FaultBit.APPLICATOR_REMOVED) and self._applicator_cm is None:
                persisting.append("no applicator sensed (mount the applicator)")
            if persisting:
                raise XrsRefusal(ErrorCode.FAULT_PERSISTS, "reset refused: " + "; ".join(persisting))
            cleared = [f.name.lower() for f in FaultBit if f in self._faults]
            self._faults = FaultBit(0)
            self._state = DeviceState.READY if self._warmed_up else DeviceState.STANDBY
            self._emit("fault_reset", self._t, cleared=cleared, operator_acknowledgement=ack)
        self._run(do)

    def read_isotropy(self) -> dict[str, float]:
        """Photodiode readings relative to the source's baseline (1.0 = as at acceptance, full output)."""
        def do():
            if self._state != DeviceState.BEAM_ON:
                raise XrsRefusal(ErrorCode.WRONG_STATE, "isotropy photodiodes need the beam at full HV: "
                                 f"state is {self._state.name}; arm a QA exposure and switch the beam on")
            out = self._output(self._t)
            return {name: max(0.0, out * (1.0 + self._rng.gauss(0.0, 0.001)))
                    for name in ("plus_x", "minus_x", "plus_y", "minus_y", "plus_z")}
        return self._run(do)

    # ---------------------------------------------------------------------------------- faults & world

    def mount_applicator(self, applicator_cm: float | None) -> None:
        """Mount another applicator (or none). Removal during beam is a fault."""
        def do():
            if applicator_cm is not None and applicator_cm not in APPLICATOR_DIAMETERS_CM:
                raise ValueError(f"applicator {applicator_cm} cm does not exist")
            self._configured_applicator_cm = applicator_cm if applicator_cm is not None else self._configured_applicator_cm
            self._set_applicator(self._t, applicator_cm)
        self._run(do)

    def _set_applicator(self, t: float, applicator_cm: float | None) -> None:
        self._applicator_cm = applicator_cm
        if applicator_cm is None:
            self._interlocks |= InterlockBit.NO_APPLICATOR
            if self.hv_on:
                self._latch_fault(t, FaultBit.APPLICATOR_REMOVED, "applicator no longer sensed during beam")
        else:
            self._interlocks &= ~InterlockBit.NO_APPLICATOR
        self._emit("applicator", t, applicator_cm=applicator_cm)

    def inject(self, kind: str, **params) -> None:
        """Inject a fault now. Kinds and parameters: see FAULT_KINDS' documentation above."""
        self._run(lambda: self._inject(kind, self._t, **params))

    def schedule_fault(self, kind: str, after_beam_on_s: float, **params) -> None:
        """Inject `kind` `after_beam_on_s` seconds after the next beam on (device time)."""
        if kind not in FAULT_KINDS:
            raise ValueError(self._unknown_kind(kind))
        if not (math.isfinite(after_beam_on_s) and after_beam_on_s >= 0):
            raise ValueError(f"after_beam_on_s must be a finite number >= 0, got {after_beam_on_s!r}")
        def do():
            fire_at = self._t_on + after_beam_on_s if self.hv_on else None
            self._scheduled.append([kind, float(after_beam_on_s), dict(params), fire_at])
        self._run(do)

    @staticmethod
    def _unknown_kind(kind: str) -> str:
        return f"unknown fault kind {kind!r}: choose one of {', '.join(FAULT_KINDS)}"

    def _line(self):
        if self.line_faults is None:
            raise RuntimeError("link faults need the runner's LineFaults: call attach_line_faults(bench.faults['xrs'])")
        return self.line_faults

    def _inject(self, kind: str, t: float, **params) -> None:
        def param(name: str, default: float, *, takes_value: bool = True) -> float:
            # `value` (orconsole-sim --fault KIND:VALUE) stands for the kind's main parameter only
            value = params.get(name, params.get("value", default) if takes_value else default)
            value = default if value is None else float(value)
            if not math.isfinite(value):
                raise ValueError(f"{kind}: {name} must be finite, got {value!r}")
            return value

        unknown = set(params) - {"value", "fraction", "duration_s", "rate"}
        if unknown:
            raise ValueError(f"{kind}: unknown parameter(s) {', '.join(sorted(unknown))}")
        if kind == "hv_arc":
            self._latch_fault(t, FaultBit.HV_ARC, "HV arc detected")
        elif kind == "hv_failure":
            self._hv_failure_present = True
            self._latch_fault(t, FaultBit.HV_FAILURE, "HV cannot reach or hold its setpoint")
        elif kind == "interlock_open":
            self._interlocks |= InterlockBit.EXTERNAL_INTERLOCK_OPEN
            if self.hv_on:
                self._latch_fault(t, FaultBit.INTERLOCK_OPENED, "external interlock opened during beam")
        elif kind == "key_switch_off":
            self._interlocks |= InterlockBit.KEY_SWITCH_OFF
            if self.hv_on:
                self._latch_fault(t, FaultBit.INTERLOCK_OPENED, "key switch turned off during beam")
        elif kind == "emergency_stop":
            self._interlocks |= InterlockBit.EMERGENCY_STOP
            self._latch_fault(t, FaultBit.EMERGENCY_STOP, "emergency stop pressed")
        elif kind == "output_drop":
            fraction = param("fraction", 0.15)
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"output_drop fraction must be within 0..1, got {fraction}")
            self._output_drop = fraction
        elif kind == "output_drift":
            fraction = param("fraction", -0.05)
            duration_s = param("duration_s", 60.0, takes_value=False)
            if not -1.0 <= fraction <= 1.0 or duration_s < 0:
                raise ValueError(f"output_drift needs fraction within -1..1 and duration_s >= 0, got {fraction}, {duration_s}")
            self._drifts.append((t, fraction, duration_s))
        elif kind == "applicator_removed":
            self._set_applicator(t, None)
        elif kind == "silent":
            self._line().silent = True
        elif kind == "bit_errors":
            rate = param("rate", 1e-3)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"bit_errors rate must be within 0..1, got {rate}")
            self._line().bit_error_rate = rate
        elif kind == "byte_drops":
            rate = param("rate", 1e-3)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"byte_drops rate must be within 0..1, got {rate}")
            self._line().byte_drop_rate = rate
        else:
            raise ValueError(self._unknown_kind(kind))
        self._emit("fault_injected", t, kind=kind, **{k: v for k, v in params.items()})

    def clear(self, kind: str) -> None:
        """Undo the cause of an injected fault (latched faults stay until reset_fault)."""
        def do():
            t = self._t
            if kind == "hv_arc":
                pass
            elif kind == "hv_failure":
                self._hv_failure_present = False
            elif kind == "interlock_open":
                self._interlocks &= ~InterlockBit.EXTERNAL_INTERLOCK_OPEN
            elif kind == "key_switch_off":
                self._interlocks &= ~InterlockBit.KEY_SWITCH_OFF
            elif kind == "emergency_stop":
                self._interlocks &= ~InterlockBit.EMERGENCY_STOP
            elif kind == "output_drop":
                self._output_drop = 0.0
            elif kind == "output_drift":
                self._drifts.clear()
            elif kind == "applicator_removed":
                self._set_applicator(t, self._configured_applicator_cm)
            elif kind == "silent":
                self._line().silent = False
            elif kind == "bit_errors":
                self._line().bit_error_rate = 0.0
            elif kind == "byte_drops":
                self._line().byte_drop_rate = 0.0
            else:
                raise ValueError(self._unknown_kind(kind))
            self._scheduled = [s for s in self._scheduled if s[0] != kind]
            self._emit("fault_cleared", t, kind=kind)
        self._run(do)
