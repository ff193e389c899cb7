"""Qualification harness: real treatments on `orconsole-sim` in a separate process on a pty, driven by the
Supervisor over the real XrsDriver, with one fault injected at a seeded random moment during beam on.

Each scenario returns a `Row` (result, beam-off latency, dose overshoot, what was recorded, failures) that
both tests/qualification/ and `python -m benchmarks.qualify` use. It must never weaken a check to make a
row pass: a failed expectation is written into the row's `failures`, and the row fails.
"""
from __future__ import annotations

import json
import math
import os
import queue
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from drivers.hal import XrsState
from drivers.xrs import XrsDriver
from orconsole.config import SiteConfig, load_config
from orconsole.dosecalc import compute_treatment_time, make_plan
from orconsole.dosecheck import check_plan
from orconsole.journal import read_journal
from orconsole.models import (ApplicatorDoseRate, Approval, ApprovedPlan, ApproverRole, Cavity, Patient, QaOutcome,
                              QaResult, SourceCalibration, TrialProtocol)
from orconsole.statemachine import State
from orconsole.supervisor import DeliveryReport, IrmReconciliation, Snapshot, Supervisor
from simulators.clock import MonotonicClock
from simulators.launcher import SimulatorProcess
from simulators.sources import load_source

PRESCRIPTION_GY = 20.0
OVERSHOOT_LIMIT_FRACTION = 0.005          # delivered total may never exceed the prescription by more
CONTINUATION_TOTAL_TOLERANCE_FRACTION = 0.01   # a continued treatment ends this close to 20 Gy (IRM)
RECORD_HARDWARE_AGREEMENT_FRACTION = 0.005     # recorded secondary dose vs the unit's own counter
SITE_CONFIG_PATH = Path(__file__).resolve().parents[2] / "orconsole" / "data" / "site-simulator.toml"
END_STATES = (State.COMPLETED, State.TERMINATED, State.FAULT)
ACK = "qualification: cause removed, beam confirmed off at the unit, counters read"


def site_config() -> SiteConfig:
    """The simulator bench's site configuration (the one `orconsole demo` loads): lower plan-time bound."""
    return load_config(SITE_CONFIG_PATH)


def calibration(source: str = "fast") -> SourceCalibration:
    data = load_source(source)
    return SourceCalibration(
        source_serial=data.serial, qa_reference_reading_c=data.reference_reading_c,
        dose_rates=tuple(ApplicatorDoseRate(diameter_cm=a.diameter_cm,
                                            surface_dose_rate_gy_per_min=a.surface_dose_rate_gy_per_min,
                                            assumption=a.assumption) for a in data.applicators),
        calibration_date=date.today(), valid_until=date.today() + timedelta(days=365),
        calibrated_by="simulator data (qualification bench)")


PROTOCOL = TrialProtocol(name="IORT brain-metastasis cavity, 20 Gy single fraction")
PATIENT = Patient(medical_record_number="MRN-Q-0001", full_name="Qualification Patient",
                  date_of_birth=date(1960, 1, 1), trial_subject_id="Q-001")


def qa_result(serial: str) -> QaResult:
    return QaResult(qa_id=f"QA-{date.today().isoformat()}-Q", source_serial=serial, performed_on=date.today(),
                    k_out=1.0, result=QaOutcome.PASS)


def approved_plan(*, applicator_cm: float, config: SiteConfig, serial: str, previously_delivered_gy: float = 0.0,
                  plan_id: str = "PLAN-Q-1", supersedes_hash: str | None = None) -> ApprovedPlan:
    cal = calibration()
    t = compute_treatment_time(prescription_dose_gy=PRESCRIPTION_GY, applicator_cm=applicator_cm, protocol=PROTOCOL,
                               calibration=cal, qa_results=[qa_result(serial)], device_source_serial=serial,
                               today=date.today(), config=config, previously_delivered_gy=previously_delivered_gy)
    now = datetime.now(timezone.utc)
    plan = make_plan(t, plan_id=plan_id, patient=PATIENT,
                     cavity=Cavity(site="left frontal", lesion_label="metastasis 1", cavity_diameter_cm=applicator_cm),
                     protocol=PROTOCOL, created_at=now, created_by="qualification", supersedes_hash=supersedes_hash)
    check = check_plan(plan, cal, agreement_fraction=config.planning.independent_check_agreement_fraction)
    return (ApprovedPlan(plan=plan)
            .with_approval(Approval(plan_content_hash=plan.content_hash, role=ApproverRole.PHYSICIAN,
                                    approver_id="onc", approver_name="Dr. Oncologist", approved_at=now,
                                    signature_ref="q-sig-1"))
            .with_approval(Approval(plan_content_hash=plan.content_hash, role=ApproverRole.PHYSICIST,
                                    approver_id="phys", approver_name="Dr. Physicist", approved_at=now,
                                    signature_ref="q-sig-2", independent_check=check)))


# --------------------------------------------------------------------------------------------
# The simulator process, with every event stamped on arrival (host monotonic time)
# --------------------------------------------------------------------------------------------


class Sim:
    """`orconsole-sim bench --pty` with its events collected and stamped with the host's arrival time."""

    def __init__(self, *args: str) -> None:
        self.proc = SimulatorProcess("bench", "--pty", *args).start()
        self.xrs_port = self.proc.ports["xrs"]
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, name="qual-sim-events", daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                event = self.proc.events.get(timeout=0.05)
            except queue.Empty:
                continue
            event = {**event, "host_rx_s": time.monotonic()}
            with self._lock:
                self.events.append(event)

    def of(self, name: str, **match) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e.get("event") == name and e.get("device", "xrs") == "xrs"
                    and all(e.get(k) == v for k, v in match.items())]

    def wait_for(self, name: str, timeout_s: float, **match) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.of(name, **match)
            if found:
                return found[0]
            time.sleep(0.02)
        return None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def schedule(self, kind: str, after_beam_on_s: float, **params) -> None:
        raise NotImplementedError("faults of a separate process are given on its command line")

    def kill(self, wait: bool = True) -> None:
        """Power loss: SIGKILL, no clean shutdown."""
        os.kill(self.proc.pid, 9)
        if wait:
            self.proc._proc.wait(10)

    def stop(self) -> None:
        self.proc.stop()
        self._stop.set()
        self._thread.join(2.0)


class ScheduledSim(Sim):
    """The bench in its own process (tests/qualification/sim_child.py) with a fault scheduled by the model
    itself: for faults orconsole-sim's command line cannot express (a step or drift with an explicit duration
    at constant tube current). Same READY line and events as orconsole-sim."""

    def __init__(self, applicator_cm: float, seed: int, kind: str, after_beam_on_s: float, **params) -> None:
        spec = f"{kind}:{','.join(f'{k}={v}' for k, v in params.items())}@{after_beam_on_s}"
        self.proc = _ChildProcess("--applicator", str(applicator_cm), "--seed", str(seed), "--schedule", spec).start()
        self.xrs_port = self.proc.ports["xrs"]
        self.events = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, name="qual-sim-events", daemon=True)
        self._thread.start()


class _ChildProcess(SimulatorProcess):
    def __init__(self, *args: str) -> None:
        super().__init__("bench", *args)

    def start(self) -> "_ChildProcess":
        import subprocess
        import sys
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": str(Path(__file__).resolve().parents[2]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.qualification.sim_child", *self.args[1:]],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env)
        first = self._read_ready_line()
        if not first.startswith("READY "):
            self.stop()
            raise RuntimeError(f"sim_child did not start: first line {first!r}")
        for part in first.split()[1:]:
            kind, _, port = part.partition("=")
            self.ports[kind] = port
        self._reader = threading.Thread(target=self._read_events, name="simproc-child", daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_stderr, name="simproc-child-err", daemon=True)
        self._err_reader.start()
        return self


def ready_driver(port: str, *, warm_up: bool = True) -> XrsDriver:
    """Connect, set 50 kV / 40 µA and warm up until READY (polling at 20 Hz feeds the unit's watchdog)."""
    xrs = XrsDriver(port)
    xrs.connect()
    if warm_up:
        status = xrs.status()
        if status.state is XrsState.FAULT:
            xrs.reset_fault(operator_acknowledgement=ACK[:60])
        xrs.set_technique(50.0, 40.0)
        xrs.warm_up()
        deadline = time.monotonic() + 15.0
        while xrs.status().state is not XrsState.READY:
            if time.monotonic() > deadline:
                xrs.close()
                raise RuntimeError("the simulated unit did not become READY within 15 s")
            time.sleep(0.05)
    return xrs


# --------------------------------------------------------------------------------------------
# One delivery through the Supervisor
# --------------------------------------------------------------------------------------------


@dataclass
class Delivery:
    final: Snapshot | None
    report: DeliveryReport | None
    journal_entries: list[dict]
    interlocks_seen: dict[str, str]          # id -> text (message, detail, remediation) seen during the run
    messages_seen: list[str]
    overruns: int
    utc_jumps_seen: list[str] = field(default_factory=list)
    reconciliation: IrmReconciliation | None = None   # the IRM dose settled after a link loss
    reconcile_messages: list[str] = field(default_factory=list)


def deliver(xrs: XrsDriver, approved: ApprovedPlan, journal_path: Path, *, config: SiteConfig, serial: str,
            end_timeout_s: float, utc_now: Callable[[], datetime] | None = None,
            on_beam: Callable[[Supervisor], None] | None = None,
            store_available: Callable[[], bool] = lambda: True,
            unit_reading: Callable[[], float | None] | None = None) -> Delivery:
    """Load, approve, verify, arm and switch on; wait for the end; return what the console showed and
    recorded. `on_beam(supervisor)` runs once the beam is on (a stalled consumer, for instance).

    When the link was lost before the final IRM reading, the operator's next steps are played: Reconnect
    through the Supervisor (the unit's counter settles the dose) and, when the link stays down, a physicist
    enters `unit_reading()` — the IRM dose the unit shows (its beam_off report)."""
    kwargs = {} if utc_now is None else {"utc_now": utc_now}
    sup = Supervisor(xrs, journal_path=journal_path, clock=MonotonicClock(), device_source_serial=serial,
                     config=config, today=date.today, qa_results=lambda: [qa_result(serial)],
                     record_store_available=store_available, **kwargs)
    box = sup.subscribe()
    reports = sup.subscribe_reports()
    seen: dict[str, str] = {}
    messages: list[str] = []
    stop = threading.Event()

    def watch() -> None:            # a fast observer: which interlocks and messages the screen showed
        last_seq = -1
        beam_seen = False
        while not stop.is_set():
            snap = box.wait_for(lambda s: s.seq != last_seq, 0.05)
            if snap is None:
                continue
            last_seq = snap.seq
            beam_seen = beam_seen or snap.state in (State.BEAM_ON, State.PAUSED) or snap.state in END_STATES
            for st in (snap.interlocks if beam_seen else ()):
                seen.setdefault(st.id.value, st.text)
            if snap.last_message and (not messages or messages[-1] != snap.last_message):
                messages.append(snap.last_message)

    watcher = threading.Thread(target=watch, name="qual-watch", daemon=True)
    final = None
    report = None
    reconciliation: IrmReconciliation | None = None
    reconcile_messages: list[str] = []
    sup.start()
    watcher.start()
    try:
        pid = approved.plan.patient
        for name, future in (("load", lambda: sup.load_plan(ApprovedPlan(plan=approved.plan))),
                             ("approve", lambda: sup.approve(approved)),
                             ("verify", lambda: sup.verify_identity(medical_record_number=pid.medical_record_number,
                                                                    date_of_birth=pid.date_of_birth)),
                             ("ready", sup.confirm_ready), ("arm", sup.arm), ("beam_on", sup.beam_on)):
            result = future().result(timeout=10)
            if not result.ok:
                messages.append(f"{name} refused: {result.reason}")
                final = box.latest()
                break
        else:
            if on_beam is not None:
                on_beam(sup)
            final = box.wait_for(lambda s: s.state in END_STATES and not s.closing_segment, end_timeout_s)
            try:
                report = reports.get(timeout=12.0)
            except queue.Empty:
                report = None
            final = box.latest() if final is None else final
            if report is not None and not report.irm_read_after_beam_off:
                reconciliation = _settle_irm(sup, reports, unit_reading, reconcile_messages)
    finally:
        sup.close()
        stop.set()
        watcher.join(2.0)
    if final is not None and final.state in END_STATES:
        for st in final.interlocks:
            seen.setdefault(st.id.value, st.text)
    entries = read_journal(journal_path).entries
    return Delivery(final=final, report=report, journal_entries=entries, interlocks_seen=seen,
                    messages_seen=messages, overruns=sup.overruns, reconciliation=reconciliation,
                    reconcile_messages=reconcile_messages)


def _settle_irm(sup: Supervisor, reports: queue.Queue, unit_reading: Callable[[], float | None] | None,
                messages: list[str]) -> IrmReconciliation | None:
    """Reconnect (twice, as an operator would), else enter the value read at the unit; return the settlement."""
    for _ in range(2):
        result = sup.reconnect().result(timeout=10)
        messages.append(f"reconnect: {result.reason}")
        if result.ok and not sup.irm_unreconciled:
            break
        time.sleep(0.5)
    if sup.irm_unreconciled and unit_reading is not None:
        value = unit_reading()
        if value is not None:
            result = sup.enter_unit_irm(unit_irm_gy=value, entered_by="qualification physicist").result(timeout=10)
            messages.append(f"entered at the unit's reading {value:.4f} Gy: {result.reason}")
    try:
        item = reports.get(timeout=2.0)
    except queue.Empty:
        return None
    return item if isinstance(item, IrmReconciliation) else None


# --------------------------------------------------------------------------------------------
# Rows of the evidence table
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    title: str
    fault: str
    passed: bool = False
    fault_at_s: float | None = None           # after the first beam on
    beam_off_latency_s: float | None = None   # fault (device clock) -> the unit's beam_off event
    latency_bound_s: float | None = None
    bound_basis: str = ""
    max_overshoot_fraction: float | None = None   # (delivered total - 20 Gy) / 20 Gy, device IRM; ≤ 0 is none
    delivered_first_gy: float | None = None   # the unit's IRM at the end of the faulted session
    delivered_total_gy: float | None = None   # after the continuation (if any)
    termination: str = ""
    console_message: str = ""
    recorded: str = ""
    continuation: str = ""
    notes: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)     # safe, but short of what should be (reported)
    failures: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def check(self, ok: bool, failure: str) -> bool:
        if not ok:
            self.failures.append(failure)
        return ok

    def to_json(self) -> dict:
        return asdict(self)


def beam_off_after(sim: Sim, t_device_s: float) -> dict | None:
    for e in sim.of("beam_off"):
        if e.get("device_time_s", -1) >= t_device_s - 1e-6:
            return e
    return None


def device_fault_event(sim: Sim, kind: str, timeout_s: float = 0.0) -> dict | None:
    """The model's own fault_injected event (it carries the device clock; the CLI's copy does not)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for e in sim.of("fault_injected", kind=kind):
            if "device_time_s" in e:
                return e
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def describe_record(d: Delivery) -> str:
    r = d.report
    kinds = [e.get("kind") for e in d.journal_entries]
    journal = f"journal: {len(kinds)} entries ({kinds.count('progress')} progress), closed={'treatment_closed' in kinds}"
    if r is None:
        return journal + "; no DeliveryReport"
    changes = sorted({c.interlock for c in r.interlock_changes if c.state == "raised"})
    return (f"{journal}; report: termination {r.termination.value} ({r.termination_cause}), "
            f"primary {r.primary_dose_gy:.3f} Gy, secondary {r.secondary_dose_gy:.3f} Gy, "
            f"{len(r.segments)} segment(s), interlocks raised: {', '.join(changes) or 'none'}, "
            f"device log sha256 {r.device_log_sha256[:12]}…")


def check_record(row: Row, d: Delivery, device_irm_gy: float | None, *,
                 expect_interlock: str | tuple[str, ...] | None, event_hint: str = "") -> None:
    """The record (journal + DeliveryReport) holds the event and the dose on both channels."""
    if expect_interlock is not None and not isinstance(expect_interlock, str):
        expect_interlock = next((i for i in expect_interlock if i in d.interlocks_seen), expect_interlock[0])
    r = d.report
    row.recorded = describe_record(d)
    if not row.check(r is not None, "no DeliveryReport after the delivery ended"):
        return
    row.check(math.isfinite(r.primary_dose_gy) and r.primary_dose_gy >= 0, "primary dose missing in the report")
    if not all(s.final_read for s in r.segments):
        (row.notes if "link_lost" in d.interlocks_seen else row.failures).append(
            "the final IRM read after HV off is missing in a segment (the link was lost)")
    if device_irm_gy is not None and device_irm_gy > 0:
        deviation = abs(r.secondary_dose_gy - device_irm_gy) / device_irm_gy
        if deviation > RECORD_HARDWARE_AGREEMENT_FRACTION and abs(r.secondary_dose_gy - device_irm_gy) >= 0.01:
            text = (f"recorded secondary {r.secondary_dose_gy:.4f} Gy differs from the unit's counter "
                    f"{device_irm_gy:.4f} Gy by {deviation:.2%} (> 0.5 %)")
            if r.irm_read_after_beam_off:
                row.failures.append(text)
            else:
                row.notes.append(text + " in the DeliveryReport (final IRM read lost with the link): settled below")
    if not r.irm_read_after_beam_off:
        rec = d.reconciliation
        if row.check(rec is not None, "the IRM dose of a delivery that ended with the link lost was never settled "
                                      f"(reconnect / entry at the unit): {d.reconcile_messages}"):
            row.notes.append(f"IRM settled at {rec.reconciled_gy:.4f} Gy ({rec.basis}); last reading before the "
                             f"loss {rec.recorded_gy:.4f} Gy")
            if device_irm_gy is not None and device_irm_gy > 0:
                off = abs(rec.reconciled_gy - device_irm_gy)
                row.check(off <= max(RECORD_HARDWARE_AGREEMENT_FRACTION * device_irm_gy, 0.01),
                          f"settled IRM {rec.reconciled_gy:.4f} Gy differs from the unit's counter "
                          f"{device_irm_gy:.4f} Gy by {off:.4f} Gy")
    if expect_interlock:
        raised = {c.interlock for c in r.interlock_changes if c.state == "raised"}
        shown = d.interlocks_seen.get(expect_interlock, "")
        detail = r.termination_detail.lower()
        in_detail = ((bool(shown) and shown.split(":")[0].lower() in detail)
                     or expect_interlock.replace("_", " ") in detail
                     or (bool(event_hint) and event_hint.lower() in detail))
        row.check(expect_interlock in raised or in_detail,
                  f"interlock {expect_interlock} is in neither the report's interlock changes {sorted(raised)} "
                  f"nor its termination detail {r.termination_detail!r}")
        if expect_interlock not in raised:
            row.gaps.append(f"DeliveryReport.interlock_changes lacks {expect_interlock} (only in the termination "
                            "detail): the report was emitted in the same poll, before _track_interlocks() ran")
    kinds = [e.get("kind") for e in d.journal_entries]
    row.check("beam_on" in kinds and "treatment_closed" in kinds,
              f"journal lacks beam_on/treatment_closed: {kinds[:3]}…{kinds[-3:]}")


def check_message(row: Row, d: Delivery, expect_interlock: str | tuple[str, ...] | None) -> None:
    """The console shows a specific message with what to do."""
    if expect_interlock is None:
        shown = [m for m in d.messages_seen if m != "supervisor stopped; beam off"]
        row.console_message = shown[-1] if shown else ""
        return
    options = (expect_interlock,) if isinstance(expect_interlock, str) else expect_interlock
    expect_interlock = next((i for i in options if i in d.interlocks_seen), options[0])
    text = d.interlocks_seen.get(expect_interlock)
    row.console_message = text or (d.messages_seen[-1] if d.messages_seen else "")
    if row.check(text is not None, f"the console never showed interlock {expect_interlock}; it showed "
                                   f"{sorted(d.interlocks_seen)} / {d.messages_seen[-2:]}"):
        row.check(len(text) > 40, f"interlock text too short to act on: {text!r}")


def write_json(path: Path, rows: list[Row]) -> None:
    path.write_text(json.dumps([r.to_json() for r in rows], indent=2, default=str))
