"""Screen 4, pre-treatment checklist: identity by two identifiers, applicator on the device equals the
plan (re-checked live), output check today, devices connected, record store writable.

Each item is green only when the treatment service says so, and always carries words (PASSED / NOT
PASSED and the service's message). The check itself is the service's; this screen asks and shows.
"""
from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QFormLayout, QFrame, QHBoxLayout, QLineEdit, QScrollArea, QVBoxLayout, QWidget

from ui import theme
from ui.context import Context, Outcome
from ui.screens.patient_plan import parse_date
from ui.widgets import make_button, make_label, panel

RECHECK_MS = 2000


class ChecklistScreen(QWidget):
    title = "Checklist"
    go_to_treatment = Signal()

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        root = QHBoxLayout(self)
        root.setSpacing(16)
        lf, ll = panel()
        ll.addWidget(make_label("Confirm the patient", "heading"))
        ll.addWidget(make_label("Ask the team / read the wristband: enter both identifiers as found on the "
                                "patient, not from the screen.", "info", wrap=True))
        form = QFormLayout()
        self.mrn = QLineEdit(objectName="checkMrn")
        self.mrn.setPlaceholderText("medical record number")
        self.dob = QLineEdit(objectName="checkDob")
        self.dob.setPlaceholderText("YYYY-MM-DD")
        form.addRow(make_label("Medical record no."), self.mrn)
        form.addRow(make_label("Date of birth"), self.dob)
        ll.addLayout(form)
        self.unit_line = make_label("X-ray unit: not reporting", "info", wrap=True)
        self.unit_line.setObjectName("unitLine")
        ll.addWidget(self.unit_line)
        self.prepare_button = make_button("Warm up the X-ray unit (50 kV / 40 µA)", name="prepareDevices")
        self.prepare_button.setToolTip("sets the technique and runs the unit's warm-up; no treatment beam")
        ll.addWidget(self.prepare_button)
        self.run_button = make_button("Run checklist", "primary", name="runChecklist")
        ll.addWidget(self.run_button)
        self.error = make_label("", "error", wrap=True)
        self.error.setObjectName("checklistError")
        ll.addWidget(self.error)
        self.treat_button = make_button("Go to treatment →", "go", name="goToTreatment")
        self.treat_button.setEnabled(False)
        ll.addWidget(self.treat_button)
        ll.addStretch(1)
        root.addWidget(lf, 2)

        rf, rl = panel()
        rl.addWidget(make_label("Checks", "heading"))
        self.summary = make_label("Not yet checked", "figure", wrap=True)
        self.summary.setObjectName("checklistSummary")
        self.summary.setStyleSheet(f"font-size: {theme.LABEL_FONT_PX + 4}px;")
        rl.addWidget(self.summary)
        items = QWidget()
        self._items_layout = QVBoxLayout(items)
        self._items_layout.setContentsMargins(0, 0, 0, 0)
        self._items_layout.setSpacing(8)
        self._items_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(items)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        rl.addWidget(scroll, 1)
        self._item_labels = []
        root.addWidget(rf, 3)
        self.checklist = None
        self._args = None
        self._pending = False
        self.run_button.clicked.connect(self._run)
        self.prepare_button.clicked.connect(self._prepare)
        self.dob.returnPressed.connect(self._run)
        self.treat_button.clicked.connect(self.go_to_treatment.emit)
        self.setTabOrder(self.mrn, self.dob)
        self.setTabOrder(self.dob, self.prepare_button)
        self.setTabOrder(self.prepare_button, self.run_button)
        self.setTabOrder(self.run_button, self.treat_button)
        self._recheck = QTimer(self)
        self._recheck.setInterval(RECHECK_MS)
        self._recheck.timeout.connect(self._live)

    def focus_first(self) -> None:
        self.mrn.setFocus()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt
        super().showEvent(event)
        self._recheck.start()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt
        super().hideEvent(event)
        self._recheck.stop()

    def _prepare(self) -> None:
        """Technique and warm-up through the service (it waits until the unit reports READY)."""
        self.prepare_button.setEnabled(False)
        self.error.setText("Warming up the X-ray unit… (no treatment beam; this can take a minute)")
        self.ctx.run(self.ctx.service.prepare_devices, self._prepared)

    def _prepared(self, outcome: Outcome) -> None:
        self.prepare_button.setEnabled(True)
        if not outcome.ok:
            self.error.setText("Warm-up refused: " + outcome.message)
            return
        self.error.setText("")
        if self._args is not None:
            self._submit()

    def show_snapshot(self, snap) -> None:
        if snap is None:
            return
        state = snap.device_state or "not reporting"
        ready = state in ("ready", "armed")
        self.unit_line.setText(f"X-ray unit: {state.upper().replace('_', ' ')}" + (
            "" if ready else " — warm it up before the checklist") + ("" if snap.link_ok else " · LINK LOST"))

    def _run(self) -> None:
        self.error.clear()
        try:
            dob = parse_date(self.dob.text(), "date of birth")
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        mrn = self.mrn.text().strip()
        if not mrn:
            self.error.setText("Enter the medical record number and the date of birth.")
            return
        self._args = dict(medical_record_number=mrn, date_of_birth=dob)
        self._submit()

    def _live(self) -> None:
        """Re-run the checks while the screen is shown (applicator, devices, store are live facts)."""
        snap = self.ctx.snapshot
        if self._args is None or self._pending or self.ctx.session is None:
            return
        if snap is not None and snap.state in theme.BEAM_STATES:
            return
        self._submit()

    def _submit(self) -> None:
        self._pending = True
        self.ctx.run(self.ctx.service.run_checklist, self._done, self.ctx.session, **self._args)

    def _done(self, outcome: Outcome) -> None:
        self._pending = False
        if not outcome.ok:
            self.error.setText("Refused: " + outcome.message)
            self.treat_button.setEnabled(False)
            return
        self.show_checklist(outcome.value)

    def show_checklist(self, checklist) -> None:
        self.checklist = checklist
        for label in self._item_labels:
            self._items_layout.removeWidget(label)
            label.deleteLater()
        self._item_labels = []
        # what blocks the treatment first, then what passed (each item says which, in words)
        ordered = [i for i in checklist.items if not i.ok] + [i for i in checklist.items if i.ok]
        for i, item in enumerate(ordered):
            mark, words, bg = ("✓", "PASSED", "#0f3d22") if item.ok else ("✗", "NOT PASSED", "#4a1010")
            border = theme.OK_GREEN if item.ok else theme.DANGER_RED
            label = make_label(f"{mark} {item.label} — {words}\n{item.message}", wrap=True)
            label.setObjectName(f"check_{item.key}")
            label.setStyleSheet(f"background: {bg}; border-left: 10px solid {border}; padding: 8px; "
                                f"font-size: {theme.LABEL_FONT_PX}px;")
            self._items_layout.insertWidget(i, label)
            self._item_labels.append(label)
        failures = checklist.failures()
        self.summary.setText("✓ ALL CHECKS PASSED: go to treatment and ARM." if checklist.ok else
                             f"✗ {len(failures)} CHECK{'S' if len(failures) > 1 else ''} NOT PASSED: no treatment "
                             "until put right (listed first).")
        self.treat_button.setEnabled(checklist.ok)
