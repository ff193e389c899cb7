"""Qualification row 9 through the TreatmentService: the record store is a real PostgreSQL cluster (tests/pg.py)
that is stopped before beam on (the start is refused) and during beam on (the beam goes on, the journal keeps it,
the session is written once the server is back), with the unit in `orconsole-sim` on a pty.
Never stubs the store or weakens a check: every expectation that is not met is a failure of the row.
"""
from __future__ import annotations

import contextlib
import io
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from orconsole.journal import read_journal
from orconsole.statemachine import State
from simulators.clock import MonotonicClock
from tests.qualification.harness import RECORD_HARDWARE_AGREEMENT_FRACTION, Row, Sim, site_config
from tests.qualification.special import _finish, _totals


def _status_messages(service, stop: threading.Event, into: list[str]) -> threading.Thread:
    """Collect every distinct WorkflowStatus.last_message the console showed (latest-value mailbox, 20 Hz)."""
    box = service.subscribe_status()

    def watch() -> None:
        last_seq = -1
        while not stop.is_set():
            status = box.wait_for(lambda s: s.seq != last_seq, 0.05)
            if status is None:
                continue
            last_seq = status.seq
            if status.last_message and (not into or into[-1] != status.last_message):
                into.append(status.last_message)
    thread = threading.Thread(target=watch, name="qual-status-watch", daemon=True)
    thread.start()
    return thread


def _refusal_text(call) -> tuple[bool, str]:
    """(refused, what the operator read), as the console's BeamControls shows it: a refused CommandResult, a
    WorkflowRefused, or the store's own StoreUnavailable (a StoreError with a message) are refusals. Any other
    exception propagates: a console that crashes instead of refusing fails the row."""
    from logs.store import StoreError
    from orconsole.treatment import WorkflowRefused

    try:
        result = call()
    except (WorkflowRefused, StoreError) as exc:
        return True, getattr(exc, "message", "") or str(exc)
    return (not result.ok), result.reason


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def run_store_failure_service(*, seed: int = 1, applicator_cm: float = 1.5) -> Row:
    """9 through the TreatmentService, the record store on a real PostgreSQL cluster (tests/pg.py) and the unit
    in `orconsole-sim` on a pty: the server is stopped (pg_ctl stop -m fast) before beam on — the treatment is
    refused, naming the record store — and again seconds after beam on: the beam goes on to 20 Gy, the journal
    keeps it all, the console says the delivery is safe in the journal; once the server is back the record
    writer writes the session exactly once, the record is signed and verifies."""
    from drivers.unidos import UnidosDriver
    from drivers.xrs import XrsDriver
    from logs.crypto import InstallationKey
    from logs.records import RecordBook
    from logs.store import Store
    from logs.verify import verify_stored
    from orconsole.commands import demo
    from orconsole.identity import IdentityService
    from orconsole.supervisor import TerminationStatus
    from orconsole.treatment import TreatmentService, WorkflowRefused
    from tests.pg import PostgresUnavailable, TemporaryPostgres

    started = time.monotonic()
    sid = "9-record-store-fails-service"
    row = Row(scenario=sid, title="record store (PostgreSQL) stops before / during beam on (TreatmentService)",
              fault="pg_ctl stop -m fast; start again after the beam")
    at_s = round(random.Random(f"{seed}:{sid}").uniform(2.0, 3.0), 3)     # "a couple of seconds after beam on"
    row.fault_at_s = at_s
    art = Path(tempfile.mkdtemp(prefix=f"qual-{sid}-"))
    pg = sim = store = service = None
    stop_watch = threading.Event()
    watcher = None
    messages: list[str] = []
    quiet = io.StringIO()              # the demo helpers' progress lines (stderr) are not the row's output
    try:
        try:
            pg = TemporaryPostgres().start()
        except PostgresUnavailable as exc:
            row.failures.append(f"PostgreSQL could not be started, the row cannot run: {exc}")
            return _finish(row, started)
        url = pg.create_database("records")
        sim = Sim("--applicator", str(applicator_cm), "--seed", str(seed))
        store = Store(url)
        ids = IdentityService(store, InstallationKey.load_or_create(art / "installation-key.pem"),
                              scrypt_n=demo.DEMO_SCRYPT_N)
        args = SimpleNamespace(output_check="run", calibration=None, dose="20", applicator=applicator_cm)
        with contextlib.redirect_stderr(quiet):
            passwords = demo._create_users(ids, art)
            sessions = {u: ids.login(u, passwords[u]) for u, _, _ in demo.DEMO_USERS[1:]}
            therapist, rtt_pw = sessions["demo-therapist"], passwords["demo-therapist"]
            service = TreatmentService(store=store, identity=ids, config=site_config(),
                                       xrs=XrsDriver(sim.xrs_port), readout=UnidosDriver(sim.proc.ports["unidos"]),
                                       journal_dir=art / "journal", clock=MonotonicClock(), room="qualification")
            info = service.connect_devices()
            demo._setup_calibration_and_qa(service, store, ids, sessions, passwords, args, art, info)
            service.start()
            service.prepare_devices()
            demo._plan_and_approve(service, sessions, passwords, args)
        watcher = _status_messages(service, stop_watch, messages)
        patient = service.status().patient
        checklist = service.run_checklist(therapist, medical_record_number=patient.medical_record_number,
                                          date_of_birth=patient.date_of_birth)
        if not row.check(checklist.ok, "checklist failed with the store up: "
                         + "; ".join(i.message for i in checklist.failures())):
            return _finish(row, started)

        n_on, n_off = len(sim.of("beam_on")), len(sim.of("beam_off"))   # the output check's exposures came before
        # (a) the server stops before beam on: no record draft can be stored -> the start is refused
        pg.stop_server()
        refused, text = _refusal_text(lambda: service.start_treatment(therapist))
        row.check(refused, "start_treatment armed the unit with the record store stopped")
        row.check("record store" in text.lower() and "restore" in text.lower(),
                  f"the refusal to start does not name the record store and what to do: {text!r}")
        row.notes.append(f"store stopped before the start: start refused ({_short(text)})")
        # ... and once armed (draft stored), it stops again before beam on: the service refuses beam on (its
        # account check cannot read the store), and the Supervisor's record-store interlock refuses on its own
        pg.start_server()
        result = service.start_treatment(therapist)
        if not row.check(result.ok, f"start_treatment refused with the store back: {result.reason}"):
            return _finish(row, started)
        pg.stop_server()
        refused, text = _refusal_text(lambda: service.beam_on(therapist))
        row.console_message = text
        row.check(refused, "beam on was accepted with the record store stopped")
        row.check("record store" in text.lower() and "restore" in text.lower(),
                  f"the beam-on refusal does not name the record store and what to do: {text!r}")
        # the Supervisor's own interlock (its store probe is the real health check) refuses too
        direct = service.supervisor.beam_on().result(timeout=10)
        row.check(not direct.ok and "record store" in direct.reason.lower(),
                  f"the Supervisor's beam on was not refused by the record-store interlock: {direct.reason!r}")
        row.notes.append(f"the Supervisor itself refuses: {_short(direct.reason, 400)}")
        row.check(len(sim.of("beam_on")) == n_on, "the unit switched a beam on while the record store was stopped")

        # (b) back up: the interlock dropped the arm (state approved), so the therapist arms again; beam on, and
        # the server stops a couple of seconds into the beam
        pg.start_server()
        state = service.supervisor.sm.state
        if state is not State.ARMED:
            row.notes.append(f"after the refused beam on the treatment is {state.value}: armed again")
            result = service.start_treatment(therapist)
            if not row.check(result.ok, f"arming again with the store back was refused: {result.reason}"):
                return _finish(row, started)
        result = service.beam_on(therapist)
        if not row.check(result.ok, f"beam on refused with the store back: {result.reason}"):
            return _finish(row, started)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(sim.of("beam_on")) == n_on:
            time.sleep(0.01)
        on = sim.of("beam_on")[n_on] if len(sim.of("beam_on")) > n_on else None
        if not row.check(on is not None, "the unit never reported beam on"):
            return _finish(row, started)
        time.sleep(max(0.0, at_s - (time.monotonic() - on["host_rx_s"])))
        stopped_at = time.monotonic()
        pg.stop_server()
        row.notes.append(f"PostgreSQL stopped {stopped_at - on['host_rx_s']:.2f} s after beam on "
                         f"(pg_ctl stop -m fast took {time.monotonic() - stopped_at:.2f} s)")
        box = service.subscribe_treatment()
        end = box.wait_for(lambda s: s.state in (State.COMPLETED, State.TERMINATED, State.FAULT)
                           and not s.closing_segment, service.supervisor.sm.plan.plan.preset_time_s + 30
                           if service.supervisor.sm.plan else 60)
        row.termination = f"{end.state.value} / {end.termination.value if end.termination else '-'}" if end else "none"
        row.check(end is not None and end.state is State.COMPLETED, f"the beam did not end normally: {row.termination}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(sim.of("beam_off")) == n_off:
            time.sleep(0.01)
        off = sim.of("beam_off")[n_off] if len(sim.of("beam_off")) > n_off else None
        device_gy = off["irm_dose_gy"] if off else None
        row.check(off is not None and off["host_rx_s"] > stopped_at,
                  "the beam went off before the store failed: the fault was not during beam on")
        row.notes.append(f"unit beam off by {off['cause'] if off else '?'}")
        # the record writer now retries; the console says where the delivery is
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("safe in the journal" in m for m in messages):
            time.sleep(0.05)
        shown = next((m for m in messages if "record store is unavailable" in m and "safe in the journal" in m), None)
        row.check(shown is not None, f"no message that the store is unavailable and the delivery safe in the "
                                     f"journal; the console showed {messages[-3:]}")
        if shown:
            row.console_message += " | during beam: " + shown
        readout = read_journal(service.journal_path)
        progress = [e for e in readout.entries if e.get("kind") == "progress"]
        after = [e for e in progress if e.get("data", {}).get("elapsed_s", 0) > at_s + 0.5]
        row.check(not readout.problems, f"journal problems: {readout.problems}")
        row.check(len(after) >= 2, f"the journal holds {len(after)} progress entries after the store failed")
        kinds = [e.get("kind") for e in readout.entries]
        row.check("treatment_closed" in kinds or "beam_off" in kinds, f"the journal lacks the end: {kinds[-3:]}")
        refused, text = _refusal_text(lambda: service.finish_record(therapist, rtt_pw, comments="store down"))
        row.check(refused, "finish_record signed while the store was down and the session unwritten")
        row.notes.append(f"finish_record with the store down: refused ({_short(text)})")
        # (c) the server is back: the session is written exactly once, the record signed and verified
        pg.start_server()
        restarted_at = time.monotonic()
        # the writer is in its back-off: the store answers but the session is not yet written
        try:
            early = service.finish_record(therapist, rtt_pw, comments="qualification: store outage during beam")
        except WorkflowRefused as exc:
            early = None
            row.notes.append(f"finish_record with the store back, session not yet written: refused ({exc.message})")
        if early is not None:      # the writer was quicker: then the signed record must hold the session
            sessions_then = len(RecordBook(store).load(early).sessions)
            row.check(sessions_then == 1, f"finish_record signed a record holding {sessions_then} sessions")
            row.notes.append("the record writer wrote the session before finish_record was tried (no refusal seen)")
        try:
            outcome = service.wait_for_end(60.0)
        except WorkflowRefused as exc:
            row.failures.append(f"the record writer did not write the session within 60 s of the store's return: "
                                f"{exc.message}")
            return _finish(row, started)
        row.notes.append(f"session written {time.monotonic() - restarted_at:.1f} s after PostgreSQL was back")
        row.check(outcome.termination is TerminationStatus.NORMAL, f"recorded termination {outcome.termination}")
        record_id = early or service.finish_record(therapist, rtt_pw, comments="qualification: store outage during beam")
        record = RecordBook(store).load(record_id)
        verdict = verify_stored(store, record_id)
        row.check(verdict.ok, f"the record does not verify: {list(verdict.problems)[:3]}")
        row.check(len(record.sessions) == 1, f"the session was written {len(record.sessions)} times, expected once")
        written = [e for e in store.audit_entries(action="beam session recorded")
                   if f'"{record_id}"' in e.details]
        row.check(len(written) == 1, f"{len(written)} 'beam session recorded' audit entries for the record")
        row.check(record.completion == "complete", f"record completion {record.completion}")
        row.check("continuation plan" not in (record.comments or ""),
                  "arming again after the refused beam on (same plan, no beam yet) was recorded as a continuation: "
                  f"the record's comments say {record.comments!r}")
        totals = record.totals.dose_gy
        row.recorded = (f"journal {len(readout.entries)} entries ({len(progress)} progress, {len(after)} after the "
                        f"store stopped); record {record_id[:8]}…: {len(record.sessions)} session, primary "
                        f"{totals.primary_timer_gy:.3f} / IRM {totals.secondary_irm_gy:.3f} Gy, {record.completion}, "
                        f"signed, verified={verdict.ok}")
        if row.check(device_gy is not None, "no IRM counter from the unit's beam off"):
            for name, gy in (("primary (timer)", totals.primary_timer_gy), ("secondary (IRM)", totals.secondary_irm_gy)):
                dev = abs(gy - device_gy)
                row.check(dev <= RECORD_HARDWARE_AGREEMENT_FRACTION * device_gy or dev < 0.01,
                          f"recorded {name} {gy:.4f} Gy vs the unit's IRM counter {device_gy:.4f} Gy "
                          f"({dev / device_gy:.2%} > 0.5 %)")
        _totals(row, device_gy, None)
    except Exception as exc:  # noqa: BLE001
        row.failures.append(f"harness error: {type(exc).__name__}: {exc}")
    finally:
        stop_watch.set()
        if watcher is not None:
            watcher.join(2.0)
        cleanups = [("the service", service.close if service is not None else None),
                    ("the store", store.close if store is not None else None),
                    ("the simulator", sim.stop if sim is not None else None),
                    ("PostgreSQL", (lambda: pg.stop() if pg.is_running() else shutil.rmtree(pg.tmp, ignore_errors=True))
                     if pg is not None else None)]
        for what, cleanup in cleanups:      # each one runs, whatever the one before did
            if cleanup is None:
                continue
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - reported, and the next cleanup still runs
                row.failures.append(f"closing {what} failed: {type(exc).__name__}: {exc}")
    return _finish(row, started)
