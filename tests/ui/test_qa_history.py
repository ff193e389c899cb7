"""The QA trend screen: k_out and isotropy of a source over the chosen period with the tolerance bands,
warnings and fails highlighted in words, the source and period chosen with the widgets, the CSV export."""
from __future__ import annotations

import csv
from datetime import date, timedelta

import pytest
from PySide6.QtCore import Qt

from logs.store import Store
from orconsole.qa import QaPolicy
from tests.logs.helpers import make_cast
from tests.qa.history_data import FAIL_DAY_OFFSET, SERIAL, WARNING_DAY_OFFSET, seed_history
from ui.context import Context
from ui.screens.qa_history import QaHistoryScreen

TODAY = date(2026, 11, 26)


@pytest.fixture(scope="module")
def history_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("qa-history") / "history.sqlite3"
    with Store(f"sqlite:///{path}") as store:
        cast = make_cast(store)
        seeded = seed_history(store, cast, today=TODAY)
    return f"sqlite:///{path}", seeded


@pytest.fixture
def screen(qtbot, styled, history_db):
    db, seeded = history_db
    store = Store(db)
    ctx = Context(service=None, identity=None, store=store)
    s = QaHistoryScreen(ctx, policy=QaPolicy(), today=lambda: TODAY)
    qtbot.addWidget(s)
    s.resize(1800, 1000)
    s.show()
    s.refresh()
    qtbot.waitUntil(lambda: bool(s.k_points), timeout=20_000)
    yield s, seeded
    ctx.close()
    store.close()


def test_the_trend_shows_every_output_check_of_the_period_with_the_bands(qtbot, screen):
    s, seeded = screen
    assert s.source.currentText() == SERIAL
    since = TODAY - timedelta(days=91)
    assert all(p.performed_at.date() >= since for p in s.k_points)
    assert len(s.k_points) == seeded["outputs"]            # 45 days of history all fall in the last 92 days
    plotted = {}
    for item in s.k_plot.getPlotItem().listDataItems():
        if item.name():
            ys = item.getData()[1]
            plotted[item.name().split(" ")[0]] = [] if ys is None else list(ys)
    assert sorted(plotted["pass"] + plotted["WARNING"] + plotted["FAIL"]) == sorted(p.k_out for p in s.k_points)
    assert len(plotted["WARNING"]) == 1 and plotted["WARNING"][0] == pytest.approx(1.0245, abs=2e-3)
    assert len(plotted["FAIL"]) == 1 and plotted["FAIL"][0] == pytest.approx(0.90, abs=2e-3)
    assert s.k_plot.bands == pytest.approx({"pass_low": 0.98, "pass_high": 1.02, "fail_low": 0.97, "fail_high": 1.03})
    assert s.iso_plot.bands == pytest.approx({"low_percent": -3.0, "high_percent": 3.0})
    assert len(s.iso_points) == seeded["isotropy"] and sum(not p.passed for p in s.iso_points) == 1
    assert "1 WARNING, 1 FAIL" in s.summary.text()


def test_warnings_and_fails_are_named_in_the_table(qtbot, screen):
    s, _ = screen
    results = [s.table.item(i, 3).text() for i in range(s.table.rowCount())]
    assert results.count("WARNING") == 1 and results.count("FAIL") == 1
    row = results.index("WARNING")
    assert s.table.item(row, 5).text() == "yes"                      # acknowledged (signed)
    assert (TODAY - timedelta(days=WARNING_DAY_OFFSET)).isoformat() in s.table.item(row, 0).text()
    fail_row = results.index("FAIL")
    assert s.table.item(fail_row, 4).text() == "NOT SIGNED"
    assert (TODAY - timedelta(days=FAIL_DAY_OFFSET)).isoformat() in s.table.item(fail_row, 0).text()


def test_a_shorter_period_chosen_with_the_keyboard_shows_fewer_points(qtbot, screen):
    s, seeded = screen
    s.period.setFocus()
    qtbot.keyClick(s.period, Qt.Key.Key_Up)                          # "last 31 days"
    qtbot.waitUntil(lambda: s.period.currentText() == "last 31 days" and 0 < len(s.k_points) < seeded["outputs"],
                    timeout=20_000)
    assert all(p.performed_at.date() > TODAY - timedelta(days=31) for p in s.k_points)


def test_csv_export_writes_one_row_per_check(qtbot, screen, tmp_path):
    s, seeded = screen
    target = tmp_path / "qa-history.csv"
    qtbot.keyClicks(s.csv_path, str(target))
    qtbot.mouseClick(s.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Wrote" in s.message.text() or "not written" in s.message.text(), timeout=20_000)
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert len(rows) == seeded["outputs"] + seeded["isotropy"]
    assert sorted(r["result"] for r in rows if r["kind"] == "output").count("warning") == 1
