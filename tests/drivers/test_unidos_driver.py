"""UnidosDriver against the simulated electrometer served on a socketpair and on a pty (FdRunner),
and against a scripted port for exact byte-level policies (retries, no repeat of state changes,
truncated and late replies). Each fault kind of the simulator is shown to reach the caller.
"""
from __future__ import annotations

import os
import pty
import socket
import threading
import time
import tty

import pytest
from serial.urlhandler.protocol_socket import Serial as SocketSerial

from drivers.errors import DeviceRefused, InvalidRequest, LinkLost
from drivers.hal import DoseReadout, LinkEventKind, ReadoutFlag
from drivers.transport import SpyPort
from drivers.unidos import (ReplyGarbled, ReplyMismatch, ReplyTimeout, ReplyTruncated, UnidosDriver,
                            UnidosLinkError)
from simulators.clock import MonotonicClock
from simulators.runner import FdRunner, LineFaults
from simulators.unidos_device import UnidosDevice
from simulators.unidos_model import UnidosModel
from simulators.world import Room

FIELD_A = 200e-12


class _PairSerial(SocketSerial):
    """pyserial's socket port on one end of a socketpair (as drivers/urlhandler/protocol_sim does)."""

    def __init__(self, sock: socket.socket) -> None:
        self._pair_socket = sock
        super().__init__("pair://unidos", timeout=0.002, write_timeout=1.0)

    def open(self) -> None:
        self.logger = None
        self._socket = self._pair_socket
        self._socket.setblocking(False)
        self.is_open = True

    def close(self) -> None:
        if self.is_open and self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._socket.close()
            self._socket = None
        self.is_open = False

    def _reconfigure_port(self, *args, **kwargs) -> None:
        pass


class SimLink:
    """One simulated UNIDOS (model + device), served by FdRunners on socketpairs or a pty."""

    def __init__(self, **model_kwargs) -> None:
        kwargs = dict(seed=1, warmup_s=0.0, zero_duration_s=0.3, self_test_duration_s=0.3, hv_ramp_v_per_s=600.0)
        kwargs.update(model_kwargs)
        self.events: list[dict] = []
        self.model = UnidosModel(MonotonicClock(), field_current_a=lambda now_s: FIELD_A, room=Room(),
                                 on_event=self.events.append, **kwargs)
        self.device = UnidosDevice(self.model)
        self.line_faults = LineFaults(seed=1)
        self.runners: list[FdRunner] = []

    def _serve(self, fd: int) -> None:
        self.runners.append(FdRunner(self.device, fd, name="sim-unidos-test", faults=self.line_faults).start())

    def open_socketpair(self, url: str, baudrate: int) -> SpyPort:
        host, dev = socket.socketpair()
        dev.setblocking(False)
        self._serve(dev.detach())
        return SpyPort(_PairSerial(host), url)

    def serve_pty(self) -> str:
        master_fd, slave_fd = pty.openpty()
        tty.setraw(slave_fd)
        path = os.ttyname(slave_fd)
        os.close(slave_fd)
        os.set_blocking(master_fd, False)
        self._serve(master_fd)
        return path

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop()
        assert all(r.error is None for r in self.runners), [r.error for r in self.runners]


@pytest.fixture
def link():
    sim = SimLink()
    yield sim
    sim.stop()


@pytest.fixture
def driver(link):
    drv = UnidosDriver("pair://unidos", reply_timeout_s=0.5, port_opener=link.open_socketpair)
    drv.connect()
    yield drv
    drv.close()


def wait_for(predicate, timeout_s=5.0, period_s=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period_s)
    raise AssertionError("condition not met in time")


# ---- the happy path ------------------------------------------------------------------------

def test_the_driver_implements_the_hal_interface(driver):
    assert isinstance(driver, DoseReadout)


def test_connect_reads_the_identity(driver):
    identity = driver.connect()
    assert (identity.name, identity.type_number, identity.firmware, identity.hardware_revision,
            identity.serial_number) == ("UNIDOS Tango", "TM10052", "1.2.4", "SIM", "123456")
    stats = driver.link_stats()
    assert stats.frames_sent == stats.frames_received == 4 and stats.rtt_p50_ms is not None


def test_a_measurement_integrates_the_field(driver, link):
    driver.acquire_write_permission()
    driver.set_range("LOW")
    assert driver.get_range() == "LOW"
    assert driver.get_hv() == 300
    driver.reset()
    driver.start()
    assert driver.status() == "MEAS"
    time.sleep(0.3)
    driver.hold()
    values = driver.measured_values()
    assert values.status == "HOLD" and values.integrated_unit == "C" and values.rate_unit == "A"
    assert values.flags == ReadoutFlag.NONE and values.hv_v == 300.0
    assert values.measuring_time_s >= 0.25
    expected_c = (FIELD_A + 10e-15) * values.measuring_time_s
    assert values.integrated == pytest.approx(expected_c, rel=0.01)
    assert values.host_time_s > 0


def test_an_interval_measurement_ends_in_inthld(driver):
    driver.acquire_write_permission()
    driver.set_integration_time(1)
    assert driver.get_integration_time() == 1
    driver.start_interval()
    wait_for(lambda: driver.status() == "INTHLD")
    assert driver.measured_values().measuring_time_s == pytest.approx(1.0)


def test_zero_correction_runs_to_passed(driver, link):
    link.model.zero_duration_s = 1.0
    driver.acquire_write_permission()
    driver.start_zero_correction()
    assert driver.status() == "ZERO"
    status = wait_for(lambda: (s := driver.zero_status()).result == "Passed" and s)
    assert status.remaining_s == 0 and status.total_s == pytest.approx(1.0)
    assert driver.status() == "RES"
    kinds = [e["event"] for e in link.events]
    assert kinds.index("zero_start") < kinds.index("zero_done")


# ---- refusals ------------------------------------------------------------------------------

def test_a_command_without_write_permission_is_refused_with_a_message_saying_what_to_do(driver):
    with pytest.raises(DeviceRefused) as info:
        driver.start()
    assert info.value.code == "E20"
    assert "no write permission" in info.value.message and "acquire write permission" in info.value.message
    assert "STA" in info.value.message


def test_zero_correction_during_warm_up_is_refused_with_e03():
    sim = SimLink(warmup_s=60.0)
    drv = UnidosDriver("pair://unidos", reply_timeout_s=0.5, port_opener=sim.open_socketpair)
    try:
        drv.connect()
        drv.acquire_write_permission()
        with pytest.raises(DeviceRefused) as info:
            drv.start_zero_correction()
        assert info.value.code == "E03"
        assert "warming up" in info.value.message and "wait" in info.value.message
        assert drv.last_failed_telegram() == ("E03", "NUL")
    finally:
        drv.close()
        sim.stop()


@pytest.mark.parametrize("call,arg", [
    ("set_hv", 500), ("set_hv", -401), ("set_hv", float("nan")), ("set_hv", 300.0), ("set_hv", True),
    ("set_hv", "300"), ("set_integration_time", 0), ("set_integration_time", 3_600_000),
    ("set_integration_time", float("nan")), ("set_integration_time", 1.5), ("set_integration_time", -5),
    ("set_range", "HUGE"), ("set_range", "low"), ("set_range", None), ("set_electrical_units", 1),
])
def test_invalid_values_are_refused_with_a_reason_and_never_sent(driver, call, arg):
    sent_before = driver.link_stats().frames_sent
    with pytest.raises(InvalidRequest) as info:
        getattr(driver, call)(arg)
    assert "refused" in info.value.message or "must be" in info.value.message
    assert driver.link_stats().frames_sent == sent_before


def test_limits_themselves_are_accepted(driver):
    driver.acquire_write_permission()
    driver.set_hv(-400)
    driver.set_hv(400)
    driver.set_integration_time(3_599_999)
    assert driver.get_hv() == 400 and driver.get_integration_time() == 3_599_999


# ---- faults --------------------------------------------------------------------------------

def test_silent_device_times_out_reports_link_lost_and_recovers_on_reconnect(driver, link):
    events = []
    driver.subscribe(events.append)
    link.line_faults.silent = True
    with pytest.raises(ReplyTimeout) as info:
        driver.get_hv()
    assert "did not answer" in info.value.message and "lost" in info.value.message
    assert [e.kind for e in events] == [LinkEventKind.DEGRADED, LinkEventKind.LOST]
    assert events[-1].device == "readout" and "reconnect" in events[-1].message
    with pytest.raises(LinkLost):
        driver.status()                      # nothing is sent on a lost link
    assert driver.link_stats().retries == 2 and driver.link_stats().timeouts >= 3
    link.line_faults.silent = False
    assert driver.reconnect().serial_number == "123456"
    assert events[-1].kind == LinkEventKind.RESTORED
    assert driver.get_hv() == 300


def test_garbage_reply_raises_reply_garbled(driver, link):
    link.model.inject("garbage")
    with pytest.raises(ReplyGarbled) as info:
        driver.get_range()
    assert "garbled" in info.value.message
    assert driver.link_stats().framing_errors >= 3


def test_wrong_reply_raises_reply_mismatch(driver, link):
    driver.get_hv()
    link.model.inject("wrong_reply")
    with pytest.raises(ReplyMismatch) as info:
        driver.get_range()
    assert "HV;300" in info.value.message and "RGE" in info.value.message


def test_a_late_reply_is_discarded_never_taken_for_the_next_request(link):
    drv = UnidosDriver("pair://unidos", reply_timeout_s=0.3, query_attempts=1, lost_after_failures=5,
                       port_opener=link.open_socketpair)
    try:
        drv.connect()
        link.model.inject("late", delay_ms=700)
        with pytest.raises(ReplyTimeout):
            drv.measured_values()                       # its reply (status RES) arrives 0.4 s too late
        link.model.clear("late")
        link.model.handle(b"TOK\r\n")                   # the front panel starts a measurement meanwhile
        link.model.handle(b"STA\r\n")
        time.sleep(0.5)                                 # the stale MV reply is now waiting on the wire
        values = drv.measured_values()
        assert values.status == "MEAS"                  # the fresh reply, not the stale RES one
        assert drv.link_stats().duplicates >= 1
    finally:
        drv.close()


def test_a_late_reply_to_a_state_change_is_reported_and_not_repeated(link):
    drv = UnidosDriver("pair://unidos", reply_timeout_s=0.3, port_opener=link.open_socketpair)
    try:
        drv.connect()
        drv.acquire_write_permission()
        link.model.inject("late", delay_ms=500)
        with pytest.raises(ReplyTimeout) as info:
            drv.start()
        assert "not repeated" in info.value.message and not drv.is_lost
        link.model.clear("late")
        assert drv.status() == "MEAS"
        assert sum(1 for e in link.events if e["event"] == "measure_start") == 1
    finally:
        drv.close()


def test_overload_reaches_the_caller_as_flags_and_status(driver, link):
    driver.acquire_write_permission()
    driver.start()
    link.model.inject("overload", which="current")
    values = wait_for(lambda: (v := driver.measured_values()).status == "ERROR" and v)
    assert ReadoutFlag.OVERLOAD_CURRENT in values.flags


def test_hv_fault_reaches_the_caller_as_hv_error_flags(driver, link):
    link.model.inject("hv_fault", value=0.0)
    values = driver.measured_values()
    assert ReadoutFlag.HV_ERROR_CURRENT in values.flags and ReadoutFlag.HV_ERROR_CHARGE in values.flags
    link.model.clear("hv_fault")
    values = wait_for(lambda: (v := driver.measured_values()).flags == ReadoutFlag.NONE and v, timeout_s=15.0)
    assert abs(values.hv_v - 300.0) <= 1.0          # within the instrument's HV tolerance


def test_bit_errors_on_the_line_are_survived_by_queries(driver, link):
    link.line_faults.bit_error_rate = 0.002
    ok = errors = 0
    for _ in range(30):
        try:
            # no checksum in this dialect: a flipped digit can still read as a valid number
            assert isinstance(driver.get_hv(), int)
            ok += 1
        except (UnidosLinkError, LinkLost):
            errors += 1
            if driver.is_lost:
                link.line_faults.bit_error_rate = 0.0
                driver.reconnect()
                link.line_faults.bit_error_rate = 0.002
    assert ok > 0
    link.line_faults.bit_error_rate = 0.0
    assert driver.reconnect() and driver.get_hv() == 300


def test_a_listener_that_raises_does_not_break_the_driver(driver, link):
    def bad_listener(event):
        raise RuntimeError("listener bug")
    driver.subscribe(bad_listener)
    link.line_faults.silent = True
    with pytest.raises(ReplyTimeout):
        driver.status()
    link.line_faults.silent = False
    assert driver.reconnect().serial_number == "123456"


# ---- the same over a pseudo-terminal, opened like a USB-serial device ---------------------

def test_over_a_pty_the_driver_measures_and_reports_faults(link):
    path = link.serve_pty()
    drv = UnidosDriver(path, reply_timeout_s=0.5)
    try:
        assert drv.connect().serial_number == "123456"
        drv.acquire_write_permission()
        drv.start()
        time.sleep(0.2)
        drv.hold()
        values = drv.measured_values()
        assert values.status == "HOLD" and values.integrated > 0
        link.model.inject("wrong_reply")
        with pytest.raises(ReplyMismatch):
            drv.get_range()
        link.model.clear("wrong_reply")
        assert drv.is_lost
        assert drv.reconnect().serial_number == "123456"
        assert drv.get_range() == "LOW"
        link.model.inject("garbage")
        with pytest.raises(ReplyGarbled):
            drv.get_hv()
    finally:
        drv.close()


def test_a_missing_port_is_reported_as_link_lost_with_what_to_do():
    drv = UnidosDriver("/dev/does-not-exist-unidos", reply_timeout_s=0.2)
    with pytest.raises(LinkLost) as info:
        drv.connect()
    assert "cannot open" in info.value.message and "cable" in info.value.message


# ---- scripted port: exact policies ---------------------------------------------------------

class ScriptedPort:
    """Answers each written request with the next scripted reply (bytes, or None for silence)."""

    def __init__(self, script: list[tuple[bytes, bytes | None]]) -> None:
        self.script = list(script)
        self.written: list[bytes] = []
        self._inbox = bytearray()
        self._lock = threading.Lock()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        expected, reply = self.script.pop(0)
        assert data == expected, f"sent {data!r}, script expected {expected!r}"
        if reply:
            with self._lock:
                self._inbox += reply

    def read_available(self, max_bytes: int = 4096) -> bytes:
        with self._lock:
            data, self._inbox[:] = bytes(self._inbox[:max_bytes]), self._inbox[max_bytes:]
        if not data:
            time.sleep(0.002)
        return data

    def reset_input_buffer(self) -> None:
        with self._lock:
            self._inbox.clear()

    def close(self) -> None:
        self.closed = True


def scripted(script, **kw) -> tuple[UnidosDriver, ScriptedPort]:
    port = ScriptedPort([(b"PTW\r\n", b"PTW;UNIDOS Tango;TM10052;1.2.4;A16\r\n"),
                         (b"SER\r\n", b"SER;4711\r\n")] + script)
    drv = UnidosDriver("script://", reply_timeout_s=0.1, port_opener=lambda url, baud: port, **kw)
    drv.connect()
    return drv, port


def test_a_query_is_retried_after_resynchronising_with_another_mnemonic():
    drv, port = scripted([(b"HV\r\n", b"\xff\x01junk\r\n"),
                          (b"SER\r\n", b"SER;4711\r\n"),
                          (b"HV\r\n", b"HV;300\r\n")])
    assert drv.get_hv() == 300
    assert drv.link_stats().retries == 1 and not port.script


def test_a_state_changing_command_is_never_repeated():
    drv, port = scripted([(b"STA\r\n", b"\xff\x01junk\r\n")])
    with pytest.raises(ReplyGarbled):
        drv.start()
    assert port.written.count(b"STA\r\n") == 1 and not port.script


def test_a_reply_without_its_crlf_is_reported_truncated():
    drv, port = scripted([(b"MV\r\n", b"MV;MEAS;2.6;E-3;m;C"), (b"SER\r\n", b"SER;4711\r\n"),
                          (b"MV\r\n", b"MV;MEAS;2.6;E-3;m;C;1.0;E-12;p;A;;1.0;ms;300;V\r\n"),
                          (b"SER\r\n", b"SER;4711\r\n"),
                          (b"MV\r\n", b"MV;MEAS\r\n")])
    with pytest.raises(ReplyTruncated) as info:
        drv.measured_values()
    assert "incomplete" in info.value.message or "without CR LF" in info.value.message


def test_resync_discards_stale_lines_until_its_own_reply():
    drv, port = scripted([(b"HV\r\n", None), (b"SER\r\n", b"HV;300\r\nE01\r\nSER;4711\r\n"),
                          (b"HV\r\n", b"HV;250\r\n")])
    assert drv.get_hv() == 250
    assert drv.link_stats().duplicates == 2


def test_an_error_reply_maps_to_device_refused_with_the_reference_meaning():
    drv, port = scripted([(b"RGE;HIGH\r\n", b"E02\r\n"), (b"IT;5\r\n", b"E33\r\n")])
    with pytest.raises(DeviceRefused) as info:
        drv.set_range("HIGH")
    assert info.value.code == "E02" and "not allowed in this context" in info.value.message
    assert "hold or reset" in info.value.message
    with pytest.raises(DeviceRefused) as info:
        drv.set_integration_time(5)
    assert info.value.code == "E33" and "call service" in info.value.message


def test_a_setter_reply_with_another_value_is_a_mismatch():
    drv, port = scripted([(b"HV;300\r\n", b"HV;200\r\n")])
    with pytest.raises(ReplyMismatch):
        drv.set_hv(300)


def test_the_driver_never_uses_blocking_readline_timeouts():
    import inspect
    import drivers.unidos as mod
    source = inspect.getsource(mod)
    assert "readline(" not in source and "time.monotonic" in source


# ---- the production path: sim:// through the coupled bench ---------------------------------

def test_over_sim_url_the_driver_reaches_the_bench_electrometer():
    from simulators.bench import get_bench, reset_benches
    try:
        bench = get_bench("unidos-driver-test", seed="3")
        drv = UnidosDriver("sim://unidos?bench=unidos-driver-test", reply_timeout_s=1.0)
        try:
            identity = drv.connect()
            assert identity.serial_number == str(bench.unidos_model.serial_number)
            drv.acquire_write_permission()
            drv.start()
            values = drv.measured_values()
            assert values.status == "MEAS" and values.integrated_unit == "C"
            bench.unidos_model.inject("garbage")
            with pytest.raises(ReplyGarbled):
                drv.status()
        finally:
            drv.close()
    finally:
        reset_benches()


def test_after_reconnect_no_reply_is_lost_to_the_old_connection(link):
    first = UnidosDriver("pair://unidos", reply_timeout_s=0.5, query_attempts=1, port_opener=link.open_socketpair)
    first.connect()
    first.close()                                   # its runner keeps serving a closed socket
    second = UnidosDriver("pair://unidos", reply_timeout_s=0.5, query_attempts=1, port_opener=link.open_socketpair)
    try:
        second.connect()
        link.model.inject("late", delay_ms=20)       # replies wait in the outbox, where a runner could take them
        for _ in range(40):
            assert second.get_hv() == 300
        assert second.link_stats().timeouts == 0
    finally:
        second.close()
