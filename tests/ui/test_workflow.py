"""The whole treatment through the console window's widgets, on the service `orconsole.wiring` builds
against the in-process simulators: sign in, patient, prescription, both approvals, warm-up and checklist,
arm and start, pause with a reason and resume, completion, record signing, PDF and DICOM export."""
from __future__ import annotations

import time

import pytest

from logs.records import RecordBook
from logs.verify import verify_stored
from orconsole.statemachine import State
from tests.support.installation import THERAPIST
from tests.ui import steps


def test_the_whole_treatment_through_the_window_ends_in_a_signed_exported_record(installation, console_factory,
                                                                                  qtbot):
    console = console_factory(installation)
    w = console.window
    # -- physician: patient, prescription; physician and physicist approvals
    steps.plan_and_approve(qtbot, console)
    plan = steps.status(console).plan
    assert plan.prescription_dose_gy == 20.0 and plan.applicator_cm == 1.5
    assert "✓ physicist" in w.screens["approval"].approvals.text() or \
        "medical physicist" in w.screens["approval"].approvals.text()

    # -- therapist: warm-up, checklist, arm, start
    steps.login(qtbot, console, THERAPIST)
    checklist = steps.warm_up_and_check(qtbot, console)
    assert all(label.text().splitlines()[0].endswith("PASSED") for label in checklist._item_labels)
    assert checklist.treat_button.isEnabled()
    steps.arm_and_start(qtbot, console)
    t = w.screens["treatment"]
    assert "BEAM ON" in w.banner.text()

    # -- pause, the reason, resume
    qtbot.waitUntil(lambda: w.ctx.snapshot.elapsed_s > 2.0, timeout=15000)
    steps.click(qtbot, t.pause_button)
    steps.wait_state(qtbot, console, State.PAUSED)
    qtbot.waitUntil(t.reason_panel.isVisible, timeout=5000)
    steps.type_into(qtbot, t.reason_panel.text, "surgeon asked for a pause")
    steps.click(qtbot, t.reason_panel.record_button)
    assert t.reasons == ["surgeon asked for a pause"]
    held = w.ctx.snapshot.elapsed_s
    qtbot.wait(600)
    assert w.ctx.snapshot.elapsed_s == pytest.approx(held, abs=0.05), "the timer holds while paused"
    assert "PAUSED" in w.banner.text()
    qtbot.waitUntil(lambda: not w.ctx.snapshot.closing_segment and t.resume_button.isEnabled(), timeout=10000)
    steps.click(qtbot, t.resume_button)
    steps.wait_state(qtbot, console, State.BEAM_ON)
    steps.wait_state(qtbot, console, State.COMPLETED, State.TERMINATED, State.FAULT, timeout_ms=30000)
    snap = w.ctx.snapshot
    assert snap.state is State.COMPLETED, snap.last_message
    assert t.remaining.text() == "00:00.0"
    steps.wait_step(qtbot, console, "delivery_ended")
    assert "sign the delivery record" in w.next_step.text()

    # -- the record: review, sign, export
    qtbot.waitUntil(t.record_button.isVisible, timeout=10000)
    steps.click(qtbot, t.record_button)
    assert w.current_key() == "record"
    r = w.screens["record"]
    qtbot.waitUntil(lambda: "Record " in r.summary.text(), timeout=5000)
    assert "awaiting signature" in r.summary.text()
    steps.type_into(qtbot, r.comments, "uneventful")
    steps.type_into(qtbot, r.password, console.password(THERAPIST))
    steps.click(qtbot, r.sign_button)
    steps.wait_step(qtbot, console, "record_signed")
    qtbot.waitUntil(lambda: "signed and sealed" in r.message.text(), timeout=10000)
    assert not r.sign_button.isEnabled()
    steps.click(qtbot, r.pdf_button)
    qtbot.waitUntil(lambda: "PDF written" in r.message.text(), timeout=30000)
    steps.click(qtbot, r.dicom_button)
    qtbot.waitUntil(lambda: "DCM written" in r.message.text() or "refused" in r.message.text(), timeout=30000)
    assert "DCM written" in r.message.text(), r.message.text()
    assert [p.suffix for p in r.exported] == [".pdf", ".dcm"]
    assert all(p.exists() and p.stat().st_size > 1000 for p in r.exported)
    steps.click(qtbot, r.refresh_button)
    qtbot.waitUntil(lambda: r.table.rowCount() == 1, timeout=10000)
    assert r.table.item(0, 0).text() == "✓ VERIFIED"

    store = console.parts.store
    record_id = steps.status(console).record_id
    record = RecordBook(store).load(record_id)
    assert verify_stored(store, record_id).ok
    assert record.completion == "complete" and len(record.sessions) == 1
    assert record.sessions[0].dose_gy.secondary_irm_gy == pytest.approx(20.0, rel=0.01)
    assert record.interruptions and record.interruptions[0].initiated_by == "operator"
    assert record.interruptions[0].delivered_so_far_gy < 19.0
    signatures = sorted(s.meaning for s in store.signatures_for(record_id))
    assert signatures == ["performed delivery"]


def test_the_next_step_is_always_said_in_words(installation, console_factory, qtbot):
    console = console_factory(installation)
    steps.login(qtbot, console, "demo-oncologist")
    assert console.window.next_step.text().startswith("NEXT: select the patient")
    steps.register_and_select_patient(qtbot, console)
    qtbot.waitUntil(lambda: "prescribes" in console.window.next_step.text(), timeout=5000)
