"""The physicist's daily output check screen: T and P entered with their units, the guided procedure with
live progress, the readings, k_TP, k_out and the result in words and colour; sign, acknowledge a warning.

Never runs the check (or any device call) on the GUI thread and never calls a driver itself: the check runs
on the one thread that owns the devices (an OutputCheckWorker given the drivers by the composition root, or
the treatment service's device thread). The result, the gate and every refusal come from the core.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import date
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (QFormLayout, QHBoxLayout, QLineEdit, QProgressBar, QVBoxLayout, QWidget)

from orconsole.calibration import StoreCalibrationRepository, active_calibration_or_interlock
from orconsole.identity import Permission
from orconsole.models import QaOutcome
from orconsole.qa import (OutputCheckRequest, QaIncomplete, QaInputError, QaPolicy, QaProgress, StoreQaRepository,
                          acknowledge_warning, output_check_gate, parse_pressure_kpa, parse_temperature_c)
from ui import theme
from ui.context import Context, Outcome, refusal_text
from ui.widgets import make_button, make_label, panel

RESULT_LOOK = {   # words first; the colour repeats them
    QaOutcome.PASS: ("PASS", theme.OK_GREEN, "#ffffff"),
    QaOutcome.WARNING: ("WARNING — acknowledge before treatment", theme.WARN_AMBER, "#000000"),
    QaOutcome.FAIL: ("FAIL — no treatment on this source", theme.DANGER_RED, "#ffffff"),
}
NO_DEVICE_THREAD = ("The output check cannot be started from this console yet: the treatment supervisor owns the "
                    "devices and the treatment service offers no output check on its device thread "
                    "(docs/qa.md, 'Output check in the console'). Use 'orconsole qa output' before starting the "
                    "console.")


def _service_runner(ctx: Context):
    """The treatment service's runner on its device thread (docs/qa.md, 'Output check in the console'):
    `service.output_check_runner(session_of=)` → connect()/submit()/cancel() as OutputCheckWorker; the service
    checks the signed-in session's permission when a check is submitted."""
    service = ctx.service
    factory = getattr(service, "output_check_runner", None) if service is not None else None
    return factory(session_of=lambda: ctx.session) if callable(factory) else None


class OutputCheckScreen(QWidget):
    """`runner`: an object with `connect()` → Future[(XrsIdentity, ReadoutIdentity)], `submit(request,
    calibration, on_progress=)` → Future[OutputCheckRecord] and `cancel()` (orconsole.qa.OutputCheckWorker)."""

    title = "Daily output check"

    def __init__(self, ctx: Context, *, runner: Any = None, policy: QaPolicy | None = None,
                 today=date.today, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.runner = runner if runner is not None else _service_runner(ctx)
        config = getattr(ctx.service, "config", None)
        self.policy = policy or (QaPolicy.from_site(config) if config is not None else QaPolicy())
        self._today = today
        self.record = None                 # the last completed OutputCheckRecord
        self.incomplete_reason = ""
        self._progress_lock = threading.Lock()
        self._progress: QaProgress | None = None
        self._running = False

        root = QHBoxLayout(self)
        root.setSpacing(16)
        lf, ll = panel()
        ll.addWidget(make_label("Daily output check", "heading"))
        ll.addWidget(make_label("Source in the QA holder, chamber in its position, electrometer warmed up. Read the "
                                "thermometer and the barometer at the chamber and enter them with their units.",
                                "info", wrap=True))
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        self.temperature = QLineEdit(objectName="qaTemperature")
        self.temperature.setPlaceholderText("e.g. 22.4   (°C; mark F for Fahrenheit)")
        self.pressure = QLineEdit(objectName="qaPressure")
        self.pressure.setPlaceholderText("e.g. 100.8 kPa or 1008 hPa / mbar / 756 mmHg")
        self.chamber = QLineEdit(objectName="qaChamberSerial")
        self.chamber.setPlaceholderText("ion chamber serial, e.g. 34013-0123")
        form.addRow(make_label("Temperature at the chamber (°C)"), self.temperature)
        form.addRow(make_label("Air pressure (kPa, or mark hPa / mbar / mmHg)"), self.pressure)
        form.addRow(make_label("Chamber serial"), self.chamber)
        ll.addLayout(form)
        buttons = QHBoxLayout()
        self.start_button = make_button("Start output check", "primary", name="qaStart")
        self.cancel_button = make_button("Cancel check (beam off)", "warn", name="qaCancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        ll.addLayout(buttons)
        self.input_error = make_label("" if self.runner is not None else NO_DEVICE_THREAD, "error", wrap=True)
        self.input_error.setObjectName("qaInputError")
        ll.addWidget(self.input_error)
        ll.addWidget(make_label("Progress", "heading"))
        self.progress_bar = QProgressBar(objectName="qaProgressBar")
        self.progress_bar.setRange(0, self.policy.readings_per_series)
        self.progress_bar.setFormat("%v of %m readings")
        self.progress_bar.setMinimumHeight(theme.MIN_TARGET_PX // 2)
        ll.addWidget(self.progress_bar)
        self.step = make_label("not started", "info", wrap=True)
        self.step.setObjectName("qaStep")
        ll.addWidget(self.step)
        self.readings = make_label("readings: —", "info", wrap=True)
        self.readings.setObjectName("qaReadings")
        ll.addWidget(self.readings)
        ll.addStretch(1)
        root.addWidget(lf, 1)

        rf, rl = panel()
        rl.addWidget(make_label("Result", "heading"))
        self.result = make_label("no result yet", "figure", wrap=True)
        self.result.setObjectName("qaResult")
        self.result.setStyleSheet("font-size: 32px; padding: 8px;")
        rl.addWidget(self.result)
        self.k_out_big = make_label("", "figure")
        self.k_out_big.setObjectName("qaKOut")
        rl.addWidget(self.k_out_big)
        self.figures = make_label("", "info", wrap=True)
        self.figures.setObjectName("qaFigures")
        rl.addWidget(self.figures)
        self.message = make_label("", "info", wrap=True)
        self.message.setObjectName("qaMessage")
        rl.addWidget(self.message)
        self.gate = make_label("", "info", wrap=True)
        self.gate.setObjectName("qaGate")
        rl.addWidget(self.gate)
        sign_form = QFormLayout()
        sign_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.password = QLineEdit(objectName="qaPassword")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("your password, re-entered to sign")
        self.comment = QLineEdit(objectName="qaAckComment")
        self.comment.setPlaceholderText("warning only: why it is acceptable (setup checked, T/P re-read)")
        sign_form.addRow(make_label("Password"), self.password)
        sign_form.addRow(make_label("Comment"), self.comment)
        rl.addLayout(sign_form)
        sign_buttons = QHBoxLayout()
        self.sign_button = make_button("Sign result (performed QA)", "primary", name="qaSign")
        self.ack_button = make_button("Acknowledge warning", "warn", name="qaAcknowledge")
        self.sign_button.setEnabled(False)
        self.ack_button.setEnabled(False)
        sign_buttons.addWidget(self.sign_button)
        sign_buttons.addWidget(self.ack_button)
        rl.addLayout(sign_buttons)
        self.sign_status = make_label("", "info", wrap=True)
        self.sign_status.setObjectName("qaSignStatus")
        rl.addWidget(self.sign_status)
        rl.addStretch(1)
        root.addWidget(rf, 1)

        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.sign_button.clicked.connect(self.sign)
        self.ack_button.clicked.connect(self.acknowledge)
        self.pressure.returnPressed.connect(self.start)
        self.setTabOrder(self.temperature, self.pressure)
        self.setTabOrder(self.pressure, self.chamber)
        self.setTabOrder(self.chamber, self.start_button)
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._show_progress)
        self.start_button.setEnabled(self.runner is not None)

    def focus_first(self) -> None:
        self.temperature.setFocus()

    # -- start ------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._running or self.runner is None:
            return
        session = self.ctx.session
        if session is None:
            self.input_error.setText("Sign in as a medical physicist to run the output check.")
            return
        t_text, p_text = self.temperature.text().strip(), self.pressure.text().strip()
        try:   # refuse implausible entries before touching any device (the core checks again)
            parse_temperature_c(t_text, self.policy)
            parse_pressure_kpa(p_text, self.policy)
        except QaInputError as exc:
            self.input_error.setText(f"Not started: {exc}")
            return
        self.input_error.setText("")
        self._set_running(True)
        self.record, self.incomplete_reason = None, ""
        self._show_result(None)
        self.step.setText("connecting to the devices and reading the active calibration…")
        request = OutputCheckRequest(t_text, p_text, performed_by=session.username,
                                     chamber_serial=self.chamber.text().strip() or None)
        runner, store, identity, policy = self.runner, self.ctx.store, self.ctx.identity, self.policy

        def prepare():   # on the context's service worker, never the GUI thread
            identity.require(session, Permission.PERFORM_QA, "perform the daily output check")
            xrs_id, _ = runner.connect().result(timeout=60)
            return active_calibration_or_interlock(StoreCalibrationRepository(store), xrs_id.serial_number,
                                                   today=self._today(),
                                                   max_validity_days=policy.calibration_max_validity_days)
        self.ctx.run(prepare, lambda outcome: self._prepared(outcome, request))

    def _prepared(self, outcome: Outcome, request: OutputCheckRequest) -> None:
        if not outcome.ok:
            self._set_running(False)
            self.step.setText("not started")
            self.input_error.setText(f"Not started: {outcome.message}")
            return
        try:
            future = self.runner.submit(request, outcome.value, on_progress=self._on_progress)
        except Exception as exc:  # noqa: BLE001 - e.g. a check already running: say so
            self._set_running(False)
            self.input_error.setText(f"Not started: {refusal_text(exc)}")
            return
        done: Future = Future()     # resolves to the check's own Future, so _finished sees its exception
        future.add_done_callback(done.set_result)
        self.ctx.futures.when_done(done, self._finished)

    def _on_progress(self, progress: QaProgress) -> None:
        """Called on the device thread: only store the latest snapshot; the GUI timer shows it."""
        with self._progress_lock:
            self._progress = progress

    def _show_progress(self) -> None:
        with self._progress_lock:
            progress = self._progress
        if progress is None:
            return
        beam = "  ☢ beam may be on" if progress.beam_may_be_on else ""
        self.step.setText(progress.message + beam)
        values = progress.readings_nc
        series = len(values) % self.policy.readings_per_series or (self.policy.readings_per_series if values else 0)
        self.progress_bar.setValue(series)
        self.readings.setText("readings: " + (", ".join(f"{v:.4f} nC" for v in values) if values else "—"))

    def cancel(self) -> None:
        if self.runner is not None and self._running:
            self.runner.cancel()
            self.step.setText("cancelling: the beam is being switched off…")

    def _set_running(self, running: bool) -> None:
        self._running = running
        self.start_button.setEnabled(not running and self.runner is not None)
        self.cancel_button.setEnabled(running)
        for w in (self.temperature, self.pressure, self.chamber):
            w.setEnabled(not running)
        if running:
            with self._progress_lock:
                self._progress = None
            self.progress_bar.setValue(0)
            self.readings.setText("readings: —")
            self._timer.start()
        else:
            self._timer.stop()

    # -- result ------------------------------------------------------------------------------------------
    def _finished(self, future) -> None:
        self._show_progress()
        self._set_running(False)
        exc = future.exception()
        store, session = self.ctx.store, self.ctx.session
        who = session.username if session else "console"
        if exc is not None:
            reason = exc.message if isinstance(exc, QaIncomplete) else refusal_text(exc)
            readings = [r.charge_nc for r in getattr(exc, "readings", ())]
            self.incomplete_reason = reason
            self.step.setText("ended without a result")
            self._show_result(None, incomplete=reason)
            self.ctx.run(store.audit, lambda o: None, who, "qa output check incomplete",
                         {"reason": reason, "readings_nc": readings})
            return
        record = future.result()
        self.record = record
        self.step.setText("done: beam off, write permission released")
        self.progress_bar.setValue(self.policy.readings_per_series)
        used = [f"{r.charge_nc:.4f}" for r in record.readings if r.attempt == record.used_attempt]
        dropped = [f"{r.charge_nc:.4f}" for r in record.readings if r.attempt != record.used_attempt]
        self.readings.setText(f"readings used (series {record.used_attempt}): {', '.join(used)} nC"
                              + (f"\nnot used (series spread too wide, repeated): {', '.join(dropped)} nC"
                                 if dropped else ""))
        self._show_result(record)
        self.ctx.run(StoreQaRepository(store).save, self._saved, record)

    def _saved(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.sign_status.setText(f"The result could NOT be stored: {outcome.message}. It does not count; "
                                     "check the record store and repeat the check.")
            return
        self.sign_status.setText("Stored. Re-enter your password and sign the result.")
        self.sign_button.setEnabled(True)
        self._refresh_gate()

    def _show_result(self, record, *, incomplete: str = "") -> None:
        if record is None:
            text, bg, fg = ("NOT COMPLETED — no result" if incomplete else "no result yet",
                            theme.DANGER_RED if incomplete else theme.PANEL, "#ffffff")
            self.figures.setText("")
            self.k_out_big.setText("")
            self.message.setText(incomplete)
            self.gate.setText("")
            self.sign_button.setEnabled(False)
            self.ack_button.setEnabled(False)
        else:
            text, bg, fg = RESULT_LOOK[record.result]
            self.k_out_big.setText(f"k_out {record.k_out:.4f}  ({record.deviation_fraction * 100:+.2f} %)")
            self.figures.setText(
                f"k_TP = {record.k_tp:.5f}  (T {record.temperature_c:.2f} °C, P {record.pressure_kpa:.3f} kPa, "
                f"T0 {record.reference_temperature_c:g} °C)\n"
                f"mean raw {record.raw_mean_nc:.4f} nC → corrected {record.corrected_mean_nc:.4f} nC; "
                f"reference {record.reference_reading_nc:.4f} nC\n"
                f"k_out = {record.k_out:.4f}  ({record.deviation_fraction * 100:+.2f} %; warning beyond "
                f"±{record.warning_fraction * 100:g} %, fail beyond ±{record.window_fraction * 100:g} %)\n"
                f"spread {record.spread_fraction * 100:.2f} % (limit {record.spread_limit_fraction * 100:g} %)")
            self.message.setText(record.message)
        self.result.setText(text)
        self.result.setStyleSheet(f"font-size: 32px; padding: 8px; font-weight: 800; background: {bg}; color: {fg};")

    def _refresh_gate(self) -> None:
        record = self.record
        if record is None:
            return
        repo, policy = StoreQaRepository(self.ctx.store), self.policy
        self.ctx.run(lambda: output_check_gate(repo, source_serial=record.source_serial, day=record.performed_on,
                                               policy=policy), self._show_gate)

    def _show_gate(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.gate.setText(f"treatment status unknown: {outcome.message}")
            return
        gate = outcome.value
        self.gate.setText(f"Treatment on {self.record.source_serial} today: "
                          f"{'ALLOWED' if gate.allowed else 'BLOCKED'} — {gate.reason}")
        self.ack_button.setEnabled(self.record.result is QaOutcome.WARNING and not gate.allowed
                                   and "acknowledge" in gate.reason)

    # -- signatures --------------------------------------------------------------------------------------
    def sign(self) -> None:
        record, session, password = self.record, self.ctx.session, self.password.text()
        self.password.clear()
        if record is None or session is None:
            return
        if not password:
            self.sign_status.setText("Re-enter your password to sign.")
            return
        identity = self.ctx.identity
        self.sign_status.setText("Signing…")
        self.ctx.run(identity.sign, self._signed, session, password, record.qa_id, "performed QA")

    def _signed(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.sign_status.setText(f"Not signed: {outcome.message}")
            return
        row = outcome.value
        self.sign_button.setEnabled(False)
        self.sign_status.setText(f"Signed 'performed QA' by {row.printed_name} at {row.signed_utc}.")
        self._refresh_gate()

    def acknowledge(self) -> None:
        record, session, password = self.record, self.ctx.session, self.password.text()
        comment = self.comment.text()
        self.password.clear()
        if record is None or session is None:
            return
        if not password:
            self.sign_status.setText("Re-enter your password to sign the acknowledgement.")
            return
        identity, repo = self.ctx.identity, StoreQaRepository(self.ctx.store)

        def ack():
            identity.require(session, Permission.PERFORM_QA, "acknowledge a QA warning")
            return acknowledge_warning(repo, record.qa_id, physicist=session.username, comment=comment,
                                       sign=lambda doc_id: identity.sign(session, password, doc_id,
                                                                         "acknowledged QA warning"))
        self.sign_status.setText("Signing the acknowledgement…")
        self.ctx.run(ack, self._acknowledged)

    def _acknowledged(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.sign_status.setText(f"Not acknowledged: {outcome.message}")
            return
        self.ack_button.setEnabled(False)
        self.sign_status.setText(f"Warning acknowledged by {outcome.value.acknowledged_by}: {outcome.value.comment}")
        self._refresh_gate()

    def shutdown(self) -> None:
        self._timer.stop()
        if self._running and self.runner is not None:
            self.runner.cancel()
