"""What a person does at the console, as widget actions (clicks, typing, key presses) for the UI tests.

Only input events and reading what the screens show: no slot is called directly, no service call is made
behind the window's back (tests read the service's published status to check the outcome).
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLineEdit

from orconsole.statemachine import State
from tests.support.installation import ONCOLOGIST, PHYSICIST, THERAPIST

LEFT = Qt.MouseButton.LeftButton
PATIENT = {"mrn": "UI-000123", "name": "Tester, Tina (fictitious)", "dob": "1958-09-30", "trial": "IORT-BM-UI-01"}
WAIT_MS = 20000


def click(qtbot, widget) -> None:
    assert widget.isVisible(), f"{widget.objectName() or widget.text()} is not visible"
    assert widget.isEnabled(), f"{widget.objectName() or widget.text()} is disabled"
    qtbot.mouseClick(widget, LEFT)


def type_into(qtbot, field: QLineEdit, text: str) -> None:
    field.setFocus()
    field.selectAll()
    qtbot.keyClick(field, Qt.Key.Key_Backspace)
    qtbot.keyClicks(field, text)
    assert field.text() == text


def choose(qtbot, combo: QComboBox, data) -> None:
    """Choose an entry by arrow keys, as a person would with the keyboard."""
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Home)
    for _ in range(combo.count()):
        if combo.currentData() == data:
            return
        qtbot.keyClick(combo, Qt.Key.Key_Down)
    assert combo.currentData() == data, f"{data!r} is not in {combo.objectName()}"


def status(console):
    return console.window.ctx.status


def wait_step(qtbot, console, *steps: str, timeout_ms: int = WAIT_MS) -> None:
    qtbot.waitUntil(lambda: status(console) is not None and status(console).step.value in steps, timeout=timeout_ms)


def wait_state(qtbot, console, *states: State, timeout_ms: int = WAIT_MS) -> None:
    try:
        qtbot.waitUntil(lambda: console.window.ctx.snapshot is not None
                        and console.window.ctx.snapshot.state in states, timeout=timeout_ms)
    except Exception:
        snap = console.window.ctx.snapshot
        raise AssertionError(
            f"waited for {[s.value for s in states]}; the console shows {snap.state.value if snap else None!r}, "
            f"supervisor: {snap.last_message if snap else ''!r}, "
            f"treatment screen: {console.window.screens['treatment'].message.text()!r}") from None


def login(qtbot, console, user: str, password: str | None = None) -> None:
    w = console.window
    screen = w.login
    qtbot.waitUntil(lambda: w.stack.currentWidget() is screen and screen.isVisible(), timeout=WAIT_MS)
    type_into(qtbot, screen.username, user)
    type_into(qtbot, screen.password, password if password is not None else console.password(user))
    qtbot.keyClick(screen.password, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: w.ctx.session is not None and w.ctx.session.username == user, timeout=WAIT_MS)


def sign_out(qtbot, console) -> None:
    click(qtbot, console.window.logout_button)
    assert console.window.ctx.session is None


def go(qtbot, console, key: str) -> None:
    click(qtbot, console.window.nav_buttons[key])
    assert console.window.current_key() == key


def register_and_select_patient(qtbot, console) -> None:
    go(qtbot, console, "patient")
    s = console.window.screens["patient"]
    type_into(qtbot, s.mrn, PATIENT["mrn"])
    type_into(qtbot, s.dob, PATIENT["dob"])
    type_into(qtbot, s.full_name, PATIENT["name"])
    type_into(qtbot, s.trial_id, PATIENT["trial"])
    click(qtbot, s.register_button)
    qtbot.waitUntil(lambda: "registered" in status(console).last_message, timeout=WAIT_MS)
    click(qtbot, s.select_button)
    wait_step(qtbot, console, "patient_selected")
    assert PATIENT["name"] in s.patient_line.text()


def prescribe(qtbot, console, dose_text: str = "20", applicator_cm: float = 1.5) -> None:
    """The oncologist (signed in) types the prescription and presses 'Prescribe and calculate plan'."""
    s = console.window.screens["patient"]
    type_into(qtbot, s.prescription, dose_text)
    choose(qtbot, s.applicator, applicator_cm)
    type_into(qtbot, s.site, "left frontal resection cavity")
    type_into(qtbot, s.lesion, "metastasis 1 (NSCLC)")
    type_into(qtbot, s.cavity_cm, f"{applicator_cm:.1f}")
    type_into(qtbot, s.rx_password, console.password(ONCOLOGIST))
    click(qtbot, s.plan_button)
    qtbot.waitUntil(lambda: s.plan_error.text() != "Calculating…", timeout=WAIT_MS)


def approve(qtbot, console, user: str) -> None:
    """`user` steps up to the console and signs the approval with their own name and password."""
    go(qtbot, console, "approval")
    s = console.window.screens["approval"]
    before = len(status(console).approvals)
    type_into(qtbot, s.user, user)
    type_into(qtbot, s.password, console.password(user))
    click(qtbot, s.sign_button)
    qtbot.waitUntil(lambda: len(status(console).approvals) == before + 1 or s.error.text().startswith("Refused"),
                    timeout=WAIT_MS)
    assert not s.error.text().startswith("Refused"), s.error.text()


def plan_and_approve(qtbot, console, applicator_cm: float = 1.5) -> None:
    login(qtbot, console, ONCOLOGIST)
    register_and_select_patient(qtbot, console)
    prescribe(qtbot, console, "20", applicator_cm)
    wait_step(qtbot, console, "plan_created")
    approve(qtbot, console, ONCOLOGIST)
    approve(qtbot, console, PHYSICIST)
    wait_step(qtbot, console, "plan_approved")
    sign_out(qtbot, console)


def warm_up_and_check(qtbot, console, *, expect_ok: bool = True):
    """The therapist warms the unit up and runs the checklist with the patient's two identifiers."""
    go(qtbot, console, "checklist")
    s = console.window.screens["checklist"]
    click(qtbot, s.prepare_button)
    qtbot.waitUntil(lambda: s.prepare_button.isEnabled(), timeout=60000)
    assert not s.error.text().startswith("Warm-up refused"), s.error.text()
    type_into(qtbot, s.mrn, PATIENT["mrn"])
    type_into(qtbot, s.dob, PATIENT["dob"])
    qtbot.keyClick(s.dob, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: s.checklist is not None, timeout=WAIT_MS)
    if expect_ok:
        qtbot.waitUntil(lambda: s.checklist.ok, timeout=WAIT_MS)
    return s


def arm_and_start(qtbot, console) -> None:
    s = console.window.screens["checklist"]
    click(qtbot, s.treat_button)
    t = console.window.screens["treatment"]
    assert console.window.current_key() == "treatment"
    assert not t.start_button.isEnabled(), "START must not be possible before ARM"
    qtbot.waitUntil(t.arm_button.isEnabled, timeout=WAIT_MS)
    click(qtbot, t.arm_button)
    wait_state(qtbot, console, State.ARMED)
    qtbot.waitUntil(t.start_button.isEnabled, timeout=WAIT_MS)
    click(qtbot, t.start_button)
    wait_state(qtbot, console, State.BEAM_ON)
