"""`orconsole demo --headless`: the whole treatment workflow without a display, against the simulators
(or any device URL): demo users, a demo patient, an output check, a plan, both approvals, a treatment on
the fast simulated source and the signed delivery record. Progress on stderr; `--json` prints one object.

A DEMONSTRATION: the users get generated throw-away passwords (written to the artifacts directory), the
patient is fictitious, and the site configuration is the simulator bench's. Never point it at a
clinical database or a clinical source. Refusals exit non-zero with the reason and never switch on a beam.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.parse
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_NOT_COMPLETE = 1     # the treatment ran but did not end normally at the prescription
EXIT_REFUSED = 2          # refused before any treatment beam (the reason is printed)

DEMO_SCRYPT_N = 2**12     # throw-away demo accounts only; clinical accounts use the identity default
SIMULATOR_CONFIG = Path(__file__).resolve().parent.parent / "data" / "site-simulator.toml"
STATE_FILE = "demo-state.json"
CREDENTIALS_FILE = "demo-credentials.json"
DEMO_PATIENT = {"medical_record_number": "DEMO-000001", "full_name": "Demo, Dora (fictitious)",
                "date_of_birth": "1960-05-17", "trial_subject_id": "IORT-BM-DEMO-01"}
DEMO_USERS = (("demo-admin", "Demo Administrator", "administrator"),
              ("demo-therapist", "Demo Therapist (RTT)", "radiation therapist"),
              ("demo-physicist", "Dr. Demo Physicist", "medical physicist"),
              ("demo-oncologist", "Dr. Demo Oncologist", "radiation oncologist"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the whole treatment workflow on the simulators (headless)",
        description="A demonstration treatment: demo users with generated passwords, a fictitious patient, an "
                    "output check, a plan, both approvals, the treatment and the signed record. Not for clinical use.")
    p.add_argument("--headless", action="store_true", help="run without a window (required until the demo screen exists)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    # SUPPRESS: a value given before the sub-command (orconsole --xrs URL demo ...) stays when not repeated here
    p.add_argument("--xrs", default=argparse.SUPPRESS, metavar="URL", help="X-ray unit port (default sim://xrs)")
    p.add_argument("--readout", default=argparse.SUPPRESS, metavar="URL", help="electrometer port (default sim://unidos)")
    p.add_argument("--db", default=argparse.SUPPRESS, metavar="URL",
                   help="record store (default: a fresh SQLite file in the artifacts directory)")
    p.add_argument("--applicator", type=float, default=3.0, metavar="CM", help="applicator diameter (default 3.0)")
    p.add_argument("--dose", default="20", metavar="GY", help="prescription as typed at the console (default 20)")
    p.add_argument("--artifacts", default=None, metavar="DIR",
                   help="where the database, journal, device logs, credentials and PDF go (default: ORCONSOLE_HOME "
                        "or ./out)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help=f"site configuration (default: the simulator bench's, {SIMULATOR_CONFIG.name})")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="import this calibration file instead of the simulated source's calibration document")
    p.add_argument("--output-check", choices=("run", "existing", "none"), default="run",
                   help="run the output check (default), use the one stored today by an earlier run in the same "
                        "--artifacts (reusing its database and demo users), or skip it (then planning is refused: "
                        "no QA today)")
    p.add_argument("--recover", action="store_true",
                   help="continue the demo in --artifacts after a crash: show the recovery, deliver the remainder")
    p.add_argument("--setup-only", action="store_true",
                   help="create the demo users, import the calibration and run the output check, then stop (a later "
                        "run with --output-check existing in the same --artifacts treats)")
    p.add_argument("--pause-after", type=float, default=None, metavar="S",
                   help="pause after S seconds of beam, then resume (the remainder only)")
    p.set_defaults(func=cmd_demo)


# ------------------------------------------------------------------------------------------------


class _Refusal(Exception):
    pass


def _opt(args, name: str, default=None):
    return getattr(args, name, default)


def _artifacts_dir(args) -> Path:
    base = args.artifacts or os.environ.get("ORCONSOLE_HOME") or "out"
    path = Path(base).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _progress(line: str) -> None:
    print(f"\r\x1b[2K{line}", end="", file=sys.stderr, flush=True)


def _say(text: str) -> None:
    print(f"\r\x1b[2K  {text}", file=sys.stderr, flush=True)


def _bar(snap) -> str:
    width = 30
    frac = 0.0 if not snap.preset_s else min(1.0, snap.elapsed_s / snap.preset_s)
    filled = int(frac * width)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {snap.elapsed_s:6.1f}/{snap.preset_s:.1f} s  "
            f"primary {snap.primary_dose_gy:6.3f} Gy  IRM {snap.secondary_dose_gy:6.3f} Gy  {snap.state.value}")


def _emit(args, payload: dict[str, Any], code: int) -> int:
    if args.json:
        print(json.dumps(payload, sort_keys=True, default=str))
    else:
        if code == EXIT_REFUSED:
            print(f"demo: refused: {payload.get('reason')}", file=sys.stderr)
        else:
            for key in ("record_id", "termination", "planned_time_s", "beam_on_time_console_s", "beam_on_time_device_s",
                        "delivered_dose_gy", "record_verified", "pdf", "screenshot", "credentials_file", "db"):
                if key in payload:
                    print(f"{key}: {payload[key]}")
    return code


def _prepare_sim_bench(url: str) -> None:
    """For in-process sim:// electrometers: shorten the simulated warm-up and zeroing (300 s and 82 s, like the
    instrument) so that the demo's output check takes seconds. A demo convenience on the simulator only; a real
    electrometer, or `orconsole-sim` in another process, keeps its timings (use --output-check existing)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "sim":
        return
    from simulators.bench import get_bench  # demo only: the in-process simulator is the device here

    options = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
    bench = get_bench(options.pop("bench", "default"), **options)
    bench.unidos_model.warmup_s = min(bench.unidos_model.warmup_s, 0.2)
    bench.unidos_model.zero_duration_s = min(bench.unidos_model.zero_duration_s, 0.2)


def _simulated_calibration_file(serial: str, directory: Path) -> Path:
    """The calibration document of the simulated source with this serial (as a physicist would import it)."""
    from simulators.sources import calibration_document, load_source  # demo only

    for name in ("fast", "clinical"):
        if load_source(name).serial == serial:
            path = directory / f"calibration-{serial}.json"
            path.write_text(json.dumps(calibration_document(name, date.today() - timedelta(days=1)), indent=2))
            return path
    raise _Refusal(f"the connected source {serial} is not a simulated source: give its calibration with --calibration")


def _create_users(ids, directory: Path) -> dict[str, str]:
    from orconsole.identity import Role

    passwords = {u: secrets.token_urlsafe(18) for u, _, _ in DEMO_USERS}
    admin = ids.create_first_administrator(DEMO_USERS[0][0], DEMO_USERS[0][1], passwords[DEMO_USERS[0][0]])
    for username, name, role in DEMO_USERS[1:]:
        ids.create_user(admin, username, name, Role(role), passwords[username])
    path = directory / CREDENTIALS_FILE
    path.write_text(json.dumps({"note": "DEMO ONLY: throw-away accounts of `orconsole demo`, never clinical",
                                "passwords": passwords}, indent=2))
    os.chmod(path, 0o600)
    return passwords


def _treat(service, sessions, passwords, args, *, on_beam=None) -> Any:
    """Checklist → arm → beam on → (pause/resume) → wait for the end, with a progress bar."""
    from orconsole.models import Patient
    from orconsole.statemachine import State

    therapist = sessions["demo-therapist"]
    patient: Patient = service.status().patient
    checklist = service.run_checklist(therapist, medical_record_number=patient.medical_record_number,
                                      date_of_birth=patient.date_of_birth)
    for item in checklist.items:
        _say(f"{'ok ' if item.ok else 'NO '} {item.label}: {item.message}")
    if not checklist.ok:
        raise _Refusal("pre-treatment checklist failed: " + "; ".join(i.message for i in checklist.failures()))
    result = service.start_treatment(therapist)
    if not result.ok:
        raise _Refusal(result.reason)
    box = service.subscribe_treatment()
    result = service.beam_on(therapist)
    if not result.ok:
        raise _Refusal(result.reason)
    if on_beam:
        on_beam()
    paused = False
    shot = getattr(args, "mid_treatment_screenshot", None)   # set by the composition root when Qt is there
    while True:
        snap = box.wait_for(lambda s: True, 0.2) or box.latest()
        _progress(_bar(snap))
        if shot is not None and snap.state is State.BEAM_ON and snap.preset_s and \
                snap.elapsed_s >= 0.4 * snap.preset_s:
            path = _artifacts_dir(args) / "treatment-screen-mid-treatment.png"
            try:
                shot(snap, path)          # the Snapshot just published, never a command
                args.screenshot_written = str(path)
                _say(f"screenshot of the treatment screen mid-treatment: {path}")
            except Exception as exc:  # a picture must never disturb a treatment
                _say(f"the screenshot could not be written ({exc})")
            shot = None
        if args.pause_after is not None and not paused and snap.state is State.BEAM_ON \
                and snap.elapsed_s >= args.pause_after:
            r = service.pause(therapist, "demo: pause requested with --pause-after")
            paused = True
            _say(f"pause: {r.reason}")
            if box.wait_for(lambda s: s.state is State.PAUSED and not s.closing_segment, 15) is None:
                raise _Refusal("the unit did not settle after the pause")
            time.sleep(0.3)
            r = service.resume(therapist)
            _say(f"resume: {r.reason}")
        if snap.state in (State.COMPLETED, State.TERMINATED, State.FAULT):
            break
        time.sleep(0.1)
    outcome = service.wait_for_end(30.0)
    _progress(_bar(box.latest()))
    print(file=sys.stderr)
    return outcome


def cmd_demo(args) -> int:
    if not args.headless:
        print("demo: the demo window is not built yet; run 'orconsole demo --headless'", file=sys.stderr)
        return EXIT_REFUSED
    try:
        return _run(args)
    except _Refusal as exc:
        return _emit(args, {"result": "refused", "reason": str(exc)}, EXIT_REFUSED)


def _run(args) -> int:
    from drivers.errors import DeviceError
    from logs.crypto import InstallationKey
    from logs.store import Store, StoreError
    from orconsole.config import ConfigError, load_config
    from orconsole.identity import IdentityService
    from orconsole.models import Patient, Refused, TrialProtocol
    from orconsole.dosecalc import parse_prescription_gy
    from orconsole.treatment import WorkflowRefused

    artifacts = _artifacts_dir(args)
    try:
        config = load_config(args.config or SIMULATOR_CONFIG)
    except ConfigError as exc:
        raise _Refusal(exc.message) from exc
    protocol = TrialProtocol(name="IORT brain-metastasis cavity, 20 Gy single fraction",
                             prescription_dose_gy=config.prescription.protocol_dose_gy)
    # the typed prescription is checked before any device or record is touched
    try:
        parse_prescription_gy(args.dose, protocol, config)
    except Refused as exc:
        raise _Refusal(exc.message) from exc

    state_path = artifacts / STATE_FILE
    if args.recover or args.output_check == "existing":
        if not state_path.exists():
            raise _Refusal(f"no earlier demo run in {artifacts}: run the demo (or --setup-only) there first")
        state = json.loads(state_path.read_text())
        db_url = _opt(args, "db") or state["db"]
        passwords = json.loads((artifacts / CREDENTIALS_FILE).read_text())["passwords"]
    else:
        db_url = _opt(args, "db") or f"sqlite:///{artifacts / ('demo-' + datetime.now().strftime('%Y%m%d-%H%M%S-') + secrets.token_hex(3) + '.sqlite3')}"
        passwords = None
    journal_dir = artifacts / "journal"
    xrs_url = _opt(args, "xrs") or "sim://xrs"
    readout_url = _opt(args, "readout") or "sim://unidos"

    from drivers.unidos import UnidosDriver
    from drivers.xrs import XrsDriver
    from orconsole.treatment import TreatmentService
    from simulators.clock import MonotonicClock

    store = Store(db_url)
    key = InstallationKey.load_or_create(artifacts / "installation-key.pem")
    ids = IdentityService(store, key, scrypt_n=DEMO_SCRYPT_N)
    if passwords is None:
        if ids.has_users():
            raise _Refusal(f"the database {store.display_url} already has users: the demo needs a fresh one "
                           "(omit --db, or use --recover in the same --artifacts)")
        passwords = _create_users(ids, artifacts)
        state_path.write_text(json.dumps({"db": db_url, "note": "DEMO ONLY"}, indent=2))
    sessions = {u: ids.login(u, passwords[u]) for u, _, _ in DEMO_USERS[1:]}
    if args.output_check == "run":
        _prepare_sim_bench(readout_url)
    xrs, readout = XrsDriver(xrs_url), UnidosDriver(readout_url)
    service = TreatmentService(store=store, identity=ids, config=config, xrs=xrs, readout=readout,
                               journal_dir=journal_dir, clock=MonotonicClock(), protocol=protocol, room="demo bench")
    payload: dict[str, Any] = {"db": store.display_url, "artifacts": str(artifacts),
                               "credentials_file": str(artifacts / CREDENTIALS_FILE)}
    try:
        try:
            info = service.connect_devices()
        except WorkflowRefused as exc:
            raise _Refusal(exc.message) from exc
        _say(f"connected: X-ray unit {info.xrs.serial_number} (firmware {info.xrs.firmware}), electrometer "
             f"{info.readout.serial_number if info.readout else '—'}")
        try:
            if args.recover:
                return _recover(service, sessions, passwords, args, payload)
            _setup_calibration_and_qa(service, store, ids, sessions, passwords, args, artifacts, info)
            if args.setup_only:
                payload["result"] = "set up"
                return _emit(args, payload, EXIT_OK)
            recovery = service.start()
            if recovery is not None:
                raise _Refusal(f"{recovery.message} — run the demo with --recover in {artifacts}")
            service.prepare_devices(on_progress=_say)
            _plan_and_approve(service, sessions, passwords, args)
            outcome = _treat(service, sessions, passwords, args)
            return _finish(service, store, sessions, passwords, args, payload, outcome, artifacts)
        except (WorkflowRefused, Refused) as exc:
            raise _Refusal(exc.message) from exc
        except DeviceError as exc:
            raise _Refusal(f"device error: {exc.message}") from exc
        except PermissionError as exc:
            raise _Refusal(str(exc)) from exc
        except StoreError as exc:          # StoreUnavailable says which store and what to do
            raise _Refusal(f"record store: {exc}") from exc
    finally:
        service.close()
        store.close()


def _setup_calibration_and_qa(service, store, ids, sessions, passwords, args, artifacts, info) -> None:
    from orconsole.calibration import (CalibrationImportError, CalibrationInterlock, StoreCalibrationRepository,
                                       active_calibration_or_interlock, approve_calibration, import_calibration)
    from orconsole.qa import OutputCheck, OutputCheckRequest, QaIncomplete, StoreQaRepository

    physicist, pw = sessions["demo-physicist"], passwords["demo-physicist"]
    repo = StoreCalibrationRepository(store)
    if args.output_check == "existing" and repo.active(info.xrs.serial_number) is not None:
        _say(f"using the active calibration and today's output check of {info.xrs.serial_number} in the database")
        return
    path = Path(args.calibration) if args.calibration else _simulated_calibration_file(info.xrs.serial_number, artifacts)
    try:
        stored = import_calibration(repo, path, actor=physicist.username, max_dose_rate_gy_per_min=200.0)
        approve_calibration(repo, stored.record.source_serial, stored.doc_id, physicist=physicist.username,
                            sign=lambda doc_id: ids.sign(physicist, pw, doc_id, "approved calibration"))
    except (CalibrationImportError, CalibrationInterlock) as exc:
        raise _Refusal(str(exc)) from exc
    _say(f"calibration of {stored.record.source_serial} imported and approved by {physicist.full_name}")
    if args.output_check != "run":
        return
    try:
        calibration = active_calibration_or_interlock(repo, info.xrs.serial_number)
    except CalibrationInterlock as exc:
        raise _Refusal(str(exc)) from exc
    check = OutputCheck(xrs=service._xrs, readout=service._readout, calibration=calibration,
                        policy=service.qa_policy, connect=False, xrs_identity=info.xrs, readout_identity=info.readout,
                        on_step=lambda text: _progress(f"  output check: {text}"))
    try:
        record = check.run(OutputCheckRequest("20.0", "101.325 kPa", performed_by=physicist.username,
                                              chamber_serial="34013-DEMO"))
    except QaIncomplete as exc:
        raise _Refusal(f"output check not completed: {exc.message}") from exc
    print(file=sys.stderr)
    qa_repo = StoreQaRepository(store)
    qa_repo.save(record)
    ids.sign(physicist, pw, record.qa_id, "performed QA")
    _say(f"output check {record.result.value}: k_out {record.k_out:.4f} (signed by {physicist.full_name})")


def _plan_and_approve(service, sessions, passwords, args) -> None:
    from orconsole.models import Cavity, Patient

    therapist = sessions["demo-therapist"]
    patient = Patient.model_validate({**DEMO_PATIENT})
    service.register_patient(therapist, patient)
    service.select_patient(therapist, medical_record_number=patient.medical_record_number,
                           date_of_birth=patient.date_of_birth)
    onc, phys = sessions["demo-oncologist"], sessions["demo-physicist"]
    plan = service.create_plan(onc, passwords["demo-oncologist"], prescription_text=args.dose,
                               applicator_cm=args.applicator,
                               cavity=Cavity(site="left frontal resection cavity (demo)",
                                             lesion_label="metastasis 1 (demo)", cavity_diameter_cm=args.applicator))
    _say(f"plan {plan.plan_id}: {plan.prescription_dose_gy:g} Gy, {plan.applicator_cm:.1f} cm, "
         f"{plan.preset_time_s:.1f} s (k_out {plan.k_out:.4f})")
    service.approve_plan(onc, passwords["demo-oncologist"])
    service.approve_plan(phys, passwords["demo-physicist"])
    _say("plan approved by the physician and the physicist (independent check)")


def _recover(service, sessions, passwords, args, payload) -> int:
    recovery = service.start()
    if recovery is None:
        raise _Refusal("the journal holds no unfinished treatment: nothing to recover")
    _say(recovery.message)
    payload["recovery"] = {"treatment_id": recovery.treatment_id, "journal_elapsed_s": recovery.journal_elapsed_s,
                           "journal_irm_dose_gy": recovery.journal_irm_dose_gy,
                           "device_irm_dose_gy": recovery.device_irm_dose_gy,
                           "device_beam_on_time_s": recovery.device_beam_on_time_s,
                           "device_state": recovery.device_state, "record_id": recovery.record_id}
    phys, onc = sessions["demo-physicist"], sessions["demo-oncologist"]
    service.decide_recovery(phys, passwords["demo-physicist"], decision="continue",
                            acknowledgement="demo: unit counter read back and compared with the journal; patient "
                                            "and applicator unchanged")
    service.prepare_devices(on_progress=_say)
    patient = service.status().patient
    therapist = sessions["demo-therapist"]
    service.select_patient(therapist, medical_record_number=patient.medical_record_number,
                           date_of_birth=patient.date_of_birth)
    plan = service.plan_continuation(onc, passwords["demo-oncologist"])
    _say(f"continuation v{plan.version}: {plan.dose_to_deliver_gy:.3f} Gy in {plan.preset_time_s:.1f} s")
    service.approve_plan(onc, passwords["demo-oncologist"])
    service.approve_plan(phys, passwords["demo-physicist"])
    outcome = _treat(service, sessions, passwords, args)
    return _finish(service, service.store, sessions, passwords, args, payload, outcome, Path(payload["artifacts"]))


def _finish(service, store, sessions, passwords, args, payload, outcome, artifacts: Path) -> int:
    from logs.records import RecordBook
    from logs.verify import verify_stored

    therapist = sessions["demo-therapist"]
    record_id = service.finish_record(therapist, passwords["demo-therapist"], comments="demo treatment (simulator)")
    record = RecordBook(store).load(record_id)
    verdict = verify_stored(store, record_id)
    totals = record.totals
    payload.update({
        "result": "delivered",
        "record_id": record_id, "completion": record.completion, "record_verified": verdict.ok,
        "planned_time_s": outcome.planned_time_s,
        "beam_on_time_console_s": outcome.console_beam_on_s, "beam_on_time_device_s": outcome.device_beam_on_s,
        "delivered_dose_gy": {"primary_timer": outcome.primary_dose_gy, "secondary_irm": outcome.secondary_dose_gy},
        "total_delivered_dose_gy": {"primary_timer": totals.dose_gy.primary_timer_gy,
                                    "secondary_irm": totals.dose_gy.secondary_irm_gy},
        "sessions": totals.sessions, "termination": outcome.termination.value,
        "termination_cause": outcome.termination_cause, "interlocks": list(outcome.interlocks),
        "interruptions": [i.reason for i in record.interruptions],
        "prescription_gy": record.plan.prescription_gy,
    })
    if not verdict.ok:
        payload["verification_problems"] = list(verdict.problems)
    try:
        from logs.export_pdf import export_pdf

        pdf = artifacts / f"record-{record_id}.pdf"
        export_pdf(store, record_id, pdf, exported_by=therapist.username)
        payload["pdf"] = str(pdf)
    except Exception as exc:  # noqa: BLE001 - the PDF is a convenience; the signed record is stored either way
        payload["pdf_error"] = f"the PDF could not be written ({exc})"
    _say(f"record {record_id}: {record.completion}, signed by {therapist.full_name}, "
         f"{'verifies' if verdict.ok else 'DOES NOT VERIFY'}")
    if getattr(args, "screenshot_written", None):
        payload["screenshot"] = args.screenshot_written
    if "pdf" in payload:
        _say(f"PDF: {payload['pdf']}")
    ok = record.completion == "complete" and verdict.ok
    return _emit(args, payload, EXIT_OK if ok else EXIT_NOT_COMPLETE)
