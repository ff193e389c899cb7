"""XrsDriver against the in-process simulator (sim://xrs) and a pty: commands, refusals, faults, link loss."""
from __future__ import annotations

import itertools
import math
import threading
import time

import pytest

from drivers.errors import DeviceError, DeviceRefused, InvalidRequest, LinkLost, ProtocolMismatch
from drivers.hal import (BeamOffCause, BeamOffReason, LinkEventKind, XraySource, XrsFault, XrsInterlock, XrsState)
from drivers.xrs import XrsDriver
from protocol import xrs
from simulators.bench import Bench, get_bench, reset_benches

PLAN = bytes(range(1, 33))
_names = itertools.count()


def wait_for(predicate, timeout_s: float = 5.0, step_s: float = 0.01):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return predicate()


class Link:
    """A driver on its own named in-process bench, with the bench's line faults wired to the model."""

    def __init__(self, **driver_options) -> None:
        self.name = f"xrs-test-{next(_names)}"
        self.url = f"sim://xrs?bench={self.name}&seed=11"
        self.driver = XrsDriver(self.url, **driver_options)
        self.events = []
        self.driver.subscribe(self.events.append)
        self.identity = self.driver.connect()
        self.bench = get_bench(self.name)
        self.model = self.bench.xrs_model
        self.device = self.bench.devices["xrs"]
        self.line = self.bench.faults["xrs"]
        self.model.attach_line_faults(self.line)

    def kinds(self):
        return [e.kind for e in self.events]

    def ready(self) -> "Link":
        self.driver.warm_up()
        assert wait_for(lambda: self.driver.status().state == XrsState.READY, 5.0)
        return self

    def beam(self, backup_time_s: float = 30.0, irm_limit_gy: float = 25.0) -> "Link":
        self.driver.arm(backup_time_s=backup_time_s, irm_limit_gy=irm_limit_gy, plan_hash=PLAN)
        self.driver.beam_on(plan_hash=PLAN)
        return self

    def poll(self, seconds: float, period_s: float = 0.05):
        """Keep the link alive like the supervisor does; return the last status."""
        end = time.monotonic() + seconds
        status = self.driver.status()
        while time.monotonic() < end:
            time.sleep(period_s)
            status = self.driver.status()
        return status


@pytest.fixture
def link():
    made = []

    def make(**options):
        made.append(Link(**options))
        return made[-1]

    yield make
    for item in made:
        item.driver.close()
    reset_benches()


# ---- basics ------------------------------------------------------------------------------------

def test_driver_implements_the_hal_x_ray_source_interface():
    assert isinstance(XrsDriver("sim://xrs"), XraySource)


def test_connect_runs_the_handshake_and_returns_the_units_identity(link):
    lk = link()
    assert lk.identity.serial_number == "XRS-SIM-FAST-01"
    assert lk.identity.protocol_version == xrs.PROTOCOL_VERSION
    assert lk.identity.schema_hash == xrs.SCHEMA_HASH.hex()


def test_a_treatment_cycle_reports_state_dose_plan_hash_and_the_beam_off_reason(link):
    lk = link().ready()
    lk.beam()
    status = lk.poll(0.3)
    assert status.state == XrsState.BEAM_ON and status.hv_on and status.armed_plan_hash == PLAN
    assert status.kv == pytest.approx(50.0, abs=0.2) and status.ua == pytest.approx(40.0, abs=0.2)
    assert status.applicator_diameter_cm == 3.0 and status.irm_dose_gy > 0 and status.irm_counts > 0
    lk.driver.beam_off(BeamOffReason.OPERATOR_PAUSE)
    status = lk.driver.status()
    assert not status.hv_on and status.armed_plan_hash is None
    assert status.last_beam_off_cause == BeamOffCause.CONSOLE_COMMAND
    assert status.last_beam_off_reason == BeamOffReason.OPERATOR_PAUSE
    assert lk.driver.heartbeat() == pytest.approx(status.device_time_s, abs=1.0)
    before_s = time.monotonic()
    status = lk.driver.status()
    assert before_s <= status.host_time_s <= time.monotonic()


def test_isotropy_is_read_during_beam(link):
    lk = link().ready().beam()
    lk.poll(0.1)
    reading = lk.driver.read_isotropy()
    assert reading.plus_z == pytest.approx(1.0, abs=0.02)
    lk.driver.beam_off(BeamOffReason.QA_EXPOSURE_END)


def test_calls_before_connect_say_to_connect_first():
    with pytest.raises(DeviceError, match="connect"):
        XrsDriver("sim://xrs").status()


# ---- strict validators: refused with a reason, nothing sent ------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda d: d.set_technique(60.0, 40.0), "outside the allowed 40–50 kV"),
    (lambda d: d.set_technique(50.0, math.nan), "not a finite number"),
    (lambda d: d.set_technique(50.0, 45.0), "outside the allowed 5–40 µA"),
    (lambda d: d.set_technique("50", 40.0), "must be a number"),
    (lambda d: d.arm(backup_time_s=-1.0, irm_limit_gy=20.0, plan_hash=PLAN), "backup time -1 s"),
    (lambda d: d.arm(backup_time_s=math.nan, irm_limit_gy=20.0, plan_hash=PLAN), "not a finite number"),
    (lambda d: d.arm(backup_time_s=20.0, irm_limit_gy=math.inf, plan_hash=PLAN), "not a finite number"),
    (lambda d: d.arm(backup_time_s=20.0, irm_limit_gy=0.0, plan_hash=PLAN), "IRM dose limit"),
    (lambda d: d.arm(backup_time_s=20.0, irm_limit_gy=20.0, plan_hash=b"abc"), "32 bytes"),
    (lambda d: d.beam_on(plan_hash=bytes(32)), "all zero"),
    (lambda d: d.beam_off(3), "BeamOffReason"),
    (lambda d: d.reset_fault(operator_acknowledgement="   "), "acknowledgement"),
    (lambda d: d.reset_fault(operator_acknowledgement="x" * 65), "shorten"),
])
def test_out_of_range_requests_are_refused_with_a_reason_and_never_sent(link, call, match):
    lk = link()
    sent = lk.driver.link_stats().frames_sent
    with pytest.raises(InvalidRequest, match=match):
        call(lk.driver)
    assert lk.driver.link_stats().frames_sent == sent


def test_device_refusal_raises_device_refused_with_code_and_what_to_do(link):
    lk = link().ready()
    with pytest.raises(DeviceRefused, match="arm with the remaining time and dose") as info:
        lk.driver.beam_on(plan_hash=PLAN)
    assert info.value.code == "NOT_ARMED"
    lk.driver.arm(backup_time_s=5.0, irm_limit_gy=5.0, plan_hash=PLAN)
    with pytest.raises(DeviceRefused) as info:
        lk.driver.beam_on(plan_hash=bytes(range(2, 34)))
    assert info.value.code == "PLAN_HASH_MISMATCH"
    assert not lk.driver.status().hv_on


# ---- device faults, each reported through status ------------------------------------------------

FAULT_EXPECTATIONS = {
    "hv_arc": lambda s: XrsFault.HV_ARC in s.faults and s.last_beam_off_cause == BeamOffCause.FAULT,
    "hv_failure": lambda s: XrsFault.HV_FAILURE in s.faults,
    "interlock_open": lambda s: (XrsFault.INTERLOCK_OPENED in s.faults
                                 and XrsInterlock.EXTERNAL_INTERLOCK_OPEN in s.interlocks
                                 and s.last_beam_off_cause == BeamOffCause.INTERLOCK),
    "key_switch_off": lambda s: XrsInterlock.KEY_SWITCH_OFF in s.interlocks and XrsFault.INTERLOCK_OPENED in s.faults,
    "emergency_stop": lambda s: (XrsFault.EMERGENCY_STOP in s.faults and XrsInterlock.EMERGENCY_STOP in s.interlocks
                                 and s.last_beam_off_cause == BeamOffCause.EMERGENCY_STOP),
    "applicator_removed": lambda s: (XrsFault.APPLICATOR_REMOVED in s.faults and s.applicator_diameter_cm is None
                                     and XrsInterlock.NO_APPLICATOR in s.interlocks),
}


@pytest.mark.parametrize("kind", sorted(FAULT_EXPECTATIONS))
def test_each_latched_device_fault_stops_the_beam_and_shows_in_status(link, kind):
    lk = link().ready().beam()
    lk.poll(0.1)
    lk.model.inject(kind)
    status = lk.driver.status()
    assert not status.hv_on and status.state == XrsState.FAULT
    assert FAULT_EXPECTATIONS[kind](status), status
    with pytest.raises(DeviceRefused) as info:
        lk.driver.arm(backup_time_s=5.0, irm_limit_gy=5.0, plan_hash=PLAN)
    assert info.value.code == "FAULT_LATCHED"


def test_fault_reset_needs_the_cause_removed_then_an_acknowledgement(link):
    lk = link().ready().beam()
    lk.model.inject("emergency_stop")
    with pytest.raises(DeviceRefused, match="release it") as info:
        lk.driver.reset_fault(operator_acknowledgement="checked")
    assert info.value.code == "FAULT_PERSISTS"
    lk.model.clear("emergency_stop")
    lk.driver.reset_fault(operator_acknowledgement="e-stop released, patient checked")
    assert lk.driver.status().state == XrsState.READY


def test_output_drop_shows_as_lower_tube_current(link):
    lk = link().ready().beam()
    lk.poll(0.1)
    lk.model.inject("output_drop", fraction=0.15)
    status = lk.poll(0.1)
    assert status.hv_on and status.ua == pytest.approx(34.0, abs=0.3)


def test_output_drift_shows_as_a_lower_irm_dose_rate(link):
    lk = link().ready().beam()
    lk.poll(0.1)
    lk.model.inject("output_drift", fraction=-0.2, duration_s=0.0)
    first = lk.driver.status()
    last = lk.poll(0.5)
    rate_gy_per_s = (last.irm_dose_gy - first.irm_dose_gy) / (last.beam_on_time_s - first.beam_on_time_s)
    nominal_gy_per_s = lk.bench.source.rate_for(3.0) / 60.0
    assert rate_gy_per_s / nominal_gy_per_s == pytest.approx(0.8, abs=0.02)


def test_the_driver_sends_nothing_on_its_own_so_the_watchdog_sees_a_silent_caller(link):
    lk = link(device_silence_s=None).ready().beam()
    lk.poll(0.1)
    sent = lk.driver.link_stats().frames_sent
    time.sleep(0.8)                                   # the supervisor "freezes"
    assert lk.driver.link_stats().frames_sent == sent
    status = lk.driver.status()
    assert XrsFault.WATCHDOG_EXPIRED in status.faults and not status.hv_on
    assert status.last_beam_off_cause == BeamOffCause.WATCHDOG


# ---- link faults --------------------------------------------------------------------------------

def test_silent_line_raises_link_lost_reports_a_link_event_and_needs_reconnect(link):
    lk = link(reply_timeout_s=0.05, max_attempts=3, device_silence_s=None).ready()
    lk.model.inject("silent")
    with pytest.raises(LinkLost, match=r"within 0\.\d\d s \([123] attempts\)"):
        lk.driver.status()
    assert wait_for(lambda: LinkEventKind.LOST in lk.kinds())
    lost = next(e for e in lk.events if e.kind == LinkEventKind.LOST)
    assert lost.device == "xrs" and "reconnect" in lost.message
    stats = lk.driver.link_stats()
    assert 1 <= stats.timeouts <= 3 and stats.retries == stats.timeouts - 1   # 3 unless the machine stalls
    lk.model.clear("silent")
    with pytest.raises(LinkLost, match="reconnect"):           # no silent recovery
        lk.driver.status()
    assert lk.driver.link_stats().frames_sent == stats.frames_sent
    lk.driver.reconnect()
    assert lk.driver.status().state == XrsState.READY
    assert wait_for(lambda: LinkEventKind.RESTORED in lk.kinds())


def test_device_silence_is_reported_without_the_driver_sending_anything(link):
    lk = link(device_silence_s=0.6)
    lk.driver.heartbeat()
    assert wait_for(lambda: lk.device._active is not None)
    time.sleep(0.4)                                     # device heartbeats arrive (every 0.25 s)
    sent = lk.driver.link_stats().frames_sent
    lk.model.inject("silent")
    assert wait_for(lambda: LinkEventKind.LOST in lk.kinds(), 3.0)
    assert lk.driver.link_stats().frames_sent == sent
    assert "sent nothing" in lk.events[-1].message


def test_closing_the_device_side_reports_link_lost(link):
    lk = link()
    lk.driver.status()
    lk.bench.stop()
    assert wait_for(lambda: LinkEventKind.LOST in lk.kinds(), 3.0)
    with pytest.raises(LinkLost):
        lk.driver.status()


def test_dropped_bytes_are_recovered_by_retransmission_and_counted(link):
    lk = link(reply_timeout_s=0.05, max_attempts=10, device_silence_s=None)
    lk.model.inject("byte_drops", rate=0.01)
    for _ in range(40):
        lk.driver.heartbeat()
    stats = lk.driver.link_stats()
    assert stats.retries > 0 and stats.retries <= 40 * 9
    assert stats.crc_errors + stats.framing_errors + stats.timeouts > 0


def test_bit_errors_at_1e_3_are_survived_by_bounded_retransmission_and_no_command_runs_twice(link):
    lk = link(reply_timeout_s=0.05, max_attempts=10, device_silence_s=None).ready()
    arm_events = []
    lk.bench._on_event = lambda e: arm_events.append(e) if e.get("event") in ("arm", "beam_on") else None
    lk.model.inject("bit_errors", rate=1e-3)
    ok_arms, lost_calls = [], 0
    for i in range(25):
        backup_time_s = 10.0 + i                       # unique per arm: a second execution would show
        try:
            lk.driver.arm(backup_time_s=backup_time_s, irm_limit_gy=20.0, plan_hash=PLAN)
            ok_arms.append(backup_time_s)
            lk.driver.beam_on(plan_hash=PLAN)
            lk.driver.beam_off(BeamOffReason.OPERATOR_PAUSE)
            assert wait_for(lambda: lk.driver.status().state == XrsState.READY)  # HV ramped down
        except LinkLost:
            lost_calls += 1
            lk.model.clear("bit_errors")
            lk.driver.reconnect()
            lk.driver.beam_off(BeamOffReason.OPERATOR_PAUSE)
            lk.model.inject("bit_errors", rate=1e-3)
        except DeviceRefused as refused:
            # only possible when the watchdog tripped during a long retry burst: reset and go on
            lk.model.clear("bit_errors")
            status = lk.driver.status()
            assert XrsFault.WATCHDOG_EXPIRED in status.faults, (refused.message, status)
            lk.driver.reset_fault(operator_acknowledgement="link test")
            lk.model.inject("bit_errors", rate=1e-3)
    armed = [e["backup_time_s"] for e in arm_events if e["event"] == "arm"]
    assert len(armed) == len(set(armed)), "an ARM was executed twice"
    assert set(ok_arms) <= set(armed)
    beam_ons = [e for e in arm_events if e["event"] == "beam_on"]
    assert len(beam_ons) <= len(armed)                  # never more beams than arms
    stats = lk.driver.link_stats()
    assert stats.retries > 0 and stats.crc_errors + stats.framing_errors > 0
    assert LinkEventKind.DEGRADED in lk.kinds()
    assert lost_calls <= 3


# ---- handshake mismatches, concurrency, pty ------------------------------------------------------

class _OtherSchemaDevice:
    """A unit that answers IDENTIFY with another schema hash (or another protocol version)."""

    def __init__(self, *, version: int = xrs.PROTOCOL_VERSION, schema_hash: bytes = b"\x13" * 8) -> None:
        self.version, self.schema_hash = version, schema_hash
        self.decoder = xrs.StreamDecoder()
        self.out = bytearray()

    def receive(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            reply = xrs.IdentifyReply(self.version, self.schema_hash, "OTHER-1", "other", "9.9")
            self.out += xrs.encode_frame(frame.seq, reply, version=self.version)

    def transmit(self) -> bytes:
        out, self.out = bytes(self.out), bytearray()
        return out

    def tick(self) -> None:
        pass


@pytest.mark.parametrize("device, match", [
    (_OtherSchemaDevice(), "schema 1313131313131313"),
    (_OtherSchemaDevice(version=2), "protocol version 2"),
])
def test_a_protocol_or_schema_mismatch_fails_the_handshake_loudly(device, match):
    bench = Bench(seed=1)
    bench.devices["xrs"] = device
    try:
        path = bench.serve_pty("xrs")
        driver = XrsDriver(path)
        with pytest.raises(ProtocolMismatch, match=match):
            driver.connect()
        with pytest.raises(DeviceError, match="connect"):
            driver.status()
    finally:
        bench.stop()


def test_a_second_thread_calling_while_a_call_is_in_flight_is_refused(link):
    lk = link(reply_timeout_s=0.2, device_silence_s=None)
    lk.model.inject("silent")
    errors = []
    worker = threading.Thread(target=lambda: errors.append(pytest.raises(LinkLost, lk.driver.status)))
    worker.start()
    assert wait_for(lambda: lk.driver.link_stats().frames_sent >= 2)
    with pytest.raises(DeviceError, match="two threads"):
        lk.driver.heartbeat()
    worker.join(5.0)
    assert errors


def test_driver_works_over_a_pty_served_by_the_bench():
    bench = Bench(seed=2)
    driver = XrsDriver(bench.serve_pty("xrs"))
    try:
        identity = driver.connect()
        assert identity.serial_number == bench.source.serial
        driver.warm_up()
        assert wait_for(lambda: driver.status().state == XrsState.READY)
        driver.arm(backup_time_s=5.0, irm_limit_gy=5.0, plan_hash=PLAN)
        driver.beam_on(plan_hash=PLAN)
        assert wait_for(lambda: driver.status().state == XrsState.BEAM_ON)
        driver.beam_off(BeamOffReason.OPERATOR_STOP)
        assert not driver.status().hv_on
        stats = driver.link_stats()
        assert stats.frames_sent >= 6 and stats.rtt_p50_ms is not None and stats.crc_errors == 0
    finally:
        driver.close()
        bench.stop()


def test_on_a_lost_link_beam_off_still_puts_one_frame_on_the_wire_then_raises(link):
    lk = link(device_silence_s=None).ready().beam()      # lost within 0.3 s, before the unit's 0.5 s watchdog
    lk.model.inject("silent")
    with pytest.raises(LinkLost):
        lk.driver.status()
    lk.model.clear("silent")                          # the line is back, but the driver does not know
    with pytest.raises(LinkLost, match="sent once without confirmation"):
        lk.driver.beam_off(BeamOffReason.CONSOLE_FAULT)
    status = wait_for(lambda: (s := lk.model.status()) and not s.hv_on and s)
    assert status.last_beam_off_cause == xrs.BeamOffCauseCode.CONSOLE_COMMAND   # not the watchdog
    assert status.last_beam_off_reason == xrs.BeamOffReasonCode.CONSOLE_FAULT
    with pytest.raises(LinkLost):
        lk.driver.status()                            # still only reconnect() brings it back


def test_a_listener_that_calls_the_driver_gets_a_device_error_instead_of_a_deadlock(link):
    lk = link(reply_timeout_s=0.05, device_silence_s=None)
    seen = []

    def bad_listener(event):
        try:
            lk.driver.status()
        except DeviceError as exc:
            seen.append(exc)

    lk.driver.subscribe(bad_listener)
    lk.model.inject("silent")
    with pytest.raises(LinkLost):
        lk.driver.status()
    assert wait_for(lambda: seen)
    assert "listener" in seen[0].message


def test_sequence_numbers_wrap_after_256_requests_without_stale_or_cached_answers(link):
    lk = link()
    times = [lk.driver.heartbeat() for _ in range(300)]
    assert times == sorted(times) and len(set(times)) > 250
    stats = lk.driver.link_stats()
    assert stats.retries == 0 and stats.duplicates == 0 and lk.device.duplicates == 0


def test_after_reconnects_every_reply_reaches_the_new_connection(link):
    lk = link()
    for _ in range(2):
        lk.driver.reconnect()
    for _ in range(100):
        lk.driver.status()
    stats = lk.driver.link_stats()
    assert stats.retries == 0 and stats.timeouts == 0
    assert [e.kind for e in lk.events] == [LinkEventKind.RESTORED] * 2
