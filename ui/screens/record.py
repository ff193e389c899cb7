"""Screen 6, record: review the delivery just made, sign it ('performed delivery'), export PDF / DICOM,
print; and the records browser with a verification badge per record.

Finalising and signing are the treatment service's; exports and verification are logs/'s. This screen
never edits a record and never shows 'verified' for a record logs.verify did not pass.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from ui import theme
from ui.context import Context, Outcome
from ui.widgets import make_button, make_label, panel

RECORD_KIND = "delivery_record"


def export_dir() -> Path:
    from orconsole.paths import data_dir
    path = data_dir() / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


class RecordScreen(QWidget):
    title = "Record"

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.record_id: str | None = None
        self.signed = False
        self.exported: list[Path] = []
        root = QVBoxLayout(self)
        top = QHBoxLayout()
        root.addLayout(top, 1)
        lf, ll = panel()
        ll.addWidget(make_label("This delivery", "heading"))
        self.summary = make_label("No delivery yet", "figure", wrap=True)
        self.summary.setObjectName("recordSummary")
        self.summary.setStyleSheet("font-size: 26px;")
        ll.addWidget(self.summary)
        ll.addStretch(1)
        top.addWidget(lf, 3)
        rf, rl = panel()
        rl.addWidget(make_label("Sign 'performed delivery'", "heading"))
        form = QFormLayout()
        self.comments = QLineEdit(objectName="recordComments")
        self.comments.setPlaceholderText("comments (optional)")
        self.password = QLineEdit(objectName="recordPassword")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("your password")
        form.addRow(make_label("Comments"), self.comments)
        form.addRow(make_label("Password"), self.password)
        rl.addLayout(form)
        self.sign_button = make_button("Sign record", "primary", name="signRecord")
        rl.addWidget(self.sign_button)
        row = QHBoxLayout()
        self.pdf_button = make_button("Export PDF", name="exportPdf")
        self.dicom_button = make_button("Export DICOM", name="exportDicom")
        self.print_button = make_button("Print", name="printRecord")
        for b in (self.pdf_button, self.dicom_button, self.print_button):
            row.addWidget(b)
        rl.addLayout(row)
        self.message = make_label("", "info", wrap=True)
        self.message.setObjectName("recordMessage")
        rl.addWidget(self.message)
        # after a lost link, when Reconnect cannot read the unit: a physicist enters the dose the unit shows
        self.irm_box = QWidget(objectName="irmUnsettled")
        il = QVBoxLayout(self.irm_box)
        il.setContentsMargins(0, 8, 0, 0)
        self.irm_why = make_label("", "error", wrap=True)
        self.irm_why.setObjectName("irmUnsettledWhy")
        il.addWidget(self.irm_why)
        irm_form = QFormLayout()
        self.irm_reading = QLineEdit(objectName="unitIrmReading")
        self.irm_reading.setPlaceholderText("IRM dose of the interrupted beam, as the unit shows it (Gy)")
        self.irm_password = QLineEdit(objectName="unitIrmPassword")
        self.irm_password.setEchoMode(QLineEdit.EchoMode.Password)
        self.irm_password.setPlaceholderText("physicist's password")
        irm_form.addRow(make_label("Unit IRM (Gy)"), self.irm_reading)
        irm_form.addRow(make_label("Password"), self.irm_password)
        il.addLayout(irm_form)
        self.irm_button = make_button("Enter the unit's IRM reading", "warn", name="enterUnitIrm")
        il.addWidget(self.irm_button)
        self.irm_box.hide()
        ll.insertWidget(ll.count() - 1, self.irm_box)     # under the summary, above the stretch
        rl.addStretch(1)
        top.addWidget(rf, 2)

        bf, bl = panel()
        head = QHBoxLayout()
        head.addWidget(make_label("Records browser", "heading"), 1)
        self.refresh_button = make_button("Verify and list records", name="refreshRecords")
        head.addWidget(self.refresh_button)
        bl.addLayout(head)
        self.table = QTableWidget(0, 5)
        self.table.setObjectName("recordsTable")
        self.table.setHorizontalHeaderLabels(["Verification", "Record", "Patient", "Status", "Created (UTC)"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setDefaultSectionSize(theme.MIN_TARGET_PX)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        bl.addWidget(self.table)
        root.addWidget(bf, 1)

        self.sign_button.clicked.connect(self._sign)
        self.password.returnPressed.connect(self._sign)
        self.pdf_button.clicked.connect(lambda: self._export("pdf"))
        self.dicom_button.clicked.connect(lambda: self._export("dcm"))
        self.print_button.clicked.connect(self._print)
        self.refresh_button.clicked.connect(self.refresh_records)
        self.irm_button.clicked.connect(self._enter_unit_irm)
        self.setTabOrder(self.comments, self.password)
        self.setTabOrder(self.password, self.sign_button)
        self._update_buttons()

    def focus_first(self) -> None:
        self.password.setFocus()

    def _update_buttons(self) -> None:
        has = self.record_id is not None
        self.sign_button.setEnabled(has and not self.signed)
        for b in (self.pdf_button, self.dicom_button, self.print_button):
            b.setEnabled(has)

    def show_status(self, status) -> None:
        if status is None:
            return
        if status.record_id != self.record_id:
            self.record_id = status.record_id
            self.signed = False
        if status.step.value == "record_signed":
            self.signed = True
        if status.record_id is None:
            self.summary.setText("No delivery record yet")
        else:
            p = status.patient
            who = f"{p.full_name} (MRN {p.medical_record_number})\n" if p is not None else ""
            rx = status.plan.prescription_dose_gy if status.plan is not None else None
            self.summary.setText(
                f"{who}Record {status.record_id}\nSessions: {status.record_sessions}\n"
                f"Delivered, timer channel: {status.delivered_primary_gy:.2f} Gy"
                + (f" of {rx:g} Gy" if rx else "") +
                f"\nDelivered, monitor channel: {status.delivered_secondary_gy:.2f} Gy"
                + (" (not settled: at least)" if getattr(status, "irm_unsettled", None) else "") + "\n"
                f"Status: {'SIGNED' if self.signed else 'awaiting signature'}")
        unsettled = getattr(status, "irm_unsettled", None)
        self.irm_box.setVisible(bool(unsettled))
        if unsettled:
            self.irm_why.setText(f"Monitor dose not settled: {unsettled}. Press Reconnect on the treatment screen "
                                 "so the console reads the unit's counter; if the link cannot be restored, a "
                                 "physicist enters the dose the unit shows here.")
        self._update_buttons()

    def _enter_unit_irm(self) -> None:
        text, password = self.irm_reading.text().strip(), self.irm_password.text()
        self.irm_password.clear()
        try:
            value_gy = float(text)
        except ValueError:
            self.message.setText(f"Refused: {text!r} is not a dose in Gy: type the unit's IRM reading, e.g. 12.35")
            return
        if not password:
            self.message.setText("Enter the physicist's password (it signs the entry).")
            return
        self.message.setText("Entering the unit's reading…")
        self.ctx.run(self.ctx.service.enter_unit_irm_reading, self._irm_entered, self.ctx.session, password,
                     unit_irm_gy=value_gy)

    def _irm_entered(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.message.setText("Refused: " + outcome.message)
            return
        result = outcome.value
        self.message.setText(("Entered: " if result.ok else "Refused: ") + result.reason)

    def _sign(self) -> None:
        password = self.password.text()
        self.password.clear()
        if not password:
            self.message.setText("Enter your password to sign the record.")
            return
        self.message.setText("Signing…")
        self.ctx.run(self.ctx.service.finish_record, self._signed, self.ctx.session, password,
                     comments=self.comments.text().strip())

    def _signed(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.message.setText("Refused: " + outcome.message)
            return
        self.record_id = outcome.value
        self.signed = True
        self.message.setText(f"Record {outcome.value} signed and sealed.")
        self._update_buttons()
        self.refresh_records()

    def export_to(self, fmt: str, path: Path) -> None:
        from logs.export_dicom import export_dicom
        from logs.export_pdf import export_pdf
        fn = export_pdf if fmt == "pdf" else export_dicom
        user = self.ctx.session.username if self.ctx.session is not None else "unknown"
        self.message.setText(f"Exporting {fmt.upper()}…")
        self.ctx.run(fn, lambda o: self._exported(o, fmt), self.ctx.store, self.record_id, path, exported_by=user)

    def _export(self, fmt: str) -> None:
        if self.record_id is None:
            return
        self.export_to(fmt, export_dir() / f"{self.record_id}.{fmt}")

    def _exported(self, outcome: Outcome, fmt: str) -> None:
        if not outcome.ok:
            self.message.setText(f"{fmt.upper()} export refused: {outcome.message}")
            return
        self.exported.append(Path(outcome.value))
        self.message.setText(f"{fmt.upper()} written: {outcome.value}")

    def _print(self) -> None:
        """Print = the PDF handed to the system's print dialog path; here: write the PDF and say where."""
        if self.record_id is None:
            return
        path = export_dir() / f"{self.record_id}-print.pdf"
        self.export_to("pdf", path)
        self.message.setText(f"Writing the printable PDF to {path}; print it from the PDF viewer.")

    # -- browser --------------------------------------------------------------------------------
    def refresh_records(self) -> None:
        store = self.ctx.store

        def load():
            from logs.verify import verify_stored
            rows = []
            for doc in store.find_documents(kind=RECORD_KIND):
                try:
                    ok = verify_stored(store, doc.doc_id).ok
                except Exception:  # a record that cannot even be read is not verified
                    ok = False
                rows.append((ok, doc.doc_id, doc.subject or "", doc.status, doc.created_utc))
            return rows
        self.ctx.run(load, self._records_loaded)

    def _records_loaded(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.message.setText("Records could not be listed: " + outcome.message)
            return
        rows = outcome.value
        self.table.setRowCount(len(rows))
        for r, (ok, doc_id, subject, status, created) in enumerate(rows):
            badge = QTableWidgetItem("✓ VERIFIED" if ok else "✗ NOT VERIFIED")
            badge.setForeground(Qt_color(theme.OK_GREEN if ok else "#ff8080"))
            self.table.setItem(r, 0, badge)
            for c, text in enumerate((doc_id, subject, status, created), start=1):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()


def Qt_color(hex_colour: str):  # noqa: N802 - small helper
    from PySide6.QtGui import QBrush, QColor
    return QBrush(QColor(hex_colour))
