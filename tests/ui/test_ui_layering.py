"""ui/ is thin: it never imports drivers/, and only the developer panel touches simulators/."""
from __future__ import annotations

from pathlib import Path

from tests.test_layering import imported_top_names

UI = Path(__file__).resolve().parents[2] / "ui"


def test_ui_never_imports_drivers_and_only_the_dev_panel_imports_simulators():
    problems = []
    for path in sorted(UI.rglob("*.py")):
        names = imported_top_names(path)
        if "drivers" in names:
            problems.append(f"{path.name} imports drivers")
        if "simulators" in names and path.name != "dev_panel.py":
            problems.append(f"{path.name} imports simulators")
    assert not problems, problems
    assert (UI / "dev_panel.py").exists()


def test_no_modal_exec_in_ui():
    """No QMessageBox/QDialog .exec(): a modal loop must never sit in front of data handling."""
    offenders = [p.name for p in UI.rglob("*.py") if ".exec(" in p.read_text(encoding="utf-8")
                 and p.name != "app.py"]
    assert not offenders, offenders
    app_text = (UI / "app.py").read_text(encoding="utf-8")
    assert app_text.count(".exec(") == 1 and "app.exec()" in app_text
