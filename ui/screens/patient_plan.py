"""Screen 2, patient and plan: select or register a patient by two identifiers; the physician types the
prescription and chooses the applicator; the calculated time, dose rate, source and today's k_out shown.

Every value goes to the treatment service as typed; its refusal (e.g. from parse_prescription_gy) is
shown word for word. Nothing here calculates a dose or a time.
"""
from __future__ import annotations

from datetime import date

from PySide6.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLineEdit, QVBoxLayout, QWidget

from orconsole.models import APPLICATOR_DIAMETERS_CM, Cavity, Patient
from ui.context import Context, Outcome, refusal_text
from ui.widgets import fmt_mmss, make_button, make_label, panel


def parse_date(text: str, what: str) -> date:
    """YYYY-MM-DD only: a date typed in another order is refused, never guessed."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r} is not a date in the form YYYY-MM-DD (e.g. 1961-03-14): "
                         "retype it") from None


def plan_summary(plan) -> str:
    return (f"Plan {plan.plan_id} version {plan.version} ({plan.delivery_type.value.lower()})\n"
            f"Treatment time {fmt_mmss(plan.preset_time_s)} (preset {plan.preset_time_s:.1f} s)\n"
            f"Prescription {plan.prescription_dose_gy:g} Gy at the applicator surface"
            + (f", {plan.previously_delivered_gy:.2f} Gy already delivered" if plan.previously_delivered_gy else "")
            + f"\nApplicator {plan.applicator_cm:.1f} cm · surface dose rate "
            f"{plan.surface_dose_rate_gy_per_min:.3f} Gy/min\n"
            f"Source {plan.source_serial} · today's output check: k_out {plan.k_out:.4f}")


class PatientPlanScreen(QWidget):
    title = "Patient and plan"

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        root = QHBoxLayout(self)
        root.setSpacing(16)

        # -- patient
        pf, pl = panel()
        pl.addWidget(make_label("Patient (two identifiers)", "heading"))
        form = QFormLayout()
        self.mrn = QLineEdit(objectName="mrn")
        self.mrn.setPlaceholderText("medical record number")
        self.dob = QLineEdit(objectName="dob")
        self.dob.setPlaceholderText("YYYY-MM-DD")
        self.full_name = QLineEdit(objectName="fullName")
        self.full_name.setPlaceholderText("only to register a new patient")
        self.trial_id = QLineEdit(objectName="trialId")
        self.trial_id.setPlaceholderText("only to register a new patient")
        form.addRow(make_label("Medical record no."), self.mrn)
        form.addRow(make_label("Date of birth"), self.dob)
        form.addRow(make_label("Full name"), self.full_name)
        form.addRow(make_label("Trial subject ID"), self.trial_id)
        pl.addLayout(form)
        row = QHBoxLayout()
        self.select_button = make_button("Select patient", "primary", name="selectPatient")
        self.register_button = make_button("Register new patient", name="registerPatient")
        row.addWidget(self.select_button)
        row.addWidget(self.register_button)
        pl.addLayout(row)
        self.patient_line = make_label("No patient selected", "info", wrap=True)
        self.patient_line.setObjectName("patientLine")
        pl.addWidget(self.patient_line)
        self.patient_error = make_label("", "error", wrap=True)
        self.patient_error.setObjectName("patientError")
        pl.addWidget(self.patient_error)
        pl.addStretch(1)
        root.addWidget(pf, 1)

        # -- prescription and plan
        rf, rl = panel()
        rl.addWidget(make_label("Prescription (physician)", "heading"))
        form2 = QFormLayout()
        self.prescription = QLineEdit(objectName="prescription")
        self.prescription.setPlaceholderText("dose in Gy at the applicator surface, e.g. 20")
        self.applicator = QComboBox(objectName="applicator")
        self.applicator.addItem("— choose the applicator —", None)
        for d in APPLICATOR_DIAMETERS_CM:
            self.applicator.addItem(f"{d:.1f} cm sphere", float(d))
        self.site = QLineEdit(objectName="site")
        self.site.setPlaceholderText("e.g. left frontal")
        self.lesion = QLineEdit(objectName="lesion")
        self.lesion.setPlaceholderText("e.g. metastasis 1 (NSCLC)")
        self.cavity_cm = QLineEdit(objectName="cavityCm")
        self.cavity_cm.setPlaceholderText("cavity diameter in cm, e.g. 3.0")
        self.rx_password = QLineEdit(objectName="rxPassword")
        self.rx_password.setEchoMode(QLineEdit.EchoMode.Password)
        self.rx_password.setPlaceholderText("your password (signs the prescription)")
        form2.addRow(make_label("Prescribed dose (Gy)"), self.prescription)
        form2.addRow(make_label("Applicator"), self.applicator)
        form2.addRow(make_label("Site"), self.site)
        form2.addRow(make_label("Lesion"), self.lesion)
        form2.addRow(make_label("Cavity diameter (cm)"), self.cavity_cm)
        form2.addRow(make_label("Password"), self.rx_password)
        rl.addLayout(form2)
        self.plan_button = make_button("Prescribe and calculate plan", "primary", name="createPlan")
        rl.addWidget(self.plan_button)
        self.continuation_button = make_button("Plan the remainder (continuation)", name="planContinuation")
        self.continuation_button.setToolTip("after an interrupted delivery: a new plan version for the dose not yet "
                                            "delivered, into the same record; needs both approvals again")
        self.continuation_button.hide()
        rl.addWidget(self.continuation_button)
        self.plan_error = make_label("", "error", wrap=True)
        self.plan_error.setObjectName("planError")
        rl.addWidget(self.plan_error)
        self.plan_text = make_label("No plan yet", "figure", wrap=True)
        self.plan_text.setObjectName("planSummary")
        self.plan_text.setStyleSheet("font-size: 26px;")
        rl.addWidget(self.plan_text)
        rl.addStretch(1)
        root.addWidget(rf, 1)

        self.select_button.clicked.connect(self._select)
        self.register_button.clicked.connect(self._register)
        self.plan_button.clicked.connect(self._create_plan)
        self.continuation_button.clicked.connect(self._plan_continuation)
        for a, b in ((self.mrn, self.dob), (self.dob, self.select_button), (self.select_button, self.full_name),
                     (self.full_name, self.trial_id), (self.trial_id, self.register_button),
                     (self.register_button, self.prescription), (self.prescription, self.applicator),
                     (self.applicator, self.site), (self.site, self.lesion), (self.lesion, self.cavity_cm),
                     (self.cavity_cm, self.rx_password), (self.rx_password, self.plan_button)):
            self.setTabOrder(a, b)

    def focus_first(self) -> None:
        self.mrn.setFocus()

    # -- patient ------------------------------------------------------------------------------
    def _select(self) -> None:
        self.patient_error.clear()
        try:
            dob = parse_date(self.dob.text(), "date of birth")
        except ValueError as exc:
            self.patient_error.setText(str(exc))
            return
        mrn = self.mrn.text().strip()
        if not mrn:
            self.patient_error.setText("Enter the medical record number and the date of birth.")
            return
        self.ctx.run(self.ctx.service.select_patient, self._patient_done, self.ctx.session,
                     medical_record_number=mrn, date_of_birth=dob)

    def _register(self) -> None:
        self.patient_error.clear()
        try:
            patient = Patient(medical_record_number=self.mrn.text().strip(), full_name=self.full_name.text().strip(),
                              date_of_birth=parse_date(self.dob.text(), "date of birth"),
                              trial_subject_id=self.trial_id.text().strip())
        except ValueError as exc:
            self.patient_error.setText(refusal_text(exc))
            return
        self.ctx.run(self.ctx.service.register_patient, self._patient_done, self.ctx.session, patient)

    def _patient_done(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.patient_error.setText(outcome.message)
            return
        p = outcome.value
        self.patient_line.setText(f"Selected: {p.full_name} · MRN {p.medical_record_number} · born "
                                  f"{p.date_of_birth.isoformat()} · trial {p.trial_subject_id}")

    # -- plan ---------------------------------------------------------------------------------
    def _create_plan(self) -> None:
        self.plan_error.clear()
        applicator_cm = self.applicator.currentData()
        if applicator_cm is None:
            self.plan_error.setText("Choose the applicator that will be placed in the cavity.")
            return
        try:
            cavity = Cavity(site=self.site.text().strip(), lesion_label=self.lesion.text().strip(),
                            cavity_diameter_cm=float(self.cavity_cm.text().strip()))
        except ValueError as exc:
            self.plan_error.setText("Cavity: " + (refusal_text(exc) if self.cavity_cm.text().strip() else
                                                  "enter the cavity diameter in cm, e.g. 3.0"))
            return
        password = self.rx_password.text()
        self.rx_password.clear()
        self.plan_error.setText("Calculating…")
        self.ctx.run(self.ctx.service.create_plan, self._plan_done, self.ctx.session, password,
                     prescription_text=self.prescription.text(), applicator_cm=applicator_cm, cavity=cavity)

    def _plan_continuation(self) -> None:
        self.plan_error.clear()
        password = self.rx_password.text()
        self.rx_password.clear()
        if not password:
            self.plan_error.setText("Enter your password (it signs the continuation plan).")
            return
        self.plan_error.setText("Calculating the remainder…")
        self.ctx.run(self.ctx.service.plan_continuation, self._plan_done, self.ctx.session, password)

    def _plan_done(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.plan_error.setText("Refused: " + outcome.message)
            return
        self.plan_error.clear()
        self.plan_text.setText(plan_summary(outcome.value))

    def show_status(self, status) -> None:
        if status is None:
            return
        if status.patient is not None:
            p = status.patient
            self.patient_line.setText(f"Selected: {p.full_name} · MRN {p.medical_record_number} · born "
                                      f"{p.date_of_birth.isoformat()} · trial {p.trial_subject_id}")
        if status.plan is not None:
            self.plan_text.setText(plan_summary(status.plan))
        # after an interruption (recorded sessions, record not signed, no beam): the remainder can be planned
        self.continuation_button.setVisible(
            status.record_id is not None and status.record_sessions > 0 and status.plan is not None
            and status.step.value in ("delivery_ended", "plan_approved", "plan_created", "patient_selected")
            and status.delivered_secondary_gy < 0.995 * status.plan.prescription_dose_gy)
