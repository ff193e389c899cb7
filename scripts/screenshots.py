"""Regenerate docs/screenshots/*.png: every bedside screen, rendered offscreen.

The treatment screens come from a real Supervisor delivering on the simulated unit (fast source,
1.5 cm applicator, a site config that explicitly allows a treatment of seconds). The other screens are
fed fixed, realistic workflow statuses (the screens only render what they are given). Sends no
command to anything but the simulator. Usage: python scripts/screenshots.py [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtWidgets import QApplication  # noqa: E402

from orconsole.dosecalc import parse_prescription_gy  # noqa: E402
from orconsole.identity import Role, Session  # noqa: E402
from orconsole.models import Refused  # noqa: E402
from orconsole.statemachine import State  # noqa: E402
from orconsole.supervisor import SnapshotMailbox  # noqa: E402
from orconsole.treatment import (ApprovalInfo, Checklist, ChecklistItem, DeviceInfo, RecoveryInfo,  # noqa: E402
                                 StatusMailbox, WorkflowStatus, WorkflowStep)
from tests.core import factories as f  # noqa: E402
from ui.screenshots import SCREEN_SIZE, ensure_app, grab, treatment_view  # noqa: E402


class _Still:
    """Stands in for the service behind the window: two mailboxes holding fixed values."""

    def __init__(self, snapshot, status) -> None:
        self.treatment, self.status_box = SnapshotMailbox(), StatusMailbox()
        self.treatment.put(snapshot)
        self.status_box.put(status)

    def subscribe_treatment(self):
        return self.treatment

    def subscribe_status(self):
        return self.status_box


class _Identity:
    def logout(self, session) -> None:
        pass


def _status(step: WorkflowStep, *, plan=True, approvals=True, checklist=None, record=None, recovery=None,
            seq=1) -> WorkflowStatus:
    p = f.plan() if plan else None
    infos = ((ApprovalInfo("radiation oncologist", "Dr. O. Oncologist", "2026-11-26 09:41 UTC"),
              ApprovalInfo("medical physicist", "Dr. P. Physicist", "2026-11-26 09:48 UTC",
                           independent_time_s=p.preset_time_s * 1.004, deviation_fraction=0.004))
             if approvals and p else (ApprovalInfo("radiation oncologist", "Dr. O. Oncologist",
                                                   "2026-11-26 09:41 UTC"),) if p else ())
    return WorkflowStatus(seq=seq, step=step, patient=f.patient(), plan=p, approvals=infos,
                          missing_approvals=() if approvals else ("medical physicist",), checklist=checklist,
                          devices=DeviceInfo(None, None), record_id=record, record_sessions=1 if record else 0,
                          delivered_primary_gy=20.0 if record else 0.0, delivered_secondary_gy=19.93 if record else 0.0,
                          recovery=recovery, last_message="")


def _checklist(applicator_ok: bool) -> Checklist:
    items = (
        ChecklistItem("patient_identity", "Patient identity (2 identifiers)", True,
                      "MRN-100234 and 1961-03-14 match Erika Mustermann"),
        ChecklistItem("plan_approved", "Plan approved", True, "physician and physicist signed version 1"),
        ChecklistItem("applicator", "Applicator on the unit = plan", applicator_ok,
                      "unit reports 3.0 cm, plan 3.0 cm" if applicator_ok else
                      "unit reports 3.5 cm, plan requires 3.0 cm: mount the 3.0 cm applicator or re-plan"),
        ChecklistItem("output_check", "Output check passed today", True, "QA-2026-11-26-1, k_out 1.0000"),
        ChecklistItem("devices_connected", "Both devices connected", True, "X-ray unit and electrometer answer"),
        ChecklistItem("record_store", "Record store writable", True, "test write succeeded"),
    )
    return Checklist(items, "2026-11-26T09:55:00Z")


def _session(role: Role) -> Session:
    names = {Role.RADIATION_ONCOLOGIST: ("onc.o", "Dr. O. Oncologist"),
             Role.RADIATION_THERAPIST: ("rtt.t", "T. Therapist"), Role.MEDICAL_PHYSICIST: ("phys.p", "Dr. P. Physicist")}
    user, name = names[role]
    return Session("u-" + user, user, name, role, "2026-11-26T09:00:00Z")


def _window(snapshot, status, role: Role | None, dev: bool = False):
    from ui.app import ConsoleWindow
    bench = None
    if dev:
        from simulators.bench import Bench
        bench = Bench()
    w = ConsoleWindow(service=_Still(snapshot, status), identity=_Identity(), store=None, dev_bench=bench)
    w.snapshots.poll()
    w.statuses.poll()
    w.alarm._beeper.stop()
    if role is not None:
        w._logged_in(_session(role))
    return w


def _real_snapshots(workdir: Path):
    """Deliver on the simulator; return snapshots mid-beam, paused-with-interlock and after an interlock."""
    import pytest  # noqa: F401 - the fixtures' module imports it
    from tests.ui import conftest as c
    from drivers.xrs import XrsDriver
    from simulators.bench import get_bench, reset_benches
    bench = get_bench("screenshots", source="fast", applicator=str(c.APPLICATOR_CM), seed="7")
    xrs = XrsDriver("sim://xrs?bench=screenshots")
    identity = xrs.connect()
    xrs.set_technique(50.0, 40.0)
    xrs.warm_up()
    c.wait_ready(xrs)
    gen = c.ready_supervisor.__wrapped__((xrs, identity, bench), workdir)
    sup, box = next(gen)
    try:
        for fut in (sup.arm(), sup.beam_on()):
            assert fut.result(timeout=5).ok
        mid = box.wait_for(lambda s: s.state is State.BEAM_ON and s.elapsed_s > 3.0, 15)
        bench.xrs_model.inject("interlock_open")
        ended = box.wait_for(lambda s: s.state in (State.TERMINATED, State.FAULT), 15)
        time.sleep(0.3)
        ended = box.latest()
        return mid, ended
    finally:
        try:
            next(gen)
        except StopIteration:
            pass
        xrs.close()
        reset_benches()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    app = ensure_app()
    out: Path = args.out
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ORCONSOLE_HOME", tmp)
        mid, ended = _real_snapshots(Path(tmp))
        idle = replace(mid, state=State.APPROVED, elapsed_s=0.0, remaining_s=mid.preset_s, primary_dose_gy=0.0,
                       secondary_dose_gy=0.0, dose_rate_gy_per_min=None, interlocks=(), termination=None,
                       last_message="plan approved")
        written = []
        written.append(grab(treatment_view(mid), out / "05-treatment-beam-on.png"))
        written.append(grab(treatment_view(ended), out / "05b-treatment-interlock.png"))

        w = _window(idle, _status(WorkflowStep.PLAN_APPROVED), None)
        written.append(grab(w, out / "01-login.png"))
        w.shutdown()

        w = _window(idle, _status(WorkflowStep.PLAN_CREATED, approvals=False), Role.RADIATION_ONCOLOGIST)
        w.show_screen("patient")
        screen = w.screens["patient"]
        screen.prescription.setText("200")
        try:
            parse_prescription_gy("200", f.protocol())
        except Refused as exc:
            screen.plan_error.setText("Refused: " + exc.message)
        written.append(grab(w, out / "02-patient-and-plan.png"))
        w.show_screen("approval")
        written.append(grab(w, out / "03-approval.png"))
        w.shutdown()

        w = _window(idle, _status(WorkflowStep.PLAN_APPROVED), Role.RADIATION_THERAPIST)
        w.show_screen("checklist")
        w.screens["checklist"].mrn.setText("MRN-100234")
        w.screens["checklist"].dob.setText("1961-03-14")
        w.screens["checklist"].show_checklist(_checklist(applicator_ok=False))
        written.append(grab(w, out / "04-checklist-refused.png"))
        w.screens["checklist"].show_checklist(_checklist(applicator_ok=True))
        written.append(grab(w, out / "04b-checklist-passed.png"))
        w.shutdown()

        done = replace(mid, state=State.COMPLETED, elapsed_s=mid.preset_s, remaining_s=0.0, primary_dose_gy=20.0,
                       secondary_dose_gy=19.93, interlocks=(), last_message="preset time reached")
        w = _window(done, _status(WorkflowStep.DELIVERY_ENDED, record="REC-2026-11-26-0001"), Role.RADIATION_THERAPIST)
        w.show_screen("record")
        written.append(grab(w, out / "06-record.png"))
        w.shutdown()

        recovery = RecoveryInfo(treatment_id="T-3f9a1c2b7d10", plan_id="PLAN-017-1", plan_hash="ab" * 32,
                                preset_s=1379.3, journal_elapsed_s=612.0, journal_irm_dose_gy=8.86,
                                device_irm_dose_gy=8.91, device_beam_on_time_s=613.4, device_state="fault",
                                delivered_dose_gy=8.91, record_id="REC-2026-11-26-0001",
                                message="the console restarted during beam; the unit's watchdog ended the beam")
        interrupted = replace(idle, state=State.INTERRUPTED, last_message="unfinished treatment found")
        w = _window(interrupted, _status(WorkflowStep.INTERRUPTED, recovery=recovery), Role.MEDICAL_PHYSICIST)
        w.show_screen("recovery")
        written.append(grab(w, out / "07-recovery.png"))
        w.shutdown()

        w = _window(idle, _status(WorkflowStep.PLAN_APPROVED), Role.RADIATION_THERAPIST, dev=True)
        w.show_screen("dev")
        written.append(grab(w, out / "08-developer-simulator-panel.png"))
        w.shutdown()
    for p in written:
        print(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
