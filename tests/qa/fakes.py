"""Deterministic stand-ins for the X-ray unit and the electrometer (HAL surface only), sharing a
manual clock, so the output-check procedure can be tested step by step without threads.

The simulator runs (test_output_check_sim.py) check the same procedure against the real bench.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from drivers.errors import DeviceRefused
from drivers.hal import (BeamOffCause, IsotropyReading, LinkStats, MeasuredValues, ReadoutFlag, ReadoutIdentity,
                         XrsFault, XrsIdentity, XrsInterlock, XrsState, XrsStatus, ZeroStatus)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def monotonic(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now_s += seconds


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    chamber_current_a: float = 3.0e-9      # full output, reference air
    output_fraction: float = 1.0
    room_k_tp: float = 1.0                  # raw reading = true / k_tp
    noise_fraction: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    beam_intervals: list = field(default_factory=list)   # (start, end) of beam-on


class FakeXrs:
    def __init__(self, world: World, serial: str = "XRS-TEST-1") -> None:
        self.world = world
        self.serial = serial
        self.state = XrsState.READY
        self.beam_started_s: float | None = None
        self.calls: list[str] = []
        self.beam_off_reasons = []
        self.interlocks = XrsInterlock.NONE
        self.isotropy = IsotropyReading(1.01, 0.99, 1.0, 0.995, 1.005)
        self.backup_time_s: float | None = None
        self.last_cause = BeamOffCause.NONE

    def connect(self) -> XrsIdentity:
        return XrsIdentity(self.serial, "fake XRS", "1.0", 1, "00")

    def reconnect(self):
        return self.connect()

    def close(self) -> None:
        pass

    def _backup_timer(self) -> None:
        """Like the unit: the armed backup time ends the beam by itself."""
        if (self.beam_started_s is not None and self.backup_time_s is not None
                and self.world.clock.now_s - self.beam_started_s >= self.backup_time_s):
            self.world.beam_intervals.append((self.beam_started_s, self.beam_started_s + self.backup_time_s))
            self.beam_started_s = None
            self.state = XrsState.READY
            self.last_cause = BeamOffCause.BACKUP_TIMER

    def status(self) -> XrsStatus:
        self._backup_timer()
        # since the last arm: the running beam, else the last one
        if self.beam_started_s is not None:
            beam_s = self.world.clock.now_s - self.beam_started_s
        else:
            beam_s = sum(e - s for s, e in self.world.beam_intervals[-1:])
        return XrsStatus(state=self.state, kv=50.0 if self.state is XrsState.BEAM_ON else 0.0, ua=40.0,
                         hv_on=self.state is XrsState.BEAM_ON, irm_counts=0, irm_dose_gy=0.0,
                         applicator_diameter_cm=3.0, interlocks=self.interlocks, faults=XrsFault.NONE,
                         device_time_s=self.world.clock.now_s, beam_on_time_s=beam_s,
                         last_beam_off_cause=self.last_cause, last_beam_off_reason=None, armed_plan_hash=None)

    def heartbeat(self) -> float:
        return self.world.clock.now_s

    def set_technique(self, kv, ua) -> None:
        self.calls.append(f"technique {kv} {ua}")

    def warm_up(self) -> None:
        self.state = XrsState.READY

    def arm(self, *, backup_time_s, irm_limit_gy, plan_hash) -> None:
        assert self.state is XrsState.READY, self.state
        assert backup_time_s > 0 and irm_limit_gy > 0 and len(plan_hash) == 32
        self.calls.append("arm")
        self.backup_time_s = backup_time_s
        self.state = XrsState.ARMED

    def beam_on(self, *, plan_hash) -> None:
        assert self.state is XrsState.ARMED
        self.calls.append("beam_on")
        self.state = XrsState.BEAM_ON
        self.beam_started_s = self.world.clock.now_s

    def beam_off(self, reason) -> None:
        self._backup_timer()
        self.calls.append("beam_off")
        self.beam_off_reasons.append(reason)
        if self.beam_started_s is not None:
            self.world.beam_intervals.append((self.beam_started_s, self.world.clock.now_s))
            self.beam_started_s = None
            self.last_cause = BeamOffCause.CONSOLE_COMMAND
        self.state = XrsState.READY

    def reset_fault(self, *, operator_acknowledgement) -> None:
        pass

    def read_isotropy(self) -> IsotropyReading:
        return self.isotropy

    def link_stats(self) -> LinkStats:
        return LinkStats()

    def subscribe(self, listener) -> None:
        pass


class FakeReadout:
    RANGE_MAX_C = {"VERY_LOW": 1e-9, "LOW": 1e-7, "MEDIUM": 1e-5, "HIGH": 1e-3}

    def __init__(self, world: World, *, hv_v: int = 300, warm_up_s: float = 5.0, zero_s: float = 3.0) -> None:
        self.world = world
        self.hv_v = hv_v
        self.warm_up_until = world.clock.now_s + warm_up_s
        self.zero_s = zero_s
        self.zero_done_at: float | None = None
        self.token = False
        self.range = "LOW"
        self.status_text = "RES"
        self.started_at: float | None = None
        self.held_charge = 0.0
        self.calls: list[str] = []

    def connect(self) -> ReadoutIdentity:
        return ReadoutIdentity("UNIDOS Tango", "TM10052", "1.2.4", "A16", "654321")

    def close(self) -> None:
        pass

    def _need_token(self) -> None:
        if not self.token:
            raise DeviceRefused("no write permission (E20)", code="E20", device="readout")

    def acquire_write_permission(self) -> None:
        self.token = True
        self.calls.append("token")

    def release_write_permission(self) -> None:
        self.token = False
        self.calls.append("release")

    def status(self) -> str:
        return self.status_text

    def start(self) -> None:
        self._need_token()
        self.started_at = self.world.clock.now_s
        self.status_text = "MEAS"

    def _charge_until(self, end_s: float) -> float:
        if self.started_at is None:
            return self.held_charge
        beam = sum(max(0.0, min(e, end_s) - max(s, self.started_at)) for s, e in self.world.beam_intervals)
        true_charge = self.world.chamber_current_a * self.world.output_fraction * beam
        noise = 1.0 + self.world.rng.gauss(0.0, self.world.noise_fraction) if self.world.noise_fraction else 1.0
        return true_charge / self.world.room_k_tp * noise

    def hold(self) -> None:
        self._need_token()
        self.held_charge = self._charge_until(self.world.clock.now_s)
        self.started_at = None
        self.status_text = "HOLD"
        self.calls.append("hold")

    def reset(self) -> None:
        self._need_token()
        self.held_charge = 0.0
        self.started_at = None
        self.status_text = "RES"
        self.calls.append("reset")

    def set_integration_time(self, seconds: int) -> None:
        self._need_token()

    def start_interval(self) -> None:
        self._need_token()

    def start_zero_correction(self) -> None:
        self._need_token()
        if self.world.clock.now_s < self.warm_up_until:
            raise DeviceRefused("command not allowed at this moment (E03)", code="E03", device="readout")
        self.zero_done_at = self.world.clock.now_s + self.zero_s
        self.calls.append("zero")

    def zero_status(self) -> ZeroStatus:
        if self.zero_done_at is None:
            return ZeroStatus("Failed", 0.0, self.zero_s)
        remaining = max(0.0, self.zero_done_at - self.world.clock.now_s)
        return ZeroStatus("Running" if remaining > 0 else "Passed", remaining, self.zero_s)

    def set_range(self, range_name: str) -> None:
        self._need_token()
        self.range = range_name
        self.calls.append(f"range {range_name}")

    def get_range(self) -> str:
        return self.range

    def set_hv(self, volts: int) -> None:
        self._need_token()
        self.hv_v = volts

    def get_hv(self) -> int:
        return self.hv_v

    def measured_values(self) -> MeasuredValues:
        charge = self.held_charge
        flags = ReadoutFlag.NONE
        if charge > self.RANGE_MAX_C[self.range]:
            flags |= ReadoutFlag.OVERLOAD_CHARGE
            charge = self.RANGE_MAX_C[self.range]
        return MeasuredValues(status=self.status_text, integrated=charge, integrated_unit="C", rate=0.0,
                              rate_unit="A", timebase="", measuring_time_s=0.0, hv_v=float(self.hv_v), flags=flags)

    def link_stats(self) -> LinkStats:
        return LinkStats()

    def subscribe(self, listener) -> None:
        pass
