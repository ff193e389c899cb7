"""The QA screens in the console window: the physicist reaches them from the navigation (therapists do not
see them); the trend and calibration screens show the installation's data; the output check screen is ready to
start on the treatment supervisor's thread (the check itself: tests/qa/test_console_output_check.py)."""
from __future__ import annotations

from tests.support.installation import PHYSICIST, THERAPIST
from tests.ui import steps


def test_the_physicist_reaches_the_qa_screens_and_the_therapist_does_not_see_them(installation, console_factory,
                                                                                   qtbot):
    console = console_factory(installation)
    window = console.window
    steps.login(qtbot, console, THERAPIST)
    assert all(window.nav_buttons[k].isHidden() for k in ("qa_output", "qa_history", "calibration"))
    steps.sign_out(qtbot, console)
    steps.login(qtbot, console, PHYSICIST)
    assert not any(window.nav_buttons[k].isHidden() for k in ("qa_output", "qa_history", "calibration"))
    steps.click(qtbot, window.nav_buttons["calibration"])
    calibration = window.screens["calibration"]
    qtbot.waitUntil(lambda: calibration.table.rowCount() >= 1, timeout=20_000)
    assert any(calibration.table.item(r, 0).text() == "ACTIVE" for r in range(calibration.table.rowCount()))
    assert "usable today" in calibration.state.text()
    steps.click(qtbot, window.nav_buttons["qa_history"])
    history = window.screens["qa_history"]
    qtbot.waitUntil(lambda: len(history.k_points) >= 1, timeout=20_000)      # today's output check of the setup
    steps.click(qtbot, window.nav_buttons["qa_output"])
    output = window.screens["qa_output"]
    assert window.stack.currentWidget() is output
    assert output.start_button.isEnabled() and output.runner is not None     # the service's runner
    assert output.input_error.text() == ""
