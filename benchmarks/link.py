"""Link figures against `orconsole-sim` in a separate process over a real pty; prints one JSON object.

status round trip p50/p99, beam-off latency p50/p99 (beam-off sent → device status shows HV off,
≥ 200 trials), and the device watchdog (console silent → device HV off) against its setting.
A measuring script, not a test: it asserts nothing and never runs in the suite.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from drivers.hal import BeamOffReason, XrsState
from drivers.xrs import XrsDriver
from orconsole.logging_setup import configure_logging
from simulators.launcher import SimulatorProcess

PLAN_HASH = bytes(range(32))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_state(driver: XrsDriver, wanted: set[XrsState], timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = driver.status()
        if status.state in wanted:
            return status
        time.sleep(0.005)
    raise TimeoutError(f"device did not reach {wanted} within {timeout_s} s (now {status.state})")


def measure(trials: int, status_samples: int) -> dict:
    with SimulatorProcess("xrs", "--pty") as sim:
        driver = XrsDriver(sim.ports["xrs"])
        try:
            identity = driver.connect()
            driver.set_technique(50.0, 40.0)
            driver.warm_up()
            wait_state(driver, {XrsState.READY})

            rtt_ms = []
            for _ in range(status_samples):
                t0 = time.monotonic()
                driver.status()
                rtt_ms.append((time.monotonic() - t0) * 1000)

            beam_off_ms = []
            for _ in range(trials):
                driver.arm(backup_time_s=30.0, irm_limit_gy=25.0, plan_hash=PLAN_HASH)
                driver.beam_on(plan_hash=PLAN_HASH)
                wait_state(driver, {XrsState.BEAM_ON})
                t0 = time.monotonic()
                driver.beam_off(BeamOffReason.OPERATOR_STOP)
                while driver.status().hv_on:
                    pass
                beam_off_ms.append((time.monotonic() - t0) * 1000)
                wait_state(driver, {XrsState.READY})

            # watchdog: beam on, then silence; the simulator reports when it switched HV off
            driver.arm(backup_time_s=30.0, irm_limit_gy=25.0, plan_hash=PLAN_HASH)
            driver.beam_on(plan_hash=PLAN_HASH)
            wait_state(driver, {XrsState.BEAM_ON})
            while not sim.events.empty():
                sim.events.get_nowait()
            last = driver.status()  # the console's last frame; then silence
            event = sim.wait_event("beam_off", timeout_s=10.0)
            watchdog_s = event["device_time_s"] - last.device_time_s
            stats = driver.link_stats()
        finally:
            driver.close()
    setting_s = 0.5
    return {
        "device": f"{identity.model} {identity.serial_number} fw {identity.firmware}",
        "transport": "pty, orconsole-sim in a separate process",
        "status_round_trip_ms": {"p50": round(percentile(rtt_ms, 50), 3),
                                 "p99": round(percentile(rtt_ms, 99), 3), "n": len(rtt_ms)},
        "beam_off_latency_ms": {"p50": round(percentile(beam_off_ms, 50), 3),
                                "p99": round(percentile(beam_off_ms, 99), 3),
                                "max": round(max(beam_off_ms), 3), "n": len(beam_off_ms),
                                "target_p99": 5.0},
        "watchdog": {"setting_s": setting_s, "measured_s": round(watchdog_s, 4),
                     "error_percent": round((watchdog_s - setting_s) / setting_s * 100, 2),
                     "cause": event.get("reason"), "target_error_percent": 10.0},
        "link_stats": {"frames_sent": stats.frames_sent, "crc_errors": stats.crc_errors,
                       "retries": stats.retries, "timeouts": stats.timeouts},
        "mean_status_rtt_ms": round(statistics.fmean(rtt_ms), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    parser.add_argument("--trials", type=int, default=200, help="beam-off trials (≥ 200 for the figure)")
    parser.add_argument("--status-samples", type=int, default=1000)
    args = parser.parse_args(argv)
    configure_logging(log_file=None)  # log lines to stderr, so stdout carries only the JSON
    print(json.dumps(measure(args.trials, args.status_samples), indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
