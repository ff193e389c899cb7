"""Refusals seen at the console, each with its reason in words and no beam: a prescription above the
ceiling, the wrong applicator mounted on the unit (checklist NOT PASSED, nothing armed), no output check
today (planning refused)."""
from __future__ import annotations

from orconsole.statemachine import State
from tests.support.installation import ONCOLOGIST, THERAPIST
from tests.ui import steps


def _no_beam(console) -> bool:
    status = console.bench.xrs_model.status()
    return status.beam_on_time_s == 0 and not status.hv_on and status.armed_plan_hash is None


def test_a_prescription_of_25_gy_is_refused_with_the_reason_and_no_plan_is_made(installation, console_factory,
                                                                                  qtbot):
    console = console_factory(installation)
    steps.login(qtbot, console, ONCOLOGIST)
    steps.register_and_select_patient(qtbot, console)
    steps.prescribe(qtbot, console, "25")
    screen = console.window.screens["patient"]
    assert screen.plan_error.text().startswith("Refused:")
    assert "25 Gy exceeds the hard ceiling" in screen.plan_error.text()
    assert steps.status(console).plan is None and steps.status(console).step.value == "patient_selected"
    assert screen.plan_text.text() == "No plan yet"
    assert _no_beam(console)


def test_the_wrong_applicator_on_the_unit_fails_the_checklist_and_arming_is_impossible(installation, console_factory,
                                                                                        qtbot):
    console = console_factory(installation)
    steps.plan_and_approve(qtbot, console, applicator_cm=1.5)
    console.bench.xrs_model.mount_applicator(3.0)          # someone mounted the 3.0 cm sphere
    steps.login(qtbot, console, THERAPIST)
    checklist = steps.warm_up_and_check(qtbot, console, expect_ok=False)
    qtbot.waitUntil(lambda: checklist.checklist is not None and not checklist.checklist.item("applicator").ok,
                    timeout=10000)
    label = next(lbl for lbl in checklist._item_labels if lbl.objectName() == "check_applicator")
    assert "NOT PASSED" in label.text()
    assert "3.0 cm applicator" in label.text() and "mount the 1.5 cm applicator" in label.text()
    assert "1 CHECK NOT PASSED" in checklist.summary.text()
    assert checklist._item_labels[0] is label, "what blocks the treatment is listed first"
    assert not checklist.treat_button.isEnabled()
    steps.go(qtbot, console, "treatment")
    assert not console.window.screens["treatment"].arm_button.isEnabled()
    assert _no_beam(console)
    # the applicator is put right: the live re-check passes without retyping anything
    console.bench.xrs_model.mount_applicator(1.5)
    steps.go(qtbot, console, "checklist")
    qtbot.waitUntil(lambda: checklist.checklist.ok, timeout=10000)
    assert checklist.treat_button.isEnabled()


def test_without_an_output_check_today_the_plan_is_refused(installation_without_qa, console_factory, qtbot):
    console = console_factory(installation_without_qa)
    steps.login(qtbot, console, ONCOLOGIST)
    steps.register_and_select_patient(qtbot, console)
    steps.prescribe(qtbot, console, "20")
    screen = console.window.screens["patient"]
    assert screen.plan_error.text().startswith("Refused:")
    assert "no output check" in screen.plan_error.text()
    assert steps.status(console).plan is None
    assert console.window.ctx.snapshot.state is not State.ARMED
    assert _no_beam(console)
