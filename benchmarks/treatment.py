"""Treatment figures against `orconsole-sim bench --pty` in a separate process: timing error of the
device-measured beam-on time at 10 s and 60 s presets, dose error at termination, and the Supervisor's
tick jitter (p99) while a second, CPU-bound process runs.

A script that prints JSON (`python -m benchmarks.treatment --json`), not a timed test. The plans are
built explicitly for the measurement: CONTINUATION remainders on the simulated *clinical* source (0.87
Gy/min at 3.0 cm), chosen so that the preset is exactly 10.0 s and 60.0 s under the default site
configuration; today's output check is a synthetic k_out = 1 result. Never run against a patient's unit.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from drivers.hal import XrsState
from drivers.xrs import XrsDriver
from orconsole.config import SiteConfig
from orconsole.dosecalc import compute_treatment_time, make_plan
from orconsole.dosecheck import check_plan
from orconsole.models import (ApplicatorDoseRate, Approval, ApprovedPlan, ApproverRole, Cavity, Patient, QaOutcome,
                              QaResult, SourceCalibration, TrialProtocol)
from orconsole.statemachine import State
from orconsole.supervisor import Supervisor
from simulators.clock import MonotonicClock
from simulators.launcher import SimulatorProcess
from simulators.sources import load_source

TARGETS = {"timing_error_ms": 10.0, "dose_error_fraction_of_prescription": 0.0005, "tick_jitter_p99_ms": 5.0}
PRESCRIPTION_GY = 20.0
APPLICATOR_CM = 3.0
SOURCE = "clinical"
BUSY_LOOP = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _calibration(serial: str, today: date) -> SourceCalibration:
    source = load_source(SOURCE)
    return SourceCalibration(
        source_serial=serial, qa_reference_reading_c=source.reference_reading_c,
        dose_rates=tuple(ApplicatorDoseRate(diameter_cm=a.diameter_cm,
                                            surface_dose_rate_gy_per_min=a.surface_dose_rate_gy_per_min,
                                            assumption=a.assumption) for a in source.applicators),
        calibration_date=today, valid_until=today, calibrated_by="benchmark (simulator data)")


def _plan_for(preset_s: float, *, calibration: SourceCalibration, qa: QaResult, config: SiteConfig,
              today: date, supersedes: str) -> ApprovedPlan:
    """A continuation whose remainder takes exactly `preset_s` at the calibrated rate (and both approvals)."""
    rate_gy_per_s = calibration.dose_rate_for(APPLICATOR_CM).surface_dose_rate_gy_per_min * qa.k_out / 60.0
    previously_gy = round(PRESCRIPTION_GY - rate_gy_per_s * preset_s, 9)
    protocol = TrialProtocol(name="benchmark", prescription_dose_gy=PRESCRIPTION_GY)
    t = compute_treatment_time(prescription_dose_gy=PRESCRIPTION_GY, applicator_cm=APPLICATOR_CM, protocol=protocol,
                               calibration=calibration, qa_results=[qa], device_source_serial=calibration.source_serial,
                               today=today, config=config, previously_delivered_gy=previously_gy)
    now = datetime.now(timezone.utc)
    plan = make_plan(t, plan_id=f"BENCH-{preset_s:g}s", protocol=protocol, created_at=now, created_by="benchmark",
                     patient=Patient(medical_record_number="BENCH-1", full_name="Benchmark, Phantom",
                                     date_of_birth=date(1970, 1, 1), trial_subject_id="BENCH"),
                     cavity=Cavity(site="water phantom", lesion_label="none", cavity_diameter_cm=3.0),
                     supersedes_hash=supersedes)
    check = check_plan(plan, calibration, agreement_fraction=config.planning.independent_check_agreement_fraction)
    approvals = [Approval(plan_content_hash=plan.content_hash, role=ApproverRole.PHYSICIAN, approver_id="bench",
                          approver_name="Benchmark physician", approved_at=now, signature_ref="benchmark"),
                 Approval(plan_content_hash=plan.content_hash, role=ApproverRole.PHYSICIST, approver_id="bench",
                          approver_name="Benchmark physicist", approved_at=now, signature_ref="benchmark",
                          independent_check=check)]
    return ApprovedPlan(plan=plan, approvals=tuple(approvals))


def _deliver(sup: Supervisor, approved: ApprovedPlan, reports, timeout_s: float) -> dict:
    for future in (sup.load_plan(ApprovedPlan(plan=approved.plan)), sup.approve(approved),
                   sup.verify_identity(medical_record_number="BENCH-1", date_of_birth=date(1970, 1, 1)),
                   sup.confirm_ready(), sup.arm(), sup.beam_on()):
        result = future.result(timeout=10)
        if not result.ok:
            raise RuntimeError(result.reason)
    report = reports.get(timeout=timeout_s)
    sup.reset().result(timeout=10)
    plan = approved.plan
    return {
        "preset_s": plan.preset_time_s, "termination": report.termination.value, "cause": report.termination_cause,
        "termination_detail": report.termination_detail,
        "interlocks_raised": sorted({c.interlock for c in report.interlock_changes if c.state == "raised"}),
        "device_beam_on_s": report.device_beam_on_s, "console_beam_on_s": report.console_beam_on_s,
        "timing_error_ms": abs(report.device_beam_on_s - plan.preset_time_s) * 1000.0,
        "dose_to_deliver_gy": plan.dose_to_deliver_gy, "irm_dose_gy": report.secondary_dose_gy,
        "dose_error_fraction_of_prescription": abs(report.secondary_dose_gy - plan.dose_to_deliver_gy)
        / plan.prescription_dose_gy,
        "dose_error_fraction_of_remainder": abs(report.secondary_dose_gy - plan.dose_to_deliver_gy)
        / plan.dose_to_deliver_gy,
    }


def run(presets_s: tuple[float, ...], *, busy: bool, realtime: bool = False) -> dict:
    config = SiteConfig()
    today = date.today()
    busy_proc = None
    with tempfile.TemporaryDirectory(prefix="orconsole-bench-") as tmp, \
            SimulatorProcess("bench", "--pty", "--source", SOURCE, "--applicator", str(APPLICATOR_CM)) as sim:
        xrs = XrsDriver(sim.ports["xrs"])
        try:
            identity = xrs.connect()
            xrs.set_technique(50.0, 40.0)
            xrs.warm_up()
            deadline = time.monotonic() + 120
            while xrs.status().state is not XrsState.READY:
                if time.monotonic() > deadline:
                    raise RuntimeError("the simulated unit did not warm up")
                time.sleep(0.1)
            calibration = _calibration(identity.serial_number, today)
            qa = QaResult(qa_id="QA-BENCH", source_serial=identity.serial_number, performed_on=today, k_out=1.0,
                          result=QaOutcome.PASS)
            sup = Supervisor(xrs, journal_path=Path(tmp) / "journal.jsonl", clock=MonotonicClock(),
                             device_source_serial=identity.serial_number, config=config, today=lambda: today,
                             qa_results=lambda: [qa], realtime_priority=realtime)
            reports = sup.subscribe_reports()
            sup.start()
            if busy:
                busy_proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
            try:
                sup.tick_lateness_s.clear()
                runs = [_deliver(sup, _plan_for(p, calibration=calibration, qa=qa, config=config, today=today,
                                                supersedes="be" * 32), reports, timeout_s=p + 30) for p in presets_s]
                lateness_ms = [x * 1000.0 for x in sup.tick_lateness_s]
                end_ms = [x * 1000.0 for x in sup.end_wake_lateness_s]
            finally:
                if busy_proc is not None:
                    busy_proc.kill()
                    busy_proc.wait(10)
                sup.close()
        finally:
            xrs.close()
    return {"runs": runs, "ticks": len(lateness_ms),
            "tick_jitter_p50_ms": _percentile(lateness_ms, 0.5), "tick_jitter_p99_ms": _percentile(lateness_ms, 0.99),
            "tick_jitter_max_ms": max(lateness_ms), "overruns": sup.overruns,
            "preset_end_wake_lateness_ms": end_ms, "supervisor_priority": sup.realtime_priority,
            "switch_interval_s": sys.getswitchinterval()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output mode)")
    parser.add_argument("--presets", default="10,60", help="preset times in s (default 10,60)")
    parser.add_argument("--no-busy", action="store_true", help="without the CPU-bound second process")
    parser.add_argument("--realtime", action="store_true",
                        help="deployment tuning: SCHED_FIFO for the supervisor thread (if permitted) and a 0.5 ms "
                             "interpreter switch interval")
    args = parser.parse_args(argv)
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))  # stdout is the JSON only
    presets = tuple(float(x) for x in args.presets.split(","))
    started = time.monotonic()
    if args.realtime:
        sys.setswitchinterval(0.0005)
    result = run(presets, busy=not args.no_busy, realtime=args.realtime)
    by_preset = {f"{r['preset_s']:g}s": r for r in result["runs"]}
    figures = {
        "timing_error_ms": {k: r["timing_error_ms"] for k, r in by_preset.items()},
        "dose_error_fraction_of_prescription": {k: r["dose_error_fraction_of_prescription"]
                                                for k, r in by_preset.items()},
        "tick_jitter_p99_ms": result["tick_jitter_p99_ms"],
    }
    meets = {
        "timing_error_ms": all(v <= TARGETS["timing_error_ms"] for v in figures["timing_error_ms"].values()),
        "dose_error_fraction_of_prescription": all(
            v <= TARGETS["dose_error_fraction_of_prescription"]
            for v in figures["dose_error_fraction_of_prescription"].values()),
        "tick_jitter_p99_ms": figures["tick_jitter_p99_ms"] <= TARGETS["tick_jitter_p99_ms"],
    }
    out = {"benchmark": "treatment", "figures": figures, "targets": TARGETS, "meets_targets": meets,
           "details": result, "cpu_bound_second_process": not args.no_busy, "realtime_tuning": args.realtime,
           "source": SOURCE,
           "applicator_cm": APPLICATOR_CM, "python": platform.python_version(), "machine": platform.machine(),
           "wall_time_s": time.monotonic() - started}
    print(json.dumps(out, indent=None if args.json else 2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
