"""The treatment screen against a real Supervisor and the simulated unit, driven through its widgets:
two deliberate actions to start, pause with a reason, resume, completion on time; an interlock during
beam; STOP by keyboard; and a 2 s stall of the GUI thread that the beam does not notice."""
from __future__ import annotations

import os
import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from orconsole.journal import read_journal
from orconsole.statemachine import State
from ui.bridge import FutureBridge, SnapshotBridge
from ui.screens.treatment import TreatmentScreen


@pytest.fixture
def screen(styled, qtbot, ready_supervisor):
    sup, box = ready_supervisor
    futures = FutureBridge()
    widget = TreatmentScreen(sup, futures)
    bridge = SnapshotBridge(box)
    bridge.snapshot.connect(widget.show_snapshot)
    qtbot.addWidget(widget)
    widget.resize(1600, 1000)
    widget.show()
    bridge.start()
    yield widget, sup, box, bridge
    bridge.stop()


def wait_state(qtbot, widget, *states, timeout_ms=20000):
    qtbot.waitUntil(lambda: widget.snapshot is not None and widget.snapshot.state in states, timeout=timeout_ms)


def test_start_needs_arm_then_start_and_pause_resume_completes_on_time(screen, qtbot):
    widget, sup, box, _ = screen
    wait_state(qtbot, widget, State.READY)
    assert not widget.start_button.isEnabled(), "START must not be possible before ARM"
    qtbot.mouseClick(widget.arm_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.ARMED)
    assert widget.snapshot.state is State.ARMED and not sup.test_bench.xrs_model.status().hv_on
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.BEAM_ON)
    qtbot.waitUntil(lambda: widget.snapshot.elapsed_s > 1.5, timeout=10000)
    qtbot.mouseClick(widget.pause_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.PAUSED)
    qtbot.waitUntil(widget.reason_panel.isVisible, timeout=5000)
    qtbot.mouseClick(widget.reason_panel.record_button, Qt.MouseButton.LeftButton)
    assert widget.reason_panel.isVisible(), "an empty reason must not be accepted"
    qtbot.keyClicks(widget.reason_panel.text, "surgeon asked for a pause")
    qtbot.mouseClick(widget.reason_panel.record_button, Qt.MouseButton.LeftButton)
    assert widget.reasons == ["surgeon asked for a pause"]
    held = widget.snapshot.elapsed_s
    time.sleep(0.5)
    qtbot.wait(200)
    assert widget.snapshot.elapsed_s == pytest.approx(held, abs=0.05), "the timer must hold while paused"
    qtbot.mouseClick(widget.resume_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.BEAM_ON)
    wait_state(qtbot, widget, State.COMPLETED, timeout_ms=30000)
    snap = widget.snapshot
    assert snap.elapsed_s == pytest.approx(snap.preset_s, abs=0.2)
    assert widget.remaining.text() == "00:00.0"
    assert snap.secondary_dose_gy == pytest.approx(20.0, rel=0.05)
    assert "20.0" in widget.primary.text() and "Gy" in widget.primary.text()


def test_stop_key_ends_the_beam_and_asks_for_a_reason(screen, qtbot):
    widget, sup, box, _ = screen
    wait_state(qtbot, widget, State.READY)
    qtbot.mouseClick(widget.arm_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.ARMED)
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.BEAM_ON)
    widget.activateWindow()
    widget.raise_()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is widget or os.environ.get("QT_QPA_PLATFORM") == "offscreen",
                    timeout=3000)
    widget.stop_button.setFocus()
    qtbot.keyClick(widget.stop_button, Qt.Key.Key_Escape)
    wait_state(qtbot, widget, State.TERMINATED)
    assert not sup.test_bench.xrs_model.status().hv_on
    qtbot.waitUntil(widget.reason_panel.isVisible, timeout=5000)
    assert widget.snapshot.termination.value == "OPERATOR"


def test_an_interlock_during_beam_is_listed_with_its_message_and_the_beam_stops(screen, qtbot):
    widget, sup, box, _ = screen
    wait_state(qtbot, widget, State.READY)
    qtbot.mouseClick(widget.arm_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.ARMED)
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.BEAM_ON)
    sup.test_bench.xrs_model.inject("interlock_open")
    wait_state(qtbot, widget, State.TERMINATED, State.FAULT)
    assert not sup.test_bench.xrs_model.status().hv_on
    qtbot.waitUntil(lambda: bool(widget.interlocks.texts), timeout=5000)
    assert any("nterlock" in t for t in widget.interlocks.texts), widget.interlocks.texts
    assert widget.snapshot.termination.value == "MACHINE"
    qtbot.waitUntil(widget.reason_panel.isVisible, timeout=5000)


def test_a_five_second_gui_stall_during_beam_changes_nothing(screen, qtbot):
    widget, sup, box, bridge = screen
    wait_state(qtbot, widget, State.READY)
    qtbot.mouseClick(widget.arm_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.ARMED)
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, widget, State.BEAM_ON)
    qtbot.waitUntil(lambda: widget.snapshot.elapsed_s > 1.0, timeout=10000)
    assert widget.snapshot.preset_s > 6.5, "the stall must fall inside the beam"
    emitted = []
    bridge.snapshot.connect(emitted.append)
    seq_before = box.latest().seq
    time.sleep(5.0)                      # the GUI thread does nothing at all for 5 s (qualification scenario 10)
    seq_after_stall = box.latest().seq
    assert seq_after_stall - seq_before >= 50, "the supervisor must keep polling while the GUI is stalled"
    qtbot.wait(120)
    assert 1 <= len(emitted) <= 3, "after a stall the screen gets the latest snapshot, not a replayed backlog"
    assert emitted[0].seq >= seq_after_stall
    wait_state(qtbot, widget, State.COMPLETED, State.TERMINATED, State.FAULT, timeout_ms=30000)
    snap = widget.snapshot
    assert snap.state is State.COMPLETED, snap.last_message
    assert snap.elapsed_s == pytest.approx(snap.preset_s, abs=0.2), "the beam must stop on time"
    # the supervisor closes the journal entry once the unit has ramped down
    qtbot.waitUntil(lambda: any(e["kind"] == "treatment_closed" for e in read_journal(sup.test_journal).entries),
                    timeout=10000)
    entries = read_journal(sup.test_journal).entries
    progress = [e for e in entries if e["kind"] == "progress"]
    assert len(progress) >= int(snap.preset_s) - 2, "journal progress must not stop during the GUI stall"
