"""Screenshots of the physicist's QA screens in a realistic state (docs/screenshots/09–11): a signed output
check on the simulator bench, 45 days of trends, calibration versions with a refused file. Written to the
test's temporary directory; set ORCONSOLE_QA_SCREENSHOTS=DIR to keep them (make docs)."""
from __future__ import annotations

import json
import os
import shutil
from datetime import date, timedelta

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from logs.store import Store
from simulators.sources import calibration_document
from tests.logs.helpers import PASSWORDS, make_cast
from tests.qa.history_data import seed_history
from tests.ui.test_qa_output import qa_env, run_check, sign  # noqa: F401 - fixture
from ui.context import Context
from ui.screens.calibration import CalibrationScreen
from ui.screens.qa_history import QaHistoryScreen
from ui.screens.qa_output import OutputCheckScreen

SIZE = (1600, 1000)


def keep(path, name: str) -> None:
    image = QImage(str(path))
    assert not image.isNull() and (image.width(), image.height()) == SIZE
    target = os.environ.get("ORCONSOLE_QA_SCREENSHOTS")
    if target:
        shutil.copy(path, os.path.join(target, name))


def grab(qtbot, widget, path) -> None:
    widget.resize(*SIZE)
    widget.show()
    qtbot.wait(200)
    assert widget.grab().save(str(path))


def test_output_check_screenshot(qtbot, qa_env, tmp_path):
    ctx, worker, bench, store, _ = qa_env
    bench.room.temperature_c, bench.room.pressure_kpa = 22.4, 100.8
    screen = OutputCheckScreen(ctx, runner=worker)
    qtbot.addWidget(screen)
    screen.resize(*SIZE)
    screen.show()
    run_check(qtbot, screen, temperature="22.4", pressure="1008 hPa")
    assert screen.record is not None, screen.incomplete_reason
    sign(qtbot, screen)
    qtbot.waitUntil(lambda: "ALLOWED" in screen.gate.text(), timeout=10_000)
    grab(qtbot, screen, tmp_path / "qa.png")
    keep(tmp_path / "qa.png", "09-qa-output-check.png")


def test_trends_screenshot(qtbot, styled, tmp_path):
    today = date.today()
    with Store(f"sqlite:///{tmp_path / 'h.sqlite3'}") as store:
        seed_history(store, make_cast(store), today=today)
        ctx = Context(service=None, identity=None, store=store)
        screen = QaHistoryScreen(ctx, today=lambda: today)
        qtbot.addWidget(screen)
        screen.resize(*SIZE)
        screen.show()
        screen.refresh()
        qtbot.waitUntil(lambda: len(screen.k_points) > 30, timeout=20_000)
        grab(qtbot, screen, tmp_path / "trends.png")
        ctx.close()
    keep(tmp_path / "trends.png", "10-qa-trends.png")


def test_calibration_screenshot(qtbot, styled, tmp_path, monkeypatch):
    today = date.today()
    monkeypatch.chdir(tmp_path)   # the physicist types the file name in the USB stick's folder
    with Store(f"sqlite:///{tmp_path / 'c.sqlite3'}") as store:
        cast = make_cast(store)
        ctx = Context(service=None, identity=cast.ids, store=store)
        ctx.set_session(cast.physicist)
        screen = CalibrationScreen(ctx, today=lambda: today)
        qtbot.addWidget(screen)
        screen.resize(*SIZE)
        screen.show()
        for count, age_days in enumerate((300, 12), start=1):
            path = f"XRS-0412-{(today - timedelta(days=age_days)).year}-{age_days:03d}.json"
            (tmp_path / path).write_text(json.dumps(calibration_document("clinical", today - timedelta(days=age_days)),
                                                    indent=2))
            screen.path.clear()
            qtbot.keyClicks(screen.path, path)
            qtbot.mouseClick(screen.import_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: screen.import_message.text().startswith("Imported"), timeout=20_000)
            qtbot.waitUntil(lambda: screen.table.rowCount() == count and screen.selected_doc_id() is not None,
                            timeout=20_000)
            qtbot.keyClicks(screen.password, PASSWORDS["pia"])
            screen.approve_message.clear()
            qtbot.mouseClick(screen.approve_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: screen.approve_message.text().startswith(("Approved", "Not", "Re-enter")),
                            timeout=20_000)
            assert screen.approve_message.text().startswith("Approved"), screen.approve_message.text()
        bad = calibration_document("clinical", today - timedelta(days=2))
        bad["applicators"][2]["surface_dose_rate_gy_per_min"] = 99.0
        bad["nominal_kv"] = 55.0
        (tmp_path / "XRS-0412-typo.json").write_text(json.dumps(bad, indent=2))
        screen.path.clear()
        qtbot.keyClicks(screen.path, "XRS-0412-typo.json")
        qtbot.mouseClick(screen.import_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: screen.import_message.text().startswith("Nothing"), timeout=20_000)
        qtbot.waitUntil(lambda: screen.table.rowCount() == 2 and screen.table.item(0, 0).text() == "ACTIVE",
                        timeout=20_000)
        assert screen.problems.count() == 2
        grab(qtbot, screen, tmp_path / "cal.png")
        ctx.close()
    keep(tmp_path / "cal.png", "11-calibration.png")
