"""`orconsole qa ...`: the physicist's daily QA without a window: output check, isotropy, mechanics,
calibration import/approval, warning acknowledgement, signing, status and the history CSV.

Thin: every rule lives in orconsole.qa / orconsole.calibration / orconsole.identity. Never accepts a
password on the command line; exits non-zero with the reason when a check fails or cannot finish.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import date, timedelta
from typing import Any

EXIT_OK = 0
EXIT_FAIL = 1          # the check ran and FAILED (treatment on the source is blocked)
EXIT_USAGE = 2         # wrong input, missing calibration, refused permission
EXIT_INCOMPLETE = 3    # the check could not be completed: no result was produced

_DEVICE_DEFAULTS = {"xrs": "sim://xrs", "readout": "sim://unidos", "db": None}


def _add_device_options(parser: argparse.ArgumentParser, *, devices: bool = True) -> None:
    """The global --xrs/--readout/--db, accepted after the sub-command too (SUPPRESS keeps the global value)."""
    if devices:
        parser.add_argument("--xrs", default=argparse.SUPPRESS, metavar="URL",
                            help="X-ray unit port (default: the global --xrs, else sim://xrs)")
        parser.add_argument("--readout", default=argparse.SUPPRESS, metavar="URL",
                            help="electrometer port (default: the global --readout, else sim://unidos)")
    parser.add_argument("--db", default=argparse.SUPPRESS, metavar="URL",
                        help="record store URL (default: the global --db, ORCONSOLE_DB, else SQLite in the data directory)")
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="site configuration TOML (default: ORCONSOLE_CONFIG, else the safe defaults)")


def _add_signer(parser: argparse.ArgumentParser, *, required: bool = False, meaning: str = "sign") -> None:
    parser.add_argument("--sign-as", metavar="USERNAME", required=required,
                        help=f"physicist who signs ({meaning}); the password is asked for, or read with --password-stdin")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")


def register(subparsers) -> None:
    p = subparsers.add_parser("qa", help="daily QA: output check, isotropy, mechanics, calibration, history",
                              description="The physicist's daily QA. A source whose output was not checked today "
                                          "cannot treat; see docs/qa.md.")
    sub = p.add_subparsers(dest="qa_command", metavar="ACTION", required=True)

    o = sub.add_parser("output", help="daily output check with the ion chamber in the QA holder")
    o.add_argument("--headless", action="store_true", help="run without a window (required: the QA screens are in the console)")
    o.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    o.add_argument("--temperature", required=True, metavar="T",
                   help="air temperature at the chamber: '22.5' (°C), '22.5 C' or '72.5 F'")
    o.add_argument("--pressure", required=True, metavar="P",
                   help="air pressure: '101.3' (kPa), '101.3 kPa', '1013 hPa', '1013 mbar' or '760 mmHg'")
    o.add_argument("--chamber-serial", default=None, help="serial number of the ion chamber (stored with the result)")
    _add_signer(o, meaning="performed QA")
    _add_device_options(o)
    o.set_defaults(func=cmd_output)

    i = sub.add_parser("isotropy", help="photodiode isotropy (±X, ±Y, +Z) against the source's baseline")
    i.add_argument("--json", action="store_true")
    i.add_argument("--set-baseline", action="store_true",
                   help="record this reading as the source's new isotropy baseline (a physicist signs it)")
    i.add_argument("--note", default="", help="with --set-baseline: why the baseline is (re)recorded")
    _add_signer(i, meaning="performed QA")
    _add_device_options(i)
    i.set_defaults(func=cmd_isotropy)

    m = sub.add_parser("mechanics", help="enter probe straightness and beam centering deviations")
    m.add_argument("--source", required=True, metavar="SERIAL")
    m.add_argument("--straightness", required=True, type=float, metavar="MM", help="probe straightness deviation, mm")
    m.add_argument("--centering", required=True, type=float, metavar="MM", help="beam centering deviation, mm")
    m.add_argument("--json", action="store_true")
    _add_signer(m, meaning="performed QA")
    _add_device_options(m, devices=False)
    m.set_defaults(func=cmd_mechanics)

    c = sub.add_parser("calibration", help="import, list and approve source calibrations")
    csub = c.add_subparsers(dest="calibration_command", metavar="ACTION", required=True)
    ci = csub.add_parser("import", help="validate and store a calibration file (.json or .csv) as a new version")
    ci.add_argument("file")
    ci.add_argument("--approve", action="store_true", help="approve it at once (needs --sign-as, a physicist)")
    ci.add_argument("--test-source", action="store_true",
                    help="accept surface dose rates up to 200 Gy/min (the simulator's fast TEST source only)")
    _add_signer(ci, meaning="approved calibration")
    _add_device_options(ci, devices=False)
    ci.set_defaults(func=cmd_calibration_import)
    ca = csub.add_parser("approve", help="approve a stored version: it becomes the source's active calibration")
    ca.add_argument("doc_id")
    ca.add_argument("--source", required=True, metavar="SERIAL")
    _add_signer(ca, required=True, meaning="approved calibration")
    _add_device_options(ca, devices=False)
    ca.set_defaults(func=cmd_calibration_approve)
    cl = csub.add_parser("list", help="versions of a source's calibration and which one is active")
    cl.add_argument("--source", required=True, metavar="SERIAL")
    _add_device_options(cl, devices=False)
    cl.set_defaults(func=cmd_calibration_list)

    a = sub.add_parser("acknowledge", help="acknowledge an output check in the warning band")
    a.add_argument("qa_id")
    a.add_argument("--comment", required=True, help="why the warning is acceptable (kept with the record)")
    _add_signer(a, required=True, meaning="acknowledged QA warning")
    _add_device_options(a, devices=False)
    a.set_defaults(func=cmd_acknowledge)

    s = sub.add_parser("sign", help="sign a stored QA result ('performed QA')")
    s.add_argument("qa_id")
    _add_signer(s, required=True, meaning="performed QA")
    _add_device_options(s, devices=False)
    s.set_defaults(func=cmd_sign)

    st = sub.add_parser("status", help="may the source treat today? (output check and calibration)")
    st.add_argument("--source", required=True, metavar="SERIAL")
    st.add_argument("--json", action="store_true")
    _add_device_options(st, devices=False)
    st.set_defaults(func=cmd_status)

    h = sub.add_parser("history", help="export the QA history")
    h.add_argument("--csv", required=True, metavar="FILE", help="write the history as CSV to FILE ('-' for stdout)")
    h.add_argument("--source", default=None, metavar="SERIAL")
    _add_device_options(h, devices=False)
    h.set_defaults(func=cmd_history)

    r = sub.add_parser("report", help="monthly QA report as PDF (trend with tolerance bands, every check)")
    r.add_argument("--month", required=True, metavar="YYYY-MM", help="calendar month, e.g. 2026-11")
    r.add_argument("-o", "--output", required=True, metavar="FILE.pdf", help="PDF file to write")
    r.add_argument("--source", default=None, metavar="SERIAL", help="one source only (default: every source)")
    r.add_argument("--by", default=None, metavar="NAME", help="who generates it (default: the login name)")
    _add_device_options(r, devices=False)
    r.set_defaults(func=cmd_report)


# ------------------------------------------------------------------------------------------------
# plumbing
# ------------------------------------------------------------------------------------------------


def _opt(args, name: str):
    return getattr(args, name, _DEVICE_DEFAULTS.get(name))


def _policy(args):
    from orconsole.config import load_config
    from orconsole.qa import QaPolicy

    path = getattr(args, "config", None) or os.environ.get("ORCONSOLE_CONFIG") or None
    return QaPolicy.from_site(load_config(path))


def _store(args):
    from logs.store import Store

    return Store(_opt(args, "db"))


def _identity(store):
    from logs.crypto import InstallationKey
    from logs.store import default_installation_key_path
    from orconsole.identity import IdentityService

    key = InstallationKey.load_or_create(default_installation_key_path(),
                                         os.environ.get("ORCONSOLE_INSTALLATION_KEY_PASSPHRASE"))
    return IdentityService(store, key)


class _Password:
    def __init__(self, from_stdin: bool) -> None:
        self.from_stdin = from_stdin
        self._cached: str | None = None

    def get(self, username: str) -> str:
        if self._cached is None:
            if self.from_stdin:
                self._cached = sys.stdin.readline().rstrip("\r\n")
            else:
                self._cached = getpass.getpass(f"Password of {username}: ")
        return self._cached


def _login(args, store):
    """(identity service, session, password) of --sign-as, or (None, None, None) when not given."""
    if not getattr(args, "sign_as", None):
        return None, None, None
    ids = _identity(store)
    pw = _Password(args.password_stdin)
    password = pw.get(args.sign_as)
    session = ids.login(args.sign_as, password)
    return ids, session, password


def _emit(args, payload: dict[str, Any], text: str, *, error: bool = False) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=None, sort_keys=True, default=str))
    else:
        print(text, file=sys.stderr if error else sys.stdout)


def _guard(func):
    """Turn the errors a person can act on into a message and an exit code; never a traceback."""
    def wrapper(args) -> int:
        from logs.store import StoreError
        from orconsole.calibration import CalibrationImportError, CalibrationInterlock
        from orconsole.config import ConfigError
        from orconsole.qa import QaInputError

        try:
            return func(args)
        except CalibrationImportError as exc:
            _emit(args, {"result": "refused", "reason": str(exc),
                         "issues": [issue.__dict__ for issue in exc.issues]}, f"qa: {exc}", error=True)
            return EXIT_USAGE
        except (CalibrationInterlock, QaInputError, ConfigError, StoreError, PermissionError) as exc:
            _emit(args, {"result": "refused", "reason": str(exc)}, f"qa: {exc}", error=True)
            return EXIT_USAGE
        except Exception as exc:  # noqa: BLE001 - authentication errors and device errors carry a message
            from drivers.errors import DeviceError

            name = type(exc).__name__
            if isinstance(exc, DeviceError) or name == "SerialException":
                reason = f"the devices cannot be reached: {getattr(exc, 'message', exc)}. Check the cables and the " \
                         "--xrs/--readout ports, then repeat the check"
                _emit(args, {"result": "incomplete", "reason": reason}, f"qa: {reason}", error=True)
                return EXIT_INCOMPLETE
            if name in ("AuthenticationError", "AccountLocked"):
                _emit(args, {"result": "refused", "reason": str(exc)}, f"qa: {exc}", error=True)
                return EXIT_USAGE
            raise
    wrapper.__name__ = func.__name__
    return wrapper


def _open_devices(args):
    try:
        from drivers.unidos import UnidosDriver
        from drivers.xrs import XrsDriver
    except ImportError as exc:
        from orconsole.qa import QaInputError

        raise QaInputError(f"the device drivers are not available in this build ({exc}): "
                           "install the complete ORConsole package") from exc
    return XrsDriver(_opt(args, "xrs")), UnidosDriver(_opt(args, "readout"))


def _close(*devices) -> None:
    for device in devices:
        try:
            device.close()
        except Exception:  # noqa: BLE001 - closing is best effort; the link is gone either way
            pass


# ------------------------------------------------------------------------------------------------
# output check
# ------------------------------------------------------------------------------------------------


def _record_payload(record, *, signed_by=(), gate=None) -> dict[str, Any]:
    return {
        "qa_id": record.qa_id, "source_serial": record.source_serial, "result": record.result.value,
        "k_out": record.k_out, "deviation_percent": record.deviation_fraction * 100, "k_tp": record.k_tp,
        "raw_mean_c": record.raw_mean_c, "corrected_mean_c": record.corrected_mean_c,
        "reference_reading_c": record.reference_reading_c, "readings": [r.charge_c for r in record.readings],
        "readings_used_series": record.used_attempt, "spread_percent": record.spread_fraction * 100,
        "temperature_c": record.temperature_c, "pressure_kpa": record.pressure_kpa,
        "reference_temperature_c": record.reference_temperature_c, "performed_on": record.performed_on.isoformat(),
        "performed_by": record.performed_by, "electrometer_serial": record.instruments.electrometer_serial,
        "chamber_serial": record.instruments.chamber_serial, "xrs_serial": record.instruments.xrs_serial,
        "message": record.message, "signed_by": list(signed_by),
        "treatment_allowed": None if gate is None else gate.allowed, "gate_reason": None if gate is None else gate.reason,
    }


@_guard
def cmd_output(args) -> int:
    from orconsole.calibration import StoreCalibrationRepository, active_calibration_or_interlock
    from orconsole.models import QaOutcome
    from orconsole.qa import OutputCheck, OutputCheckRequest, QaIncomplete, StoreQaRepository, output_check_gate

    if not args.headless:
        print("qa: this command has no window; the QA screens are in the console (screen 8 · Daily output check, "
              "see docs/qa.md §9). Run 'orconsole qa output --headless ...' here.", file=sys.stderr)
        return EXIT_USAGE
    policy = _policy(args)
    from orconsole.qa import parse_pressure_kpa, parse_temperature_c

    parse_temperature_c(args.temperature, policy)   # refuse bad entries before touching any device
    parse_pressure_kpa(args.pressure, policy)
    store = _store(args)
    try:
        ids, session, password = _login(args, store)
        if session is not None:
            from orconsole.identity import Permission

            ids.require(session, Permission.PERFORM_QA, "perform the daily output check")
        performed_by = session.username if session else "headless (unsigned)"
        xrs, readout = _open_devices(args)
        try:
            try:
                xrs_id = xrs.connect()
                ro_id = readout.connect()
            except Exception as exc:  # noqa: BLE001
                reason = f"cannot connect to the devices: {getattr(exc, 'message', exc)}"
                _emit(args, {"result": "incomplete", "reason": reason}, f"qa: {reason}", error=True)
                return EXIT_INCOMPLETE
            calibration = active_calibration_or_interlock(StoreCalibrationRepository(store), xrs_id.serial_number,
                                                          max_validity_days=policy.calibration_max_validity_days)
            steps = [] if args.json else None
            check = OutputCheck(xrs=xrs, readout=readout, calibration=calibration, policy=policy, connect=False,
                                xrs_identity=xrs_id, readout_identity=ro_id,
                                on_step=(lambda text: print(f"  {text}", file=sys.stderr)) if not args.json else steps.append)
            try:
                record = check.run(OutputCheckRequest(args.temperature, args.pressure, performed_by=performed_by,
                                                      chamber_serial=args.chamber_serial))
            except QaIncomplete as exc:
                store.audit(performed_by, "qa output check incomplete",
                            {"source_serial": xrs_id.serial_number, "reason": exc.message,
                             "readings_nc": [r.charge_nc for r in exc.readings]})
                _emit(args, {"result": "incomplete", "reason": exc.message, "source_serial": xrs_id.serial_number,
                             "readings": [r.charge_c for r in exc.readings], "steps": steps},
                      f"qa: output check NOT completed: {exc.message}", error=True)
                return EXIT_INCOMPLETE
        finally:
            _close(xrs, readout)
        repo = StoreQaRepository(store)
        repo.save(record)
        signed_by = []
        if session is not None:
            row = ids.sign(session, password, record.qa_id, "performed QA")
            signed_by.append(row.printed_name)
        gate = output_check_gate(repo, source_serial=record.source_serial, day=record.performed_on, policy=policy)
        payload = _record_payload(record, signed_by=signed_by, gate=gate)
        payload["steps"] = steps
        text = (f"{record.message}\nqa_id {record.qa_id}; readings {', '.join(f'{r.charge_c:.4e} C' for r in record.readings)}; "
                f"k_TP {record.k_tp:.5f}; corrected mean {record.corrected_mean_c:.5e} C; k_out {record.k_out:.5f}\n"
                f"treatment on {record.source_serial}: {'allowed' if gate.allowed else 'BLOCKED'} ({gate.reason})")
        _emit(args, payload, text)
        return EXIT_FAIL if record.result is QaOutcome.FAIL else EXIT_OK
    finally:
        store.close()


# ------------------------------------------------------------------------------------------------
# isotropy, mechanics
# ------------------------------------------------------------------------------------------------


def _save_and_sign(store, record, ids, session, password) -> list[str]:
    from orconsole.qa import StoreQaRepository

    StoreQaRepository(store).save(record)
    if session is None:
        return []
    return [ids.sign(session, password, record.qa_id, "performed QA").printed_name]


@_guard
def cmd_isotropy(args) -> int:
    from orconsole.calibration import StoreCalibrationRepository, active_calibration_or_interlock
    from orconsole.qa import (QaIncomplete, StoreQaRepository, evaluate_isotropy, make_isotropy_baseline,
                              read_isotropy_with_beam)

    policy = _policy(args)
    if args.set_baseline and not args.sign_as:
        print("qa: --set-baseline needs --sign-as USERNAME (a medical physicist records and signs the baseline)",
              file=sys.stderr)
        return EXIT_USAGE
    store = _store(args)
    try:
        ids, session, password = _login(args, store)
        if args.set_baseline:
            from orconsole.identity import Permission

            ids.require(session, Permission.CHANGE_QA_BASELINE, "record an isotropy baseline")
        repo = StoreQaRepository(store)
        xrs, readout = _open_devices(args)
        _close(readout)
        try:
            identity = xrs.connect()
            calibration = active_calibration_or_interlock(StoreCalibrationRepository(store), identity.serial_number,
                                                          max_validity_days=policy.calibration_max_validity_days)
            try:
                reading = read_isotropy_with_beam(xrs, calibration, policy=policy, connect=False)
            except QaIncomplete as exc:
                _emit(args, {"result": "incomplete", "reason": exc.message},
                      f"qa: isotropy check NOT completed: {exc.message}", error=True)
                return EXIT_INCOMPLETE
        finally:
            _close(xrs)
        if args.set_baseline:
            baseline = make_isotropy_baseline(reading, source_serial=calibration.source_serial,
                                              recorded_by=session.username, note=args.note)
            repo.save_baseline(baseline)
            row = ids.sign(session, password, baseline.baseline_id, "approved calibration")
            _emit(args, {"baseline_id": baseline.baseline_id, "source_serial": baseline.source_serial,
                         "readings": baseline.readings, "signed_by": [row.printed_name], "result": "baseline recorded"},
                  f"isotropy baseline {baseline.baseline_id} of source {baseline.source_serial} recorded and signed by "
                  f"{row.printed_name}: {baseline.readings}")
            return EXIT_OK
        recorded = repo.baseline(calibration.source_serial)
        record = evaluate_isotropy(reading, source_serial=calibration.source_serial,
                                   baseline=recorded.readings if recorded else None, policy=policy,
                                   performed_by=session.username if session else "headless (unsigned)")
        signed = _save_and_sign(store, record, ids, session, password)
        payload = {"qa_id": record.qa_id, "baseline_id": recorded.baseline_id if recorded else None, "source_serial": record.source_serial,
                   "result": "pass" if record.passed else "fail", "readings": record.readings,
                   "deviations_percent": {d: v * 100 for d, v in record.deviations.items()},
                   "tolerance_percent": record.tolerance_fraction * 100, "message": record.message, "signed_by": signed}
        _emit(args, payload, f"{record.message}\nqa_id {record.qa_id}")
        return EXIT_OK if record.passed else EXIT_FAIL
    finally:
        store.close()


@_guard
def cmd_mechanics(args) -> int:
    from orconsole.qa import evaluate_mechanics

    policy = _policy(args)
    store = _store(args)
    try:
        ids, session, password = _login(args, store)
        record = evaluate_mechanics(source_serial=args.source, probe_straightness_mm=args.straightness,
                                    beam_centering_mm=args.centering, policy=policy,
                                    performed_by=session.username if session else "headless (unsigned)")
        signed = _save_and_sign(store, record, ids, session, password)
        _emit(args, {"qa_id": record.qa_id, "source_serial": record.source_serial,
                     "result": "pass" if record.passed else "fail", "message": record.message, "signed_by": signed},
              f"{record.message}\nqa_id {record.qa_id}")
        return EXIT_OK if record.passed else EXIT_FAIL
    finally:
        store.close()


# ------------------------------------------------------------------------------------------------
# calibration
# ------------------------------------------------------------------------------------------------


@_guard
def cmd_calibration_import(args) -> int:
    from orconsole.calibration import StoreCalibrationRepository, approve_calibration, import_calibration

    policy = _policy(args)
    if args.approve and not args.sign_as:
        print("qa: --approve needs --sign-as USERNAME (a medical physicist signs the approval)", file=sys.stderr)
        return EXIT_USAGE
    store = _store(args)
    try:
        ids, session, password = _login(args, store)
        if session is not None:
            from orconsole.identity import Permission

            ids.require(session, Permission.MANAGE_CALIBRATION, "import a source calibration")
        repo = StoreCalibrationRepository(store)
        stored = import_calibration(repo, args.file, actor=session.username if session else "headless",
                                    max_validity_days=policy.calibration_max_validity_days,
                                    max_dose_rate_gy_per_min=200.0 if args.test_source else 10.0)
        r = stored.record
        print(f"imported calibration of source {r.source_serial} ({r.source_model}) as version {stored.version}: "
              f"{stored.doc_id}; dated {r.calibration_date}, valid until {r.valid_until}, reference reading "
              f"{r.reference_reading_nc:g} nC, {len(r.applicators)} applicator(s)"
              + (f", {sum(a.assumption for a in r.applicators)} flagged as ASSUMPTION" if any(a.assumption for a in r.applicators) else ""))
        if args.approve:
            _approve(ids, session, password, repo, r.source_serial, stored.doc_id)
        else:
            print(f"not active yet: approve with 'orconsole qa calibration approve {stored.doc_id} --source "
                  f"{r.source_serial} --sign-as USERNAME'")
        return EXIT_OK
    finally:
        store.close()


def _approve(ids, session, password, repo, source_serial: str, doc_id: str) -> None:
    from orconsole.calibration import approve_calibration

    def sign(doc: str) -> None:
        ids.sign(session, password, doc, "approved calibration")

    approve_calibration(repo, source_serial, doc_id, physicist=session.username, sign=sign)
    print(f"approved by {session.full_name}: {doc_id} is now the active calibration of source {source_serial}")


@_guard
def cmd_calibration_approve(args) -> int:
    from orconsole.calibration import StoreCalibrationRepository

    store = _store(args)
    try:
        ids, session, password = _login(args, store)
        from orconsole.identity import Permission

        ids.require(session, Permission.MANAGE_CALIBRATION, "approve a source calibration")
        _approve(ids, session, password, StoreCalibrationRepository(store), args.source, args.doc_id)
        return EXIT_OK
    finally:
        store.close()


@_guard
def cmd_calibration_list(args) -> int:
    from orconsole.calibration import StoreCalibrationRepository, calibration_interlock_reason

    policy = _policy(args)
    store = _store(args)
    try:
        repo = StoreCalibrationRepository(store)
        active = repo.active(args.source)
        versions = repo.versions(args.source)
        if not versions:
            print(f"no calibration stored for source {args.source}")
        for v in versions:
            mark = "ACTIVE" if active and active.doc_id == v.doc_id else "      "
            print(f"{mark} v{v.version} {v.doc_id} dated {v.record.calibration_date} valid until "
                  f"{v.record.valid_until} ref {v.record.reference_reading_nc:g} nC imported by {v.imported_by} "
                  f"from {v.record.imported_from}")
        reason = calibration_interlock_reason(repo, args.source, max_validity_days=policy.calibration_max_validity_days)
        print(f"interlock: {reason}" if reason else "calibration usable today")
        return EXIT_OK if reason is None else EXIT_FAIL
    finally:
        store.close()


# ------------------------------------------------------------------------------------------------
# acknowledge, sign, status, history
# ------------------------------------------------------------------------------------------------


@_guard
def cmd_acknowledge(args) -> int:
    from orconsole.identity import Permission
    from orconsole.qa import StoreQaRepository, acknowledge_warning

    store = _store(args)
    try:
        ids, session, password = _login(args, store)
        ids.require(session, Permission.PERFORM_QA, "acknowledge a QA warning")
        ack = acknowledge_warning(StoreQaRepository(store), args.qa_id, physicist=session.username, comment=args.comment,
                                  sign=lambda doc_id: ids.sign(session, password, doc_id, "acknowledged QA warning"))
        print(f"output check {ack.qa_id} acknowledged by {session.full_name}: {ack.comment}")
        return EXIT_OK
    finally:
        store.close()


@_guard
def cmd_sign(args) -> int:
    store = _store(args)
    try:
        ids, session, password = _login(args, store)
        row = ids.sign(session, password, args.qa_id, "performed QA")
        print(f"QA result {args.qa_id} signed by {row.printed_name} ({row.role}) at {row.signed_utc}")
        return EXIT_OK
    finally:
        store.close()


@_guard
def cmd_status(args) -> int:
    from orconsole.calibration import StoreCalibrationRepository, calibration_interlock_reason
    from orconsole.qa import StoreQaRepository, output_check_gate

    policy = _policy(args)
    store = _store(args)
    try:
        today = date.today()
        gate = output_check_gate(StoreQaRepository(store), source_serial=args.source, day=today, policy=policy)
        cal = calibration_interlock_reason(StoreCalibrationRepository(store), args.source,
                                           max_validity_days=policy.calibration_max_validity_days)
        allowed = gate.allowed and cal is None
        _emit(args, {"source_serial": args.source, "day": today.isoformat(), "treatment_allowed": allowed,
                     "output_check": gate.reason, "calibration": cal or "usable",
                     "k_out": gate.qa_result.k_out if gate.qa_result else None},
              f"source {args.source} on {today}: treatment {'allowed' if allowed else 'BLOCKED'}\n"
              f"  output check: {gate.reason}\n  calibration: {cal or 'usable'}")
        return EXIT_OK if allowed else EXIT_FAIL
    finally:
        store.close()


@_guard
def cmd_history(args) -> int:
    from orconsole.qa import StoreQaRepository
    from orconsole.qa_history import history_csv

    store = _store(args)
    try:
        text = history_csv(StoreQaRepository(store), source_serial=args.source)
    finally:
        store.close()
    if args.csv == "-":
        sys.stdout.write(text)
    else:
        with open(args.csv, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        print(f"wrote {text.count(chr(10)) - 1} QA record(s) to {args.csv}", file=sys.stderr)
    return EXIT_OK


@_guard
def cmd_report(args) -> int:
    import hashlib
    from pathlib import Path

    from logs.canonical import utc_now_iso
    from logs.report_pdf import month_bounds, render_qa_month_report
    from orconsole.calibration import StoreCalibrationRepository
    from orconsole.config import load_config
    from orconsole.qa import QaPolicy, StoreQaRepository
    from orconsole.qa_history import history_rows

    try:
        first, last = month_bounds(args.month)
    except ValueError as exc:
        print(f"qa report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    site = load_config(getattr(args, "config", None) or os.environ.get("ORCONSOLE_CONFIG") or None)
    policy = QaPolicy.from_site(site)
    by = args.by or getpass.getuser()
    store = _store(args)
    try:
        stored = [s for s in StoreQaRepository(store).records(source_serial=args.source)
                  if first <= s.record.performed_on <= last]
        calibrations = StoreCalibrationRepository(store)
        sources = []
        for serial in sorted({s.record.source_serial for s in stored}):
            active = calibrations.active(serial)
            cal_text = "no active calibration"
            if active is not None:
                rec = active.record
                usable = min(rec.valid_until, rec.calibration_date + timedelta(days=policy.calibration_max_validity_days))
                cal_text = (f"version {active.version}, dated {rec.calibration_date} by {rec.calibrated_by}, usable until "
                            f"{usable}; reference reading {rec.reference_reading_nc:g} nC; file sha256 "
                            f"{rec.file_sha256[:12]}…")
            sources.append({"serial": serial, "calibration": cal_text,
                            "rows": history_rows(s for s in stored if s.record.source_serial == serial),
                            "warning_percent": policy.k_out_warning_fraction * 100,
                            "window_percent": policy.k_out_window_fraction * 100,
                            "isotropy_tolerance_percent": policy.isotropy_tolerance_fraction * 100})
        pages = render_qa_month_report(args.output, month=args.month, site_name=site.site_name, sources=sources,
                                       generated_by=by, generated_utc=utc_now_iso())
        digest = hashlib.sha256(Path(args.output).read_bytes()).hexdigest()
        store.audit(by, "export", {"format": "pdf", "what": "qa monthly report", "month": args.month,
                                   "file": str(args.output), "sources": [s["serial"] for s in sources],
                                   "checks": len(stored), "sha256": digest})
    finally:
        store.close()
    print(f"wrote the QA report for {first.strftime('%B %Y')} ({len(stored)} check(s), {len(sources)} source(s), "
          f"{pages} page(s)) to {args.output}")
    return EXIT_OK
