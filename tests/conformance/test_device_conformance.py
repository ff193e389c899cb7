"""One conformance suite, two simulators: in-process behind sim:// and `orconsole-sim` in a separate
process on a real pty. The console's drivers must see the same device behaviour from both; faults
are injected through the model in-process and through `--fault KIND@SECONDS` across processes.
"""
from __future__ import annotations

import itertools
import time

import pytest

from drivers.errors import DeviceRefused, InvalidRequest, LinkLost
from drivers.hal import BeamOffCause, BeamOffReason, LinkEventKind, XrsFault, XrsInterlock, XrsState
from drivers.unidos import UnidosDriver
from drivers.xrs import XrsDriver
from simulators.bench import get_bench, reset_benches
from simulators.launcher import SimulatorProcess

PLAN = bytes(range(100, 132))
_bench_names = itertools.count()

BACKENDS = ["in-process", "separate-process"]


class Rig:
    """Both drivers connected to one simulated bench; `fault(kind, value)` fires 0.3 s after beam on."""

    def __init__(self, backend: str, faults: tuple[str, ...] = (), **driver_options) -> None:
        self.backend = backend
        self.sim: SimulatorProcess | None = None
        self.bench = None
        if backend == "in-process":
            name = f"conf-{next(_bench_names)}"
            self.xrs_url, self.readout_url = f"sim://xrs?bench={name}", f"sim://unidos?bench={name}"
            self.bench = get_bench(name)
            for spec in faults:
                kind, _, value = spec.partition(":")
                params = {"value": float(value)} if value else {}
                self.bench.xrs_model.schedule_fault(kind, 0.3, **params)
        else:
            args = ["--pty"] + [f"--fault={spec}@0.3" for spec in faults]
            self.sim = SimulatorProcess("bench", *args).start()
            self.xrs_url, self.readout_url = self.sim.ports["xrs"], self.sim.ports["unidos"]
        self.xrs = XrsDriver(self.xrs_url, **driver_options)
        self.readout = UnidosDriver(self.readout_url)
        self.events = []
        self.xrs.subscribe(self.events.append)

    def close(self) -> None:
        for driver in (self.xrs, self.readout):
            driver.close()
        if self.sim is not None:
            self.sim.stop()
        reset_benches()

    def ready(self) -> "Rig":
        self.xrs.connect()
        self.xrs.set_technique(50.0, 40.0)
        self.xrs.warm_up()
        self.poll_until(lambda s: s.state == XrsState.READY, 10.0)
        return self

    def poll_until(self, predicate, timeout_s: float, period_s: float = 0.05):
        """Poll at 20 Hz (which also feeds the device watchdog) until predicate(status) holds."""
        deadline = time.monotonic() + timeout_s
        status = self.xrs.status()
        while not predicate(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {timeout_s} s; last status {status}")
            time.sleep(period_s)
            status = self.xrs.status()
        return status


@pytest.fixture(params=BACKENDS)
def rig_factory(request):
    made: list[Rig] = []

    def make(*faults: str, **driver_options) -> Rig:
        made.append(Rig(request.param, faults, **driver_options))
        return made[-1]

    yield make
    for rig in made:
        rig.close()


def test_handshake_reports_the_simulated_fast_source_and_its_protocol(rig_factory):
    rig = rig_factory()
    identity = rig.xrs.connect()
    assert identity.serial_number.startswith("XRS-SIM-FAST")
    assert identity.protocol_version == 1
    status = rig.xrs.status()
    assert status.applicator_diameter_cm == 3.0
    assert status.hv_on is False
    assert status.interlocks == XrsInterlock.NONE


def test_backup_timer_stops_the_beam_by_itself_at_the_armed_time(rig_factory):
    rig = rig_factory().ready()
    rig.xrs.arm(backup_time_s=0.8, irm_limit_gy=25.0, plan_hash=PLAN)
    rig.xrs.beam_on(plan_hash=PLAN)
    status = rig.poll_until(lambda s: not s.hv_on and s.beam_on_time_s > 0, 5.0)
    assert status.last_beam_off_cause == BeamOffCause.BACKUP_TIMER
    assert status.beam_on_time_s == pytest.approx(0.8, abs=0.01)


def test_irm_limit_stops_the_beam_by_itself_at_the_armed_dose(rig_factory):
    rig = rig_factory().ready()
    rig.xrs.arm(backup_time_s=60.0, irm_limit_gy=0.5, plan_hash=PLAN)
    rig.xrs.beam_on(plan_hash=PLAN)
    status = rig.poll_until(lambda s: not s.hv_on and s.irm_dose_gy > 0, 10.0)
    assert status.last_beam_off_cause == BeamOffCause.IRM_LIMIT
    # HV is switched off at the limit; the ramp-down tail (≤ 20 ms at 0.87 Gy/s) still counts
    assert 0.5 <= status.irm_dose_gy <= 0.5 + 0.87 * 0.02


def test_watchdog_switches_hv_off_when_the_console_falls_silent(rig_factory):
    rig = rig_factory().ready()
    rig.xrs.arm(backup_time_s=60.0, irm_limit_gy=25.0, plan_hash=PLAN)
    rig.xrs.beam_on(plan_hash=PLAN)
    rig.poll_until(lambda s: s.state == XrsState.BEAM_ON, 2.0)
    time.sleep(0.9)  # silence longer than the 0.5 s watchdog
    status = rig.xrs.status()
    assert not status.hv_on
    assert status.last_beam_off_cause == BeamOffCause.WATCHDOG
    assert XrsFault.WATCHDOG_EXPIRED in status.faults


def test_beam_on_is_refused_without_a_matching_arm(rig_factory):
    rig = rig_factory().ready()
    with pytest.raises(DeviceRefused):
        rig.xrs.beam_on(plan_hash=PLAN)
    rig.xrs.arm(backup_time_s=5.0, irm_limit_gy=5.0, plan_hash=PLAN)
    with pytest.raises(DeviceRefused):
        rig.xrs.beam_on(plan_hash=bytes(range(1, 33)))
    assert rig.xrs.status().hv_on is False


def test_out_of_range_requests_are_refused_before_they_reach_the_wire(rig_factory):
    rig = rig_factory()
    rig.xrs.connect()
    sent_before = rig.xrs.link_stats().frames_sent
    for call in (lambda: rig.xrs.set_technique(60.0, 40.0), lambda: rig.xrs.set_technique(float("nan"), 40.0),
                 lambda: rig.xrs.arm(backup_time_s=-1.0, irm_limit_gy=1.0, plan_hash=PLAN)):
        with pytest.raises(InvalidRequest):
            call()
    assert rig.xrs.link_stats().frames_sent == sent_before


@pytest.mark.parametrize("kind,expected_fault", [
    ("hv_arc", XrsFault.HV_ARC),
    ("hv_failure", XrsFault.HV_FAILURE),
    ("interlock_open", XrsFault.INTERLOCK_OPENED),
    ("emergency_stop", XrsFault.EMERGENCY_STOP),
    ("applicator_removed", XrsFault.APPLICATOR_REMOVED),
])
def test_device_fault_during_beam_stops_it_and_the_driver_reports_the_fault(rig_factory, kind, expected_fault):
    rig = rig_factory(kind).ready()
    rig.xrs.arm(backup_time_s=30.0, irm_limit_gy=25.0, plan_hash=PLAN)
    rig.xrs.beam_on(plan_hash=PLAN)
    status = rig.poll_until(lambda s: s.state == XrsState.FAULT, 5.0)
    assert expected_fault in status.faults
    assert not status.hv_on
    assert status.beam_on_time_s == pytest.approx(0.3, abs=0.06)


def test_output_drop_is_seen_as_a_lower_irm_dose_rate(rig_factory):
    rig = rig_factory("output_drop:0.15").ready()
    rig.xrs.arm(backup_time_s=30.0, irm_limit_gy=25.0, plan_hash=PLAN)
    rig.xrs.beam_on(plan_hash=PLAN)
    first = rig.poll_until(lambda s: s.beam_on_time_s > 0.6, 5.0)
    later = rig.poll_until(lambda s: s.beam_on_time_s > first.beam_on_time_s + 0.5, 5.0)
    rate_gy_per_s = (later.irm_dose_gy - first.irm_dose_gy) / (later.beam_on_time_s - first.beam_on_time_s)
    nominal_gy_per_s = 0.87 * 60 / 60  # fast source, 3.0 cm: 52.2 Gy/min
    assert rate_gy_per_s == pytest.approx(nominal_gy_per_s * 0.85, rel=0.03)
    rig.xrs.beam_off(BeamOffReason.OPERATOR_STOP)


def test_silent_device_ends_in_link_lost_and_an_event(rig_factory):
    rig = rig_factory("silent").ready()
    rig.xrs.arm(backup_time_s=30.0, irm_limit_gy=25.0, plan_hash=PLAN)
    rig.xrs.beam_on(plan_hash=PLAN)
    with pytest.raises(LinkLost):
        rig.poll_until(lambda s: False, 5.0)
    deadline = time.monotonic() + 2.0  # events are delivered from the driver's I/O thread
    while LinkEventKind.LOST not in [e.kind for e in rig.events] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert LinkEventKind.LOST in [e.kind for e in rig.events]


def test_bit_errors_cost_retries_but_every_command_still_completes(rig_factory):
    # 3e-4 per bit: several % of frames are damaged; eight attempts make a lost command < 1e-6
    rig = rig_factory("bit_errors:0.0003", max_attempts=8).ready()
    rig.xrs.arm(backup_time_s=3.0, irm_limit_gy=25.0, plan_hash=PLAN)
    rig.xrs.beam_on(plan_hash=PLAN)
    status = rig.poll_until(lambda s: not s.hv_on and s.beam_on_time_s > 1.0, 10.0, period_s=0.005)
    assert status.last_beam_off_cause == BeamOffCause.BACKUP_TIMER
    stats = rig.xrs.link_stats()
    assert stats.crc_errors + stats.framing_errors + stats.retries + stats.timeouts > 0


def test_electrometer_identity_token_and_integration(rig_factory):
    rig = rig_factory()
    identity = rig.readout.connect()
    assert identity.name == "UNIDOS Tango"
    with pytest.raises(DeviceRefused) as refused:
        rig.readout.reset()
    assert refused.value.code == "E20"
    rig.readout.acquire_write_permission()
    rig.readout.reset()
    rig.readout.start()
    time.sleep(0.3)
    values = rig.readout.measured_values()
    assert values.status == "MEAS"
    assert values.integrated_unit == "C"
    assert values.measuring_time_s > 0.2
    rig.readout.hold()
    assert rig.readout.status() == "HOLD"
