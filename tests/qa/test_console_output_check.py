"""The daily output check inside the console (docs/qa.md §9): screen 8 runs it as ONE Supervisor command on the
thread that owns the X-ray unit (Supervisor.run_exclusive through TreatmentService.output_check_runner), never
while a treatment is armed or the beam is on; STOP ends it with the beam off; only a physicist may start it.

Supervisor rules against the fake source (fast); the whole console against the in-process simulator bench.
"""
from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from drivers.errors import DeviceError
from drivers.hal import BeamOffReason, XrsState
from orconsole.identity import PermissionDenied
from orconsole.journal import read_journal
from orconsole.qa import OutputCheckRequest
from orconsole.statemachine import State
from orconsole.supervisor import ExclusiveResult
from protocol.xrs import BeamOffReasonCode
from tests.core.test_supervisor import ok, rig, short_plan, to_ready, wait_state  # noqa: F401 - fixture reused
from tests.support.installation import PHYSICIST, THERAPIST
from tests.ui import steps
from tests.ui.conftest import console_factory, installation_without_qa, styled  # noqa: F401 - fixtures reused

TIMEOUT_S = 10.0
PLAN_HASH = bytes(range(32))


# -- the Supervisor's rules ---------------------------------------------------------------------------------


def _recording_job(calls: list):
    def job(xrs):
        calls.append(xrs)
        return "measured"
    return job


def test_run_exclusive_is_refused_while_a_treatment_is_armed_or_the_beam_is_on(rig):
    sup, xrs, box, *_ = rig
    calls: list = []
    to_ready(sup, xrs=xrs)
    refused = sup.run_exclusive(_recording_job(calls), what="the daily output check").result(timeout=TIMEOUT_S)
    assert not refused.ok and "ready" in refused.reason and "not started" in refused.reason
    ok(sup.arm())
    refused = sup.run_exclusive(_recording_job(calls)).result(timeout=TIMEOUT_S)
    assert isinstance(refused, ExclusiveResult) and not refused.ok
    assert "armed" in refused.reason, refused.reason
    ok(sup.beam_on())
    refused = sup.run_exclusive(_recording_job(calls)).result(timeout=TIMEOUT_S)
    assert not refused.ok and "beam_on" in refused.reason, refused.reason
    assert calls == [], "the job must not run at all while a treatment holds the unit"
    assert xrs.state is XrsState.BEAM_ON            # the treatment's beam was not touched by the refusal
    ok(sup.stop())
    wait_state(box, State.TERMINATED)
    done = sup.run_exclusive(_recording_job(calls)).result(timeout=TIMEOUT_S)   # no treatment armed: allowed
    assert done.ok and done.value == "measured" and len(calls) == 1, done.reason


def test_while_a_qa_exposure_runs_snapshots_say_so_and_no_treatment_command_is_accepted(rig):
    sup, xrs, box, *_ = rig
    release, started = threading.Event(), threading.Event()
    seen: dict = {}

    def job(proxy):
        seen["thread"] = threading.current_thread().name
        started.set()
        while not release.is_set():
            proxy.status()                    # the job polls the unit itself (the unit's heartbeat)
            time.sleep(0.02)
        return 1.0

    future = sup.run_exclusive(job, what="the daily output check")
    assert started.wait(TIMEOUT_S)
    snap = box.wait_for(lambda s: s.qa_exposure_running, TIMEOUT_S)
    assert snap is not None and "daily output check running" in snap.last_message
    refused = sup.load_plan(short_plan()).result(timeout=TIMEOUT_S)
    assert not refused.ok and "daily output check is running" in refused.reason
    second = sup.run_exclusive(job).result(timeout=TIMEOUT_S)
    assert not second.ok and "already running" in second.reason
    release.set()
    result = future.result(timeout=TIMEOUT_S)
    assert result.ok and result.value == 1.0 and seen["thread"] == "treatment-supervisor"
    assert box.wait_for(lambda s: not s.qa_exposure_running, TIMEOUT_S) is not None
    ok(sup.load_plan(short_plan()))           # accepted again once the job returned


def test_the_job_cannot_use_the_unit_from_another_thread_or_after_it_returned(rig):
    sup, xrs, box, *_ = rig
    kept: dict = {}
    errors: list = []

    def job(proxy):
        kept["proxy"] = proxy
        t = threading.Thread(target=lambda: _try(proxy.status, errors))
        t.start()
        t.join(TIMEOUT_S)
        return True

    assert sup.run_exclusive(job).result(timeout=TIMEOUT_S).ok
    assert len(errors) == 1 and "only the treatment supervisor's thread" in errors[0]
    _try(lambda: kept["proxy"].beam_on(plan_hash=PLAN_HASH), errors)
    assert len(errors) == 2 and "withdrawn" in errors[1]


def _try(call, errors: list) -> None:
    try:
        call()
    except DeviceError as exc:
        errors.append(exc.message)


@pytest.mark.parametrize("stop", ["stop", "emergency_stop"])
def test_stop_cancels_a_running_qa_exposure_and_the_beam_goes_off(rig, stop):
    sup, xrs, box, journal_path, *_ = rig
    cancelled, beam_on = threading.Event(), threading.Event()

    def exposure(proxy):
        proxy.arm(backup_time_s=60.0, irm_limit_gy=5.0, plan_hash=PLAN_HASH)
        proxy.beam_on(plan_hash=PLAN_HASH)
        beam_on.set()
        while not cancelled.is_set():         # as OutputCheck does: polls, stops at the cancel flag
            proxy.status()
            time.sleep(0.02)
        raise RuntimeError("the output check was cancelled")

    future = sup.run_exclusive(exposure, what="the daily output check", cancel=cancelled.set)
    assert beam_on.wait(TIMEOUT_S)
    assert box.wait_for(lambda s: s.qa_exposure_running and s.device_state == "beam_on", TIMEOUT_S) is not None
    result = getattr(sup, stop)().result(timeout=TIMEOUT_S)
    assert result.ok and "daily output check was cancelled" in result.reason, result.reason
    ended = future.result(timeout=TIMEOUT_S)
    assert not ended.ok and isinstance(ended.error, RuntimeError) and "cancelled" in ended.reason
    assert xrs.state is XrsState.READY and BeamOffReason.OPERATOR_STOP in xrs.beam_off_reasons
    snap = box.wait_for(lambda s: not s.qa_exposure_running and s.device_state == "ready", TIMEOUT_S)
    assert snap is not None
    readout = read_journal(journal_path)
    qa = [e for e in readout.entries if e["kind"].startswith("qa_exposure")]
    assert [e["kind"] for e in qa] == ["qa_exposure_started", "qa_exposure_ended"]
    assert qa[-1]["data"]["outcome"] == "cancelled" and readout.unfinished == ()


# -- screen 8 in the console, on the simulator bench ----------------------------------------------------------


def _enter_conditions_and_start(qtbot, console):
    steps.go(qtbot, console, "qa_output")
    screen = console.window.screens["qa_output"]
    steps.type_into(qtbot, screen.temperature, "21.5 C")
    steps.type_into(qtbot, screen.pressure, "101.1 kPa")
    steps.type_into(qtbot, screen.chamber, "34013-0123")
    steps.click(qtbot, screen.start_button)
    return screen


def _run_checklist(qtbot, console):
    steps.go(qtbot, console, "checklist")
    s = console.window.screens["checklist"]
    s.checklist = None
    steps.type_into(qtbot, s.mrn, steps.PATIENT["mrn"])
    steps.type_into(qtbot, s.dob, steps.PATIENT["dob"])
    qtbot.keyClick(s.dob, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: s.checklist is not None, timeout=steps.WAIT_MS)
    return s.checklist.item("output_check"), s


def test_the_physicist_runs_the_output_check_on_screen_8_and_the_checklist_then_shows_it_passed(
        installation_without_qa, console_factory, qtbot):
    console = console_factory(installation_without_qa)
    steps.login(qtbot, console, PHYSICIST)
    before, _ = _run_checklist(qtbot, console)
    assert not before.ok and "no output check" in before.message
    screen = _enter_conditions_and_start(qtbot, console)
    assert not screen.start_button.isEnabled() and screen.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: console.window.ctx.snapshot.qa_exposure_running, timeout=steps.WAIT_MS)
    qtbot.waitUntil(lambda: screen.record is not None or bool(screen.incomplete_reason), timeout=90_000)
    assert screen.record is not None, screen.incomplete_reason
    assert screen.result.text() == "PASS" and screen.record.performed_by == PHYSICIST
    assert screen.record.instruments.chamber_serial == "34013-0123"
    qtbot.waitUntil(lambda: not console.window.ctx.snapshot.qa_exposure_running, timeout=steps.WAIT_MS)
    qtbot.waitUntil(screen.sign_button.isEnabled, timeout=steps.WAIT_MS)        # stored
    steps.type_into(qtbot, screen.password, console.password(PHYSICIST))
    steps.click(qtbot, screen.sign_button)
    qtbot.waitUntil(lambda: screen.sign_status.text().startswith("Signed 'performed QA'"), timeout=steps.WAIT_MS)
    qtbot.waitUntil(lambda: "ALLOWED" in screen.gate.text(), timeout=steps.WAIT_MS)
    after, checklist_screen = _run_checklist(qtbot, console)
    assert after.ok and screen.record.qa_id in after.message, after.message
    qtbot.waitUntil(lambda: any(label.text().startswith("✓ Output check passed today — PASSED")
                                for label in checklist_screen.findChildren(QLabel, "check_output_check")),
                    timeout=steps.WAIT_MS)


def test_stop_during_the_output_check_cancels_it_with_the_beam_off(installation_without_qa, console_factory,
                                                                     qtbot):
    console = console_factory(installation_without_qa)
    steps.login(qtbot, console, PHYSICIST)
    screen = _enter_conditions_and_start(qtbot, console)
    qtbot.waitUntil(lambda: console.bench.xrs_model.status().hv_on, timeout=60_000)   # a reading's exposure
    qtbot.keyClick(console.window, Qt.Key.Key_Escape)                                 # STOP
    qtbot.waitUntil(lambda: bool(screen.incomplete_reason) or screen.record is not None, timeout=steps.WAIT_MS)
    assert screen.record is None and "cancelled" in screen.incomplete_reason
    assert screen.result.text().startswith("NOT COMPLETED")
    unit = console.bench.xrs_model.status()
    assert not unit.hv_on and unit.last_beam_off_reason is BeamOffReasonCode.OPERATOR_STOP
    qtbot.waitUntil(lambda: not console.window.ctx.snapshot.qa_exposure_running, timeout=steps.WAIT_MS)
    assert screen.start_button.isEnabled()             # a new check may be started


def test_only_a_physicist_may_start_the_output_check_in_the_console(installation_without_qa, console_factory,
                                                                    qtbot):
    console = console_factory(installation_without_qa)
    service = console.service
    therapist = console.parts.identity.login(THERAPIST, console.password(THERAPIST))
    runner = service.output_check_runner(session_of=lambda: therapist)
    xrs_id, _ = runner.connect().result(timeout=TIMEOUT_S)
    calibration = None          # refused before anything reads it
    with pytest.raises(PermissionDenied, match="cannot perform the daily output check"):
        runner.submit(OutputCheckRequest("21.5", "101.1", performed_by=THERAPIST), calibration)
    nobody = service.output_check_runner(session_of=lambda: None)
    with pytest.raises(Exception, match="sign in as a medical physicist"):
        nobody.submit(OutputCheckRequest("21.5", "101.1", performed_by=THERAPIST), calibration)
    assert not runner.busy
    assert not [e for e in read_journal(service.journal_path).entries if e["kind"] == "qa_exposure_started"]
