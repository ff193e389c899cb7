"""A small in-process X-ray source for supervisor tests: honours arm/beam on/beam off, the backup timer and
the IRM limit, and lets a test inject faults. Not a simulator of the real unit (simulators/ does that)."""
from __future__ import annotations

import threading

from drivers.errors import DeviceRefused, LinkLost
from drivers.hal import (BeamOffCause, BeamOffReason, XrsFault, XrsIdentity, XrsInterlock, XrsState, XrsStatus,
                         LinkStats)


class FakeXrs:
    def __init__(self, clock, *, dose_rate_gy_per_s: float, serial: str = "XRS-0042", applicator_cm=3.0) -> None:
        self.clock = clock
        self.rate_gy_per_s = dose_rate_gy_per_s
        self.output_factor = 1.0
        self.serial = serial
        self.applicator_cm = applicator_cm
        self.kv_offset = 0.0
        self.state = XrsState.READY
        self.interlocks = XrsInterlock.NONE
        self.faults = XrsFault.NONE
        self.link_down = False
        self.armed: dict | None = None
        self.arm_calls: list[dict] = []
        self.beam_off_reasons: list[BeamOffReason] = []
        self.status_calls = 0
        self.irm_dose_gy = 0.0
        self.beam_time_s = 0.0
        self._t_on: float | None = None
        self.cause = BeamOffCause.NONE
        self.plan_hash = None
        self._lock = threading.Lock()

    # helpers
    def _advance(self) -> None:
        if self.state is XrsState.BEAM_ON and self._t_on is not None:
            now = self.clock.now_s()
            dt = now - self._t_on
            self._t_on = now
            self.beam_time_s += dt
            self.irm_dose_gy += dt * self.rate_gy_per_s * self.output_factor
            if self.beam_time_s >= self.armed["backup_time_s"]:
                self._off(BeamOffCause.BACKUP_TIMER)
            elif self.irm_dose_gy >= self.armed["irm_limit_gy"]:
                self._off(BeamOffCause.IRM_LIMIT)
            elif self.faults:
                self._off(BeamOffCause.FAULT, XrsState.FAULT)

    def _off(self, cause: BeamOffCause, state: XrsState = XrsState.READY) -> None:
        self.state = state
        self._t_on = None
        self.cause = cause
        self.armed = None
        self.plan_hash = None          # every beam off consumes the arm (as the unit does)

    def _check_link(self) -> None:
        if self.link_down:
            raise LinkLost("no answer from the X-ray unit after 3 retries: check the cable", device="xrs")

    # HAL
    def connect(self) -> XrsIdentity:
        return XrsIdentity(self.serial, "fake", "1.0", 1, "0" * 64)

    def reconnect(self) -> XrsIdentity:
        return self.connect()

    def close(self) -> None:
        pass

    def status(self) -> XrsStatus:
        with self._lock:
            self._check_link()
            self.status_calls += 1
            self._advance()
            on = self.state is XrsState.BEAM_ON
            return XrsStatus(state=self.state, kv=(50.0 + self.kv_offset) if on else 0.0, ua=40.0 if on else 0.0,
                             hv_on=on, irm_counts=int(self.irm_dose_gy * 1e4), irm_dose_gy=self.irm_dose_gy,
                             applicator_diameter_cm=self.applicator_cm, interlocks=self.interlocks,
                             faults=self.faults, device_time_s=self.clock.now_s(), beam_on_time_s=self.beam_time_s,
                             last_beam_off_cause=self.cause, last_beam_off_reason=None,
                             armed_plan_hash=self.plan_hash, host_time_s=self.clock.now_s())

    def heartbeat(self) -> float:
        self._check_link()
        return self.clock.now_s()

    def set_technique(self, kv: float, ua: float) -> None:
        pass

    def warm_up(self) -> None:
        pass

    def arm(self, *, backup_time_s: float, irm_limit_gy: float, plan_hash: bytes) -> None:
        with self._lock:
            self._check_link()
            if self.state not in (XrsState.READY, XrsState.ARMED):
                raise DeviceRefused(f"arm refused in state {self.state.value}", code="WRONG_STATE", device="xrs")
            self.armed = dict(backup_time_s=backup_time_s, irm_limit_gy=irm_limit_gy, plan_hash=plan_hash)
            self.arm_calls.append(dict(self.armed))
            self.plan_hash = plan_hash
            self.irm_dose_gy = 0.0
            self.beam_time_s = 0.0
            self.cause = BeamOffCause.NONE
            self.state = XrsState.ARMED

    def beam_on(self, *, plan_hash: bytes) -> None:
        with self._lock:
            self._check_link()
            if self.state is not XrsState.ARMED or self.armed is None:
                raise DeviceRefused("beam on refused: not armed", code="NOT_ARMED", device="xrs")
            if plan_hash != self.armed["plan_hash"]:
                raise DeviceRefused("plan hash differs", code="PLAN_HASH", device="xrs")
            self.state = XrsState.BEAM_ON
            self._t_on = self.clock.now_s()

    def beam_off(self, reason: BeamOffReason) -> None:
        with self._lock:
            self._check_link()
            self._advance()
            self.beam_off_reasons.append(reason)
            if self.state in (XrsState.BEAM_ON, XrsState.ARMED):
                self._off(BeamOffCause.CONSOLE_COMMAND)

    def reset_fault(self, *, operator_acknowledgement: str) -> None:
        self.faults = XrsFault.NONE
        self.state = XrsState.READY

    def read_isotropy(self):
        raise NotImplementedError

    def link_stats(self) -> LinkStats:
        return LinkStats()

    def subscribe(self, listener) -> None:
        pass
