"""The physicist's output check screen, driven through its widgets against the in-process simulator bench:
the check runs on the device-owning worker (never the GUI thread), shows progress, readings, k_TP, k_out and
the result in words; the physicist signs with the password; a warning needs a signed acknowledgement; a
10 %-low source fails and the treatment checklist's output-check item then says so."""
from __future__ import annotations

import itertools
import json
import threading
from datetime import date, timedelta

import pytest
from PySide6.QtCore import Qt

from drivers.unidos import UnidosDriver
from drivers.xrs import XrsDriver
from logs.store import Store
from orconsole.calibration import StoreCalibrationRepository, approve_calibration, import_calibration
from orconsole.models import QaOutcome
from orconsole.qa import OutputCheckWorker, QaPolicy, StoreQaRepository, output_check_gate
from simulators.bench import get_bench, reset_benches
from simulators.sources import calibration_document
from tests.logs.helpers import PASSWORDS, make_cast
from ui.context import Context
from ui.screens.qa_output import OutputCheckScreen

_names = itertools.count()
SERIAL = "XRS-SIM-FAST-01"
CHECK_TIMEOUT_MS = 90_000


@pytest.fixture
def qa_env(tmp_path, styled):
    cal = tmp_path / "fast.json"
    cal.write_text(json.dumps(calibration_document("fast", date.today() - timedelta(days=1)), indent=2))
    store = Store(f"sqlite:///{tmp_path / 'qa-ui.sqlite3'}")
    cast = make_cast(store)
    repo = StoreCalibrationRepository(store)
    stored = import_calibration(repo, cal, actor="pia", max_dose_rate_gy_per_min=200.0)
    approve_calibration(repo, SERIAL, stored.doc_id, physicist="pia")
    name = f"qa-ui-{next(_names)}"
    bench = get_bench(name, seed="5")
    bench.unidos_model.warmup_s = 0.2
    bench.unidos_model.zero_duration_s = 0.2
    bench.room.temperature_c, bench.room.pressure_kpa = 20.0, 101.325
    bench.test_name = name
    worker = OutputCheckWorker(XrsDriver(f"sim://xrs?bench={name}"), UnidosDriver(f"sim://unidos?bench={name}"),
                               policy=QaPolicy())
    ctx = Context(service=None, identity=cast.ids, store=store)
    ctx.set_session(cast.physicist)
    yield ctx, worker, bench, store, cast
    worker.close()
    ctx.close()
    store.close()
    reset_benches()


def make_screen(qtbot, ctx, worker):
    screen = OutputCheckScreen(ctx, runner=worker)
    qtbot.addWidget(screen)
    screen.resize(1600, 900)
    screen.show()
    return screen


def run_check(qtbot, screen, temperature="20.0", pressure="1013.25 hPa"):
    qtbot.keyClicks(screen.temperature, temperature)
    qtbot.keyClicks(screen.pressure, pressure)
    qtbot.keyClicks(screen.chamber, "34013-0007")
    qtbot.mouseClick(screen.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.record is not None or bool(screen.incomplete_reason), timeout=CHECK_TIMEOUT_MS)
    qtbot.waitUntil(lambda: screen.sign_button.isEnabled() or bool(screen.incomplete_reason), timeout=10_000)


def sign(qtbot, screen, password=PASSWORDS["pia"]):
    qtbot.keyClicks(screen.password, password)
    qtbot.mouseClick(screen.sign_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Signed" in screen.sign_status.text() or "Not signed" in screen.sign_status.text(),
                    timeout=20_000)


def test_a_nominal_check_passes_shows_its_figures_and_clears_the_source_once_signed(qtbot, qa_env):
    ctx, worker, bench, store, cast = qa_env
    screen = make_screen(qtbot, ctx, worker)
    gui_thread = threading.get_ident()
    seen_threads = set()
    original = screen._on_progress
    screen._on_progress = lambda p: (seen_threads.add(threading.get_ident()), original(p))
    run_check(qtbot, screen)
    assert screen.record is not None, screen.incomplete_reason
    assert gui_thread not in seen_threads and seen_threads          # progress came from the device thread
    assert screen.result.text().startswith("PASS")
    assert "k_TP = 1.00000" in screen.figures.text() and "k_out = " in screen.figures.text()
    used = [r for r in screen.record.readings if r.attempt == screen.record.used_attempt]
    assert len(used) == 3 and f"readings used (series {screen.record.used_attempt})" in screen.readings.text()
    assert all(f"{r.charge_nc:.4f}" in screen.readings.text() for r in screen.record.readings)
    assert not bench.xrs_model.hv_on
    repo = StoreQaRepository(store)
    assert not output_check_gate(repo, source_serial=SERIAL, day=date.today()).allowed   # unsigned
    sign(qtbot, screen, "wrong-password")
    assert "Not signed" in screen.sign_status.text()
    sign(qtbot, screen)
    assert "Dr. Pia Physicist" in screen.sign_status.text()
    qtbot.waitUntil(lambda: "ALLOWED" in screen.gate.text(), timeout=10_000)
    assert output_check_gate(repo, source_serial=SERIAL, day=date.today()).allowed
    assert [s.meaning for s in store.signatures_for(screen.record.qa_id)] == ["performed QA"]


def test_implausible_entries_are_refused_on_screen_before_any_device_traffic(qtbot, qa_env):
    ctx, worker, bench, store, _ = qa_env
    screen = make_screen(qtbot, ctx, worker)
    qtbot.keyClicks(screen.temperature, "22")
    qtbot.keyClicks(screen.pressure, "1013")              # no unit: hPa? refused, never guessed
    qtbot.keyClick(screen.pressure, Qt.Key.Key_Return)
    assert "mark the unit" in screen.input_error.text()
    assert screen.start_button.isEnabled() and screen.record is None
    assert not bench.xrs_model.hv_on


def test_a_ten_percent_low_source_fails_in_red_words_and_the_treatment_checklist_says_so(qtbot, qa_env,
                                                                                        tmp_path):
    ctx, worker, bench, store, _ = qa_env
    bench.xrs_model.inject("output_drop", fraction=0.10)
    screen = make_screen(qtbot, ctx, worker)
    run_check(qtbot, screen)
    assert screen.record is not None and screen.record.result is QaOutcome.FAIL
    assert screen.result.text().startswith("FAIL") and "no treatment" in screen.result.text()
    assert theme_red() in screen.result.styleSheet()
    qtbot.waitUntil(lambda: "BLOCKED" in screen.gate.text(), timeout=10_000)
    assert "FAILED" in screen.gate.text()
    # the QA session ends; the treatment console connects to the same unit and its checklist says why not
    worker.close()
    from orconsole.config import SiteConfig
    from orconsole.treatment import TreatmentService
    from simulators.clock import MonotonicClock
    service = TreatmentService(store=store, identity=ctx.identity, config=SiteConfig(),
                               xrs=XrsDriver(f"sim://xrs?bench={bench.test_name}"), readout=None,
                               journal_dir=tmp_path, clock=MonotonicClock())
    try:
        service.connect_devices()
        checklist = service.run_checklist(ctx.session, medical_record_number="MRN-1", date_of_birth=date(1960, 1, 1))
        item = checklist.item("output_check")
        assert not item.ok and "FAILED" in item.message and screen.record.qa_id in item.message
        assert not checklist.ok
    finally:
        service.close()


def test_a_warning_is_signed_then_acknowledged_with_the_password(qtbot, qa_env):
    ctx, worker, bench, store, _ = qa_env
    bench.xrs_model.inject("output_drop", fraction=0.025)
    screen = make_screen(qtbot, ctx, worker)
    run_check(qtbot, screen)
    assert screen.record is not None and screen.record.result is QaOutcome.WARNING, screen.figures.text()
    assert screen.result.text().startswith("WARNING")
    sign(qtbot, screen)
    qtbot.waitUntil(lambda: screen.ack_button.isEnabled(), timeout=10_000)
    qtbot.keyClicks(screen.comment, "holder re-seated, T and P re-read")
    qtbot.keyClicks(screen.password, PASSWORDS["pia"])
    qtbot.mouseClick(screen.ack_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "ALLOWED" in screen.gate.text(), timeout=20_000)
    ack = store.find_documents(kind="qa_acknowledgement", subject=SERIAL)[-1]
    assert [s.meaning for s in store.signatures_for(ack.doc_id)] == ["acknowledged QA warning"]


def test_cancel_during_the_check_switches_the_beam_off_and_gives_no_result(qtbot, qa_env):
    ctx, worker, bench, store, _ = qa_env
    screen = make_screen(qtbot, ctx, worker)
    qtbot.keyClicks(screen.temperature, "20")
    qtbot.keyClicks(screen.pressure, "101.3 kPa")
    qtbot.mouseClick(screen.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "reading 1" in screen.step.text() or bench.xrs_model.hv_on, timeout=CHECK_TIMEOUT_MS)
    qtbot.mouseClick(screen.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(screen.incomplete_reason), timeout=30_000)
    assert "cancelled" in screen.incomplete_reason and screen.record is None
    assert screen.result.text().startswith("NOT COMPLETED")
    assert not bench.xrs_model.hv_on
    assert StoreQaRepository(store).records(source_serial=SERIAL) == []


def theme_red() -> str:
    from ui import theme
    return theme.DANGER_RED
