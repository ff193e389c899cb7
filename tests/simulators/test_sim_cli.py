"""`orconsole-sim` as a separate process: the READY line, JSON events, faults from the command line,
TCP as well as pty, and a clean exit on SIGTERM."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from drivers.hal import BeamOffCause, XrsFault, XrsState
from drivers.xrs import XrsDriver
from simulators.cli import FaultSpec
from simulators.launcher import SimulatorProcess

PLAN = bytes(range(7, 39))


def ready(driver: XrsDriver) -> None:
    driver.connect()
    driver.warm_up()
    deadline = time.monotonic() + 10
    while driver.status().state != XrsState.READY:
        assert time.monotonic() < deadline, "warm-up did not finish"
        time.sleep(0.05)


def poll_until(driver, predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while True:
        status = driver.status()
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"not reached; last {status}"
        time.sleep(0.05)


def test_xrs_on_a_pty_prints_ready_then_beam_events_as_json_lines():
    with SimulatorProcess("xrs", "--pty") as sim:
        assert sim.ports["xrs"].startswith("/dev/pts/")
        driver = XrsDriver(sim.ports["xrs"])
        try:
            ready(driver)
            driver.arm(backup_time_s=0.5, irm_limit_gy=10.0, plan_hash=PLAN)
            driver.beam_on(plan_hash=PLAN)
            on = sim.wait_event("beam_on")
            off = sim.wait_event("beam_off")
            poll_until(driver, lambda s: not s.hv_on)
        finally:
            driver.close()
    assert "device_time_s" in on
    assert off["beam_on_time_s"] == pytest.approx(0.5, abs=0.01)
    assert off["irm_dose_gy"] > 0
    assert "backup" in off["reason"]


def test_xrs_on_tcp_is_reachable_through_a_socket_url():
    with SimulatorProcess("xrs", "--tcp", "0") as sim:
        url = sim.ports["xrs"]
        assert url.startswith("socket://127.0.0.1:")
        driver = XrsDriver(url)
        try:
            identity = driver.connect()
            assert identity.serial_number
            assert driver.status().applicator_diameter_cm == 3.0
        finally:
            driver.close()


def test_fault_given_on_the_command_line_fires_after_beam_on():
    with SimulatorProcess("bench", "--pty", "--fault", "hv_arc@0.2", "--applicator", "4.0") as sim:
        assert set(sim.ports) == {"xrs", "unidos"}
        driver = XrsDriver(sim.ports["xrs"])
        try:
            ready(driver)
            assert driver.status().applicator_diameter_cm == 4.0
            driver.arm(backup_time_s=10.0, irm_limit_gy=10.0, plan_hash=PLAN)
            driver.beam_on(plan_hash=PLAN)
            status = poll_until(driver, lambda s: s.state == XrsState.FAULT)
            injected = sim.wait_event("fault_injected")
        finally:
            driver.close()
    assert XrsFault.HV_ARC in status.faults
    assert status.last_beam_off_cause == BeamOffCause.FAULT
    assert injected["kind"] == "hv_arc"


def test_sigterm_ends_the_simulator_cleanly():
    sim = SimulatorProcess("unidos", "--pty").start()
    assert sim.stop() == 0


@pytest.mark.parametrize("text,reason", [("hv_arc", "KIND@SECONDS"), ("hv_arc@-1", "≥ 0"),
                                         ("output_drop:x@1", "numbers"), ("@3", "empty")])
def test_malformed_fault_options_are_refused_with_the_reason(text, reason):
    with pytest.raises(Exception) as refused:
        FaultSpec.parse(text)
    assert reason in str(refused.value)


def test_calibration_document_is_printed_dated_today():
    out = subprocess.run([sys.executable, "-m", "simulators", "calibration", "--source", "fast"],
                         capture_output=True, text=True, timeout=60, check=True)
    document = json.loads(out.stdout)
    assert document["format"] == "orconsole-source-calibration/1"
    assert document["calibration_date"] == time.strftime("%Y-%m-%d")
    assert len(document["applicators"]) == 8
