"""The physicist's source calibration screen: import a calibration file (every problem listed with file,
line and field; nothing imported on any error), list the versions with the active one marked and the
expiry shown, approve a version with the password re-entered (signature "approved calibration").

Validation, versions, approval and expiry are the core's (orconsole.calibration); this screen only shows
them and sends the physicist's requests. Never edits a stored version; never talks to a device.
"""
from __future__ import annotations

from datetime import date, timedelta

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLineEdit, QListWidget, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from orconsole.calibration import (DEFAULT_MAX_DOSE_RATE_GY_PER_MIN, CalibrationImportError,
                                   StoreCalibrationRepository, approve_calibration, calibration_interlock_reason,
                                   import_calibration)
from orconsole.identity import Permission
from orconsole.qa import QaPolicy
from ui import theme
from ui.context import Context, Outcome
from ui.widgets import make_button, make_label, panel

TEST_SOURCE_MAX_DOSE_RATE_GY_PER_MIN = 200.0   # the simulator's 60x TEST source (docs/qa.md)
COLUMNS = ("", "version", "dated", "usable until", "reference", "applicators", "imported by")


def usable_until(record, max_validity_days: int) -> date:
    """The last day the calibration may be used: its valid_until, never beyond the site's maximum validity."""
    return min(record.valid_until, record.calibration_date + timedelta(days=max_validity_days))


class CalibrationScreen(QWidget):
    title = "Source calibration"

    def __init__(self, ctx: Context, *, policy: QaPolicy | None = None, today=date.today,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        config = getattr(ctx.service, "config", None)
        self.policy = policy or (QaPolicy.from_site(config) if config is not None else QaPolicy())
        self._today = today
        self.versions = []
        self.active_doc_id: str | None = None
        root = QHBoxLayout(self)
        root.setSpacing(16)

        lf, ll = panel()
        ll.addWidget(make_label("Import a calibration file", "heading"))
        ll.addWidget(make_label("JSON or CSV (docs/calibration-format.md). The whole file is checked first; with "
                                "any problem nothing is imported. An import is a new version, not active until "
                                "a physicist approves it.", "info", wrap=True))
        self.path = QLineEdit(objectName="calFilePath")
        self.path.setPlaceholderText("path of the calibration file, e.g. /media/usb/XRS-0412-2026.json")
        ll.addWidget(self.path)
        self.test_source = QCheckBox("Simulator TEST source (up to 200 Gy/min)",
                                     objectName="calTestSource")
        ll.addWidget(self.test_source)
        self.import_button = make_button("Import file", "primary", name="calImport")
        ll.addWidget(self.import_button)
        ll.addWidget(make_label("Problems found", "heading"))
        self.problems = QListWidget(objectName="calProblems")
        self.problems.setWordWrap(True)
        self.problems.setSpacing(6)
        self.problems.setStyleSheet("font-size: 18px;")
        ll.addWidget(self.problems, 1)
        self.import_message = make_label("", "info", wrap=True)
        self.import_message.setObjectName("calImportMessage")
        ll.addWidget(self.import_message)
        root.addWidget(lf, 4)

        rf, rl = panel()
        top = QHBoxLayout()
        top.addWidget(make_label("Versions of source", "heading"))
        self.source = QComboBox(objectName="calSource")
        self.source.setEditable(True)
        self.source.setMinimumWidth(220)
        top.addWidget(self.source, 1)
        self.refresh_button = make_button("Show", name="calRefresh")
        top.addWidget(self.refresh_button)
        rl.addLayout(top)
        self.state = make_label("", "info", wrap=True)
        self.state.setObjectName("calState")
        rl.addWidget(self.state)
        self.table = QTableWidget(0, len(COLUMNS), objectName="calVersions")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setStyleSheet("font-size: 18px;")
        rl.addWidget(self.table, 1)
        form = QFormLayout()
        self.password = QLineEdit(objectName="calPassword")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("your password, re-entered to sign the approval")
        form.addRow(make_label("Password"), self.password)
        rl.addLayout(form)
        self.approve_button = make_button("Approve selected version", "primary", name="calApprove")
        rl.addWidget(self.approve_button)
        self.approve_message = make_label("", "info", wrap=True)
        self.approve_message.setObjectName("calApproveMessage")
        rl.addWidget(self.approve_message)
        root.addWidget(rf, 7)

        self.import_button.clicked.connect(self.import_file)
        self.path.returnPressed.connect(self.import_file)
        self.refresh_button.clicked.connect(self.refresh)
        self.source.activated.connect(lambda _i: self.refresh())
        self.approve_button.clicked.connect(self.approve)
        self.password.returnPressed.connect(self.approve)

    def focus_first(self) -> None:
        self.path.setFocus()
        self.refresh()

    def show_status(self, status) -> None:
        pass

    # -- import ------------------------------------------------------------------------------------------
    def import_file(self) -> None:
        path, session = self.path.text().strip(), self.ctx.session
        if not path:
            self.import_message.setText("Enter the path of the calibration file.")
            return
        if session is None:
            self.import_message.setText("Sign in as a medical physicist to import a calibration.")
            return
        identity, store, policy = self.ctx.identity, self.ctx.store, self.policy
        limit = TEST_SOURCE_MAX_DOSE_RATE_GY_PER_MIN if self.test_source.isChecked() else DEFAULT_MAX_DOSE_RATE_GY_PER_MIN

        def do_import():
            identity.require(session, Permission.MANAGE_CALIBRATION, "import a source calibration")
            try:
                return import_calibration(StoreCalibrationRepository(store), path, actor=session.username,
                                          today=self._today(), max_validity_days=policy.calibration_max_validity_days,
                                          max_dose_rate_gy_per_min=limit)
            except CalibrationImportError as exc:
                return exc       # the list of problems is shown, not a single line
        self.problems.clear()
        self.table.clearSelection()     # nothing is approved by mistake while the new version is on its way
        self.import_message.setText("Checking the file…")
        self.ctx.run(do_import, self._imported)

    def _imported(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.import_message.setText(f"Nothing imported: {outcome.message}")
            return
        if isinstance(outcome.value, CalibrationImportError):
            issues = outcome.value.issues
            for issue in issues:
                self.problems.addItem(str(issue))
            self.import_message.setText(f"Nothing imported: {len(issues)} problem(s) in {outcome.value.file}. "
                                        "Correct the file and import it again.")
            return
        stored = outcome.value
        r = stored.record
        self.import_message.setText(
            f"Imported as version {stored.version} of source {r.source_serial}, dated {r.calibration_date}, valid "
            f"until {r.valid_until}. NOT ACTIVE until a physicist approves it (select it and sign).")
        self.source.setCurrentText(r.source_serial)
        self.refresh(select_doc_id=stored.doc_id)

    # -- versions -------------------------------------------------------------------------------------------
    def refresh(self, select_doc_id: str | None = None) -> None:
        store, serial, policy = self.ctx.store, self.source.currentText().strip(), self.policy

        def load():
            serials = sorted({d.subject for d in store.find_documents(kind="calibration", status="final")
                              if d.subject})
            if not serial:
                return serials, None, [], None, None
            repo = StoreCalibrationRepository(store)
            active = repo.active(serial)
            reason = calibration_interlock_reason(repo, serial, today=self._today(),
                                                  max_validity_days=policy.calibration_max_validity_days)
            return serials, serial, repo.versions(serial), active.doc_id if active else None, reason
        self.ctx.run(load, lambda o: self._loaded(o, select_doc_id))

    def _loaded(self, outcome: Outcome, select_doc_id: str | None) -> None:
        if not outcome.ok:
            self.state.setText(f"The calibrations could not be read: {outcome.message}")
            return
        serials, serial, versions, active_id, reason = outcome.value
        current = self.source.currentText()
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItems(serials)
        self.source.setCurrentText(current or (serials[0] if serials else ""))
        self.source.blockSignals(False)
        if serial is None:
            if serials:
                self.refresh(select_doc_id)
            else:
                self.state.setText("No calibration imported yet.")
            return
        self.versions, self.active_doc_id = versions, active_id
        today = self._today()
        self.table.setRowCount(len(versions))
        for i, v in enumerate(reversed(versions)):
            r = v.record
            until = usable_until(r, self.policy.calibration_max_validity_days)
            expired = today > until
            mark = "ACTIVE" if v.doc_id == active_id else ""
            days_left = (until - today).days
            values = [mark, f"v{v.version}", r.calibration_date.isoformat(),
                      f"{until.isoformat()} ({'EXPIRED' if expired else f'{days_left} days left'})",
                      f"{r.reference_reading_nc:g} nC",
                      f"{min(a.diameter_cm for a in r.applicators):g}–{max(a.diameter_cm for a in r.applicators):g} cm "
                      f"({len(r.applicators)})",
                      v.imported_by]
            for j, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setData(256, v.doc_id)      # Qt.UserRole
                if mark:
                    item.setBackground(QBrush(QColor(theme.OK_GREEN if not expired else theme.DANGER_RED)))
                    item.setForeground(QBrush(QColor("#ffffff")))
                elif expired:
                    item.setForeground(QBrush(QColor("#ffb4b4")))
                self.table.setItem(i, j, item)
            if v.doc_id == select_doc_id:
                self.table.selectRow(i)
        self.table.resizeColumnsToContents()
        self.state.setText(f"Source {serial}: " + (f"TREATMENT AND QA HELD — {reason}" if reason else
                                                   "active calibration usable today"))

    def selected_doc_id(self) -> str | None:
        items = self.table.selectedItems()
        return items[0].data(256) if items else None

    # -- approval -------------------------------------------------------------------------------------------
    def approve(self) -> None:
        doc_id, session, password = self.selected_doc_id(), self.ctx.session, self.password.text()
        self.password.clear()
        serial = self.source.currentText().strip()
        if doc_id is None:
            self.approve_message.setText("Select the version to approve.")
            return
        if session is None or not password:
            self.approve_message.setText("Re-enter your password to sign the approval.")
            return
        identity, store = self.ctx.identity, self.ctx.store

        def do_approve():
            identity.require(session, Permission.MANAGE_CALIBRATION, "approve a source calibration")
            return approve_calibration(StoreCalibrationRepository(store), serial, doc_id, physicist=session.username,
                                       today=self._today(),
                                       sign=lambda d: identity.sign(session, password, d, "approved calibration"))
        self.approve_message.setText("Signing the approval…")
        self.ctx.run(do_approve, self._approved)

    def _approved(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.approve_message.setText(f"Not approved: {outcome.message}")
            return
        v = outcome.value
        self.approve_message.setText(f"Approved and signed: version {v.version} dated {v.record.calibration_date} "
                                     f"is now the ACTIVE calibration of source {v.record.source_serial}.")
        self.refresh(select_doc_id=v.doc_id)
