"""Screen 5, treatment: the countdown, both dose channels, the machine figures, interlocks, and the
arm → start → pause/resume/stop controls.

Renders Snapshots only and sends commands whose Futures resolve back on the GUI thread; buttons are
enabled from the published state as a convenience, the supervisor decides. Never blocks, never modal.
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QFrame, QGridLayout, QHBoxLayout, QLineEdit, QProgressBar, QScrollArea,
                               QVBoxLayout, QWidget)

from orconsole.statemachine import State
from ui import theme
from ui.bridge import FutureBridge
from ui.widgets import InterlockList, fmt_mmss, fmt_value, make_button, make_label, panel

INTERRUPTION_REASONS = ("Surgeon's request", "Patient / applicator moved", "Alarm on the unit", "Anaesthesia")

STOP_KEYS = ("Esc", "F12")


class ReasonPanel(QWidget):
    """Inline (non-modal) request for the reason of an interruption; the beam is already off."""

    submitted = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        frame, layout = panel()
        layout.setContentsMargins(14, 8, 14, 8)
        layout.setSpacing(6)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(frame)
        self.title = make_label("Why was the treatment interrupted?", wrap=True)
        self.title.setStyleSheet(f"font-size: {theme.LABEL_FONT_PX + 2}px; font-weight: 800;")
        layout.addWidget(self.title)
        row = QHBoxLayout()
        self.choice_buttons = []
        for text in INTERRUPTION_REASONS:
            b = make_button(text)
            b.clicked.connect(lambda _=False, t=text: self.text.setText(t))
            row.addWidget(b)
            self.choice_buttons.append(b)
        layout.addLayout(row)
        row2 = QHBoxLayout()
        self.text = QLineEdit()
        self.text.setObjectName("interruptionReason")
        self.text.setPlaceholderText("reason, in words (required)")
        self.record_button = make_button("Record reason", "primary", name="recordReason")
        self.record_button.clicked.connect(self._submit)
        self.text.returnPressed.connect(self._submit)
        row2.addWidget(self.text, 1)
        row2.addWidget(self.record_button)
        layout.addLayout(row2)
        self.error = make_label("", "error", wrap=True)
        layout.addWidget(self.error)
        self.hide()

    def ask(self, what: str) -> None:
        self.title.setText(f"{what}: why? (the beam is off; record the reason)")
        self.text.clear()
        self.error.clear()
        self.show()

    def _submit(self) -> None:
        reason = self.text.text().strip()
        if not reason:
            self.error.setText("Type or choose a reason: it goes into the treatment record.")
            return
        self.hide()
        self.submitted.emit(reason)


class TreatmentScreen(QWidget):
    """`controller` offers arm(), beam_on(), pause(), resume(), stop() → Future[CommandResult] and,
    optionally, record_interruption_reason(text)."""

    title = "Treatment"
    go_to_record = Signal()

    def __init__(self, controller: Any, futures: FutureBridge, parent: QWidget | None = None,
                 on_reason: Callable[[str], None] | None = None, own_shortcuts: bool = True) -> None:
        super().__init__(parent)
        self.controller = controller
        self.futures = futures
        self.on_reason = on_reason
        self.reasons: list[str] = []
        self.snapshot = None
        self._pending_reason_for: str | None = None
        self._last_state: State | None = None
        self._busy = False
        self.workflow_ready: bool | None = None
        self._big_countdown = True

        root = QVBoxLayout(self)
        root.setContentsMargins(16, 12, 16, 12)
        root.setSpacing(12)
        top = QHBoxLayout()
        top.setSpacing(16)
        root.addLayout(top, 0)

        # -- the countdown
        clock_frame, clock = panel()
        clock.addWidget(make_label("REMAINING TIME", "heading"))
        self.stale = make_label("", wrap=True)
        self.stale.setObjectName("staleWarning")
        self.stale.setStyleSheet(f"background: #5a4a00; color: #ffffff; font-weight: 800; padding: 6px; "
                                 f"font-size: {theme.LABEL_FONT_PX}px;")
        self.stale.hide()
        clock.addWidget(self.stale)
        self.remaining = make_label("--:--.-")
        self.remaining.setObjectName("remaining")
        self.remaining.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.remaining.setStyleSheet(self._countdown_style(theme.TEXT))
        clock.addWidget(self.remaining, 1)
        times = QHBoxLayout()
        self.elapsed = make_label("Elapsed --:--.-", "figure")
        self.elapsed.setObjectName("elapsed")
        self.preset = make_label("Preset --:--.-", "figure")
        self.preset.setObjectName("preset")
        times.addWidget(self.elapsed)
        times.addStretch(1)
        times.addWidget(self.preset)
        clock.addLayout(times)
        self.progress = QProgressBar()
        self.progress.setObjectName("progress")
        self.progress.setRange(0, 1000)
        self.progress.setFormat("%p % of preset time")
        clock.addWidget(self.progress)
        self.plan_line = make_label("No plan loaded", "info", wrap=True)
        clock.addWidget(self.plan_line)
        top.addWidget(clock_frame, 3)

        # -- the figures
        fig_frame, figs = panel()
        figs.addWidget(make_label("DELIVERED DOSE", "heading"))
        grid = QGridLayout()
        grid.setVerticalSpacing(6)
        self.primary = make_label("— Gy", "figure")
        self.primary.setObjectName("primaryDose")
        self.secondary = make_label("— Gy", "figure")
        self.secondary.setObjectName("secondaryDose")
        self.rate = make_label("— Gy/min", "figure")
        self.rate.setObjectName("doseRate")
        self.kv = make_label("— kV", "figure")
        self.kv.setObjectName("kv")
        self.ua = make_label("— µA", "figure")
        self.ua.setObjectName("ua")
        self.device = make_label("—", "info")
        rows = (("Timer channel", self.primary), ("Monitor channel (IRM)", self.secondary),
                ("Dose rate (IRM)", self.rate), ("Tube voltage", self.kv), ("Tube current", self.ua),
                ("X-ray unit", self.device))
        for i, (caption, value) in enumerate(rows):
            grid.addWidget(make_label(caption, "caption"), i, 0)
            grid.addWidget(value, i, 1, Qt.AlignmentFlag.AlignRight)
        figs.addLayout(grid)
        figs.addStretch(1)
        top.addWidget(fig_frame, 2)

        # -- interlocks, messages and the reason: one scrolling middle, so the countdown above and STOP below
        #    always stay on screen however many interlocks there are
        middle = QWidget()
        mid = QVBoxLayout(middle)
        mid.setContentsMargins(0, 0, 0, 0)
        mid.setSpacing(8)
        self.interlocks = InterlockList()
        mid.addWidget(self.interlocks)
        # after a latched interlock or a lost link: reconnect, then a person clears it with what they checked
        self.clear_row = QWidget()
        row = QHBoxLayout(self.clear_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.clear_ack = QLineEdit(objectName="interlockAck")
        self.clear_ack.setPlaceholderText("what you checked (required to clear)")
        self.reconnect_button = make_button("Reconnect X-ray unit", name="reconnect")
        self.clear_button = make_button("Clear latched interlocks", "warn", name="clearInterlocks")
        row.addWidget(self.clear_ack, 1)
        row.addWidget(self.reconnect_button)
        row.addWidget(self.clear_button)
        self.clear_row.hide()
        mid.addWidget(self.clear_row)
        self.reconnect_button.clicked.connect(lambda: self._send("reconnect", "Reconnect"))
        self.clear_button.clicked.connect(self._clear_latched)
        self.message = make_label("", "info", wrap=True)
        self.message.setObjectName("treatmentMessage")
        mid.addWidget(self.message)
        self.reason_panel = ReasonPanel()
        self.reason_panel.submitted.connect(self._reason_given)
        mid.addWidget(self.reason_panel)
        mid.addStretch(1)
        self.middle_scroll = QScrollArea()
        self.middle_scroll.setWidget(middle)
        self.middle_scroll.setWidgetResizable(True)
        self.middle_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.middle_scroll.setMinimumHeight(140)
        root.addWidget(self.middle_scroll, 1)
        self.record_button = make_button("Next: sign the record →", "go", name="goToRecord")
        self.record_button.clicked.connect(self.go_to_record.emit)
        self.record_button.hide()
        self.record_button.setProperty("size", "big")

        # -- controls: same place on every state; STOP always far right and largest
        controls = QHBoxLayout()
        controls.setSpacing(14)
        self.arm_button = make_button("1 · ARM", "warn", name="arm")
        self.start_button = make_button("2 · START BEAM", "go", name="start")
        self.pause_button = make_button("PAUSE", "primary", name="pause")
        self.resume_button = make_button("RESUME", "go", name="resume")
        self.stop_button = make_button("■ STOP  (Esc)", "stop", name="stop")
        self.stop_button.setMinimumWidth(300)
        for b in (self.arm_button, self.start_button, self.pause_button, self.resume_button):
            b.setProperty("size", "big")
            controls.addWidget(b, 1)
        controls.addWidget(self.record_button, 2)
        controls.addWidget(self.stop_button, 2)
        root.addLayout(controls)
        self.arm_button.clicked.connect(lambda: self._send("arm", "Arm"))
        self.start_button.clicked.connect(lambda: self._send("beam_on", "Start"))
        self.pause_button.clicked.connect(lambda: self._send("pause", "Pause", ask_reason="Paused"))
        self.resume_button.clicked.connect(lambda: self._send("resume", "Resume"))
        self.stop_button.clicked.connect(self.stop)
        self.stop_shortcuts = []
        # standalone only: the console window owns application-wide STOP keys (two owners = ambiguous = dead key)
        for key in (STOP_KEYS if own_shortcuts else ()):
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
            sc.activated.connect(self.stop)
            self.stop_shortcuts.append(sc)
        self.setTabOrder(self.arm_button, self.start_button)
        self.setTabOrder(self.start_button, self.pause_button)
        self.setTabOrder(self.pause_button, self.resume_button)
        self.setTabOrder(self.resume_button, self.stop_button)
        self.show_snapshot(None)

    # -- commands -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop whatever the state: never disabled by the UI while a beam could be on or armed."""
        state = self.snapshot.state if self.snapshot is not None else None
        if state is State.ARMED:
            self._send("disarm", "Disarm")
        else:
            self._send("stop", "Stop", ask_reason="Stopped" if state in (State.BEAM_ON, State.PAUSED) else None)

    def _send(self, command: str, label: str, ask_reason: str | None = None) -> None:
        method = getattr(self.controller, command, None)
        if method is None:
            self.message.setText(f"{label}: not available in this console build")
            return
        self.message.setText(f"{label}: sent, waiting for the supervisor…")
        future = method()
        self.futures.when_done(future, lambda r: self._done(label, r, ask_reason))

    def _done(self, label: str, result: Any, ask_reason: str | None) -> None:
        prefix = f"{label}: done — " if result.ok else f"{label} REFUSED — "
        self.message.setText(prefix + result.reason)
        self.message.setProperty("role", "info" if result.ok else "error")
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        if result.ok and ask_reason:
            self._ask_reason(ask_reason)

    def _clear_latched(self) -> None:
        ack = self.clear_ack.text().strip()
        if not ack:
            self.message.setText("Clear: write what you checked first (it goes into the record).")
            return
        future = self.controller.clear_latched(ack)
        self.message.setText("Clear: sent, waiting for the supervisor…")
        self.futures.when_done(future, lambda r: self._done("Clear", r, None))

    def _ask_reason(self, what: str) -> None:
        self.reason_panel.ask(what)
        self.middle_scroll.ensureWidgetVisible(self.reason_panel, 0, 0)

    def _reason_given(self, reason: str) -> None:
        self.reasons.append(reason)
        sink = self.on_reason or getattr(self.controller, "record_interruption_reason", None)
        if sink is not None:
            sink(reason)
        self.message.setText(f"Reason recorded: {reason}")

    # -- rendering ------------------------------------------------------------------------------

    def set_workflow_ready(self, ready: bool | None) -> None:
        """In the console the service arms from an approved plan with a passed checklist (it loads, approves
        and confirms at the supervisor itself), so ARM follows the workflow; None = standalone (READY)."""
        self.workflow_ready = ready
        if self.snapshot is not None:
            self.arm_button.setEnabled(self._arm_possible(self.snapshot.state))

    def _arm_possible(self, state: State) -> bool:
        if self.workflow_ready is None:
            return state is State.READY
        return self.workflow_ready and state not in (State.ARMED, State.BEAM_ON, State.PAUSED, State.FAULT,
                                                     State.INTERRUPTED)

    def set_stale(self, age_s: float | None) -> None:
        """Mark every figure as old (no fresh snapshot for `age_s` seconds) or fresh again (None)."""
        if age_s is None:
            if self.stale.isVisible() or self.stale.text():
                self.stale.hide()
                self.stale.setText("")
                self.remaining.setStyleSheet(self._countdown_style(theme.TEXT))
            return
        self.stale.setText(f"⚠ NOT UPDATING — these figures are {age_s:.0f} s old")
        self.stale.show()
        self.remaining.setStyleSheet(self._countdown_style("#8a8f94"))

    def _countdown_style(self, colour: str) -> str:
        size = theme.COUNTDOWN_FONT_PX if self._big_countdown else theme.COUNTDOWN_FONT_PX * 2 // 3
        return (f"font-size: {size}px; font-weight: 800; color: {colour}; "
                "font-family: 'DejaVu Sans Mono', monospace;")

    def show_snapshot(self, snap) -> None:
        self.snapshot = snap
        if snap is None:
            for b in (self.arm_button, self.start_button, self.pause_button, self.resume_button):
                b.setEnabled(False)
            return
        self.remaining.setText(fmt_mmss(snap.remaining_s))
        big = snap.state in theme.BEAM_STATES
        if big != self._big_countdown:
            self._big_countdown = big
            self.remaining.setStyleSheet(self._countdown_style(theme.TEXT))
        self.elapsed.setText(f"Elapsed {fmt_mmss(snap.elapsed_s)}")
        self.preset.setText(f"Preset {fmt_mmss(snap.preset_s)}")
        fraction = snap.elapsed_s / snap.preset_s if snap.preset_s > 0 else 0.0
        self.progress.setValue(int(max(0.0, min(1.0, fraction)) * 1000))
        goal = snap.dose_to_deliver_gy
        goal_text = f" of {goal:.2f} Gy" if goal is not None else ""
        self.primary.setText(fmt_value(snap.primary_dose_gy, "Gy") + goal_text)
        self.secondary.setText(fmt_value(snap.secondary_dose_gy, "Gy") + goal_text)
        self.rate.setText(fmt_value(snap.dose_rate_gy_per_min, "Gy/min"))
        self.kv.setText(fmt_value(snap.kv, "kV", 1))
        self.ua.setText(fmt_value(snap.ua, "µA", 1))
        link = "link OK" if snap.link_ok else "LINK LOST"
        device = (snap.device_state or "not reporting").replace("_", " ")
        self.device.setText(f"{device.upper() if snap.device_state else device} · {link}")
        if snap.plan_id:
            rx = f"{snap.prescription_dose_gy:g} Gy prescribed" if snap.prescription_dose_gy is not None else ""
            self.plan_line.setText(f"Plan {snap.plan_id} v{snap.plan_version} · {rx}")
        else:
            self.plan_line.setText("No plan loaded")
        self.interlocks.show_interlocks(snap.interlocks)
        clearable = any(not i.condition_present for i in snap.interlocks)
        self.clear_row.setVisible((clearable or not snap.link_ok) and hasattr(self.controller, "clear_latched")
                                  and snap.state not in (State.BEAM_ON, State.ARMED))
        self.clear_button.setEnabled(clearable)        # a cause still present cannot be cleared: remove it first
        state = snap.state
        self.arm_button.setEnabled(self._arm_possible(state))
        self.start_button.setEnabled(state is State.ARMED)
        self.pause_button.setEnabled(state is State.BEAM_ON)
        self.resume_button.setEnabled(state is State.PAUSED)
        self.stop_button.setEnabled(True)
        ended = state in (State.COMPLETED, State.TERMINATED, State.FAULT) and not snap.closing_segment
        self.record_button.setVisible(ended)
        for b in (self.arm_button, self.start_button, self.pause_button, self.resume_button):
            b.setVisible(not ended or b.isEnabled())     # the delivery is over: the next step takes their place
        changed = state is not self._last_state
        if changed:
            if state in (State.TERMINATED, State.FAULT) and self._last_state is State.BEAM_ON \
                    and snap.termination is not None and snap.termination.value == "MACHINE":
                self._ask_reason("The machine stopped the treatment")
            if state is State.BEAM_ON:
                self.stop_button.setFocus()
            self._last_state = state
        if not self.message.text() or changed:
            self.message.setText(snap.last_message)
            self.message.setProperty("role", "info")
