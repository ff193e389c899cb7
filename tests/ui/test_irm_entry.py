"""Record screen after a delivery whose link stayed lost: it says the monitor dose is not settled and lets a
physicist enter the IRM dose the unit shows (refused with a reason when it is not a dose or is below the
console's last reading); the session then holds the entered dose."""
from __future__ import annotations

from types import SimpleNamespace

from logs.records import RecordBook
from orconsole.commands.demo import _plan_and_approve
from orconsole.statemachine import State
from tests.support.installation import ONCOLOGIST, PHYSICIST, THERAPIST
from tests.ui import steps


def _deliver_and_lose_the_link(console) -> tuple[str, float, float]:
    service, bench = console.service, console.bench
    sessions = {u: console.parts.identity.login(u, console.password(u)) for u in (THERAPIST, PHYSICIST, ONCOLOGIST)}
    passwords = {u: console.password(u) for u in sessions}
    therapist = sessions[THERAPIST]
    service.prepare_devices()
    _plan_and_approve(service, sessions, passwords, SimpleNamespace(dose="20", applicator=3.0))
    patient = service.status().patient
    assert service.run_checklist(therapist, medical_record_number=patient.medical_record_number,
                                 date_of_birth=patient.date_of_birth).ok
    box = service.subscribe_treatment()
    assert service.start_treatment(therapist).ok and service.beam_on(therapist).ok
    assert box.wait_for(lambda s: s.state is State.BEAM_ON and s.elapsed_s >= 2.0, 20) is not None
    bench.faults["xrs"].silent = True                 # the link stays down for the rest of the test
    outcome = service.wait_for_end(30.0)
    recorded_gy = RecordBook(console.parts.store).load(outcome.record_id).sessions[-1].dose_gy.secondary_irm_gy
    return outcome.record_id, recorded_gy, bench.xrs_model.status().irm_dose_gy


def test_a_physicist_enters_the_units_irm_reading_on_the_record_screen(installation, console_factory, qtbot):
    console = console_factory(installation, applicator_cm=3.0)
    record_id, recorded_gy, unit_gy = _deliver_and_lose_the_link(console)
    assert recorded_gy < unit_gy
    steps.login(qtbot, console, PHYSICIST)
    steps.go(qtbot, console, "record")
    screen = console.window.screens["record"]
    qtbot.waitUntil(screen.irm_box.isVisible, timeout=10000)
    assert "not settled" in screen.irm_why.text() and f"{recorded_gy:.4f} Gy" in screen.irm_why.text()
    qtbot.waitUntil(lambda: "settle the monitor dose" in console.window.next_step.text(), timeout=5000)

    for text, expected in (("twelve", "is not a dose in Gy"), (f"{recorded_gy - 1:.4f}", "below the console's last")):
        steps.type_into(qtbot, screen.irm_reading, text)
        steps.type_into(qtbot, screen.irm_password, console.password(PHYSICIST))
        steps.click(qtbot, screen.irm_button)
        qtbot.waitUntil(lambda: expected in screen.message.text(), timeout=10000)
        assert screen.message.text().startswith("Refused")

    steps.type_into(qtbot, screen.irm_reading, f"{unit_gy:.4f}")
    steps.type_into(qtbot, screen.irm_password, console.password(PHYSICIST))
    steps.click(qtbot, screen.irm_button)
    qtbot.waitUntil(lambda: screen.message.text().startswith(("Entered", "Refused")), timeout=10000)
    assert screen.message.text().startswith("Entered"), screen.message.text()
    qtbot.waitUntil(lambda: not screen.irm_box.isVisible(), timeout=10000)
    session = RecordBook(console.parts.store).load(record_id).sessions[-1]
    assert abs(session.dose_gy.secondary_irm_gy - round(unit_gy, 4)) < 1e-9
    assert f"entered by {PHYSICIST}" in session.termination_detail
