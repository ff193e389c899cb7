"""The calibration screen, driven through its widgets: a bad file lists every problem with file, line and
field and imports nothing; a good file becomes a new version, inactive until the physicist approves it with
the password; the active version is marked and its expiry shown; an expired calibration holds treatment."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from PySide6.QtCore import Qt

from logs.store import Store
from orconsole.calibration import StoreCalibrationRepository
from simulators.sources import calibration_document
from tests.logs.helpers import PASSWORDS, make_cast
from ui.context import Context
from ui.screens.calibration import CalibrationScreen

TODAY = date(2026, 11, 26)


@pytest.fixture
def cal_env(qtbot, styled, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'cal.sqlite3'}")
    cast = make_cast(store)
    ctx = Context(service=None, identity=cast.ids, store=store)
    ctx.set_session(cast.physicist)
    screen = CalibrationScreen(ctx, today=lambda: TODAY)
    qtbot.addWidget(screen)
    screen.resize(1700, 950)
    screen.show()
    yield screen, store, cast, ctx
    ctx.close()
    store.close()


def write_doc(tmp_path, name, **changes) -> str:
    doc = calibration_document("clinical", TODAY - timedelta(days=30))
    doc.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return str(path)


def import_path(qtbot, screen, path):
    screen.path.clear()
    qtbot.keyClicks(screen.path, path)
    qtbot.mouseClick(screen.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.import_message.text().startswith(("Imported", "Nothing")), timeout=20_000)


def test_a_bad_file_lists_every_problem_with_file_line_and_field_and_imports_nothing(qtbot, cal_env, tmp_path):
    screen, store, *_ = cal_env
    path = write_doc(tmp_path, "bad.json", nominal_kv=500.0, qa_exposure_s=-1)
    import_path(qtbot, screen, path)
    problems = [screen.problems.item(i).text() for i in range(screen.problems.count())]
    assert len(problems) == 2, problems
    assert any("bad.json, line " in p and "field 'nominal_kv'" in p for p in problems)
    assert any("field 'qa_exposure_s'" in p for p in problems)
    assert "Nothing imported: 2 problem(s)" in screen.import_message.text()
    assert store.find_documents(kind="calibration") == []


def test_import_then_approve_with_the_password_marks_the_active_version_and_its_expiry(qtbot, cal_env, tmp_path):
    screen, store, cast, _ = cal_env
    import_path(qtbot, screen, write_doc(tmp_path, "good.json"))
    assert "NOT ACTIVE" in screen.import_message.text()
    qtbot.waitUntil(lambda: screen.table.rowCount() == 1, timeout=20_000)
    serial = screen.source.currentText()
    assert "HELD" in screen.state.text() and "no active calibration" in screen.state.text()
    assert screen.table.item(0, 0).text() == ""
    screen.table.selectRow(0)
    qtbot.keyClicks(screen.password, "wrong-password")
    qtbot.mouseClick(screen.approve_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.approve_message.text().startswith(("Not", "Approved")), timeout=20_000)
    assert screen.approve_message.text().startswith("Not approved")
    assert StoreCalibrationRepository(store).active(serial) is None
    screen.table.selectRow(0)
    qtbot.keyClicks(screen.password, PASSWORDS["pia"])
    qtbot.keyClick(screen.password, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: screen.approve_message.text().startswith(("Not", "Approved")), timeout=20_000)
    assert screen.approve_message.text().startswith("Approved"), screen.approve_message.text()
    qtbot.waitUntil(lambda: screen.table.item(0, 0) is not None and screen.table.item(0, 0).text() == "ACTIVE",
                    timeout=20_000)
    assert "usable today" in screen.state.text()
    active = StoreCalibrationRepository(store).active(serial)
    until = min(active.record.valid_until, active.record.calibration_date + timedelta(days=366))
    assert screen.table.item(0, 3).text() == f"{until.isoformat()} ({(until - TODAY).days} days left)"
    doc_id = active.doc_id
    assert [s.meaning for s in store.signatures_for(doc_id)] == ["approved calibration"]
    # the same file again is refused: versions never change and duplicates are not stored
    import_path(qtbot, screen, write_doc(tmp_path, "good.json"))
    assert "already stored as version 1" in screen.problems.item(0).text()


def test_an_expired_active_calibration_is_shown_as_expired_and_holding_treatment(qtbot, cal_env, tmp_path):
    screen, store, cast, ctx = cal_env
    import_path(qtbot, screen, write_doc(tmp_path, "good.json"))
    qtbot.waitUntil(lambda: screen.table.rowCount() == 1, timeout=20_000)
    screen.table.selectRow(0)
    qtbot.keyClicks(screen.password, PASSWORDS["pia"])
    qtbot.mouseClick(screen.approve_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.approve_message.text().startswith("Approved"), timeout=20_000)
    later = CalibrationScreen(ctx, today=lambda: TODAY + timedelta(days=400))
    qtbot.addWidget(later)
    later.source.setCurrentText(screen.source.currentText())
    later.refresh()
    qtbot.waitUntil(lambda: later.table.rowCount() == 1 and "HELD" in later.state.text(), timeout=20_000)
    assert "expired" in later.state.text() and "EXPIRED" in later.table.item(0, 3).text()
    assert later.table.item(0, 0).text() == "ACTIVE"
