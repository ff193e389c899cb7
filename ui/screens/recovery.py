"""Screen 7, recovery: after a console crash, the interrupted treatment with the delivered time and dose
(read back from the unit by the service), and the authorised choice to deliver the remainder or close.

The decision is the service's (physicist or physician, password, written acknowledgement); it never
switches the beam on. This screen shows the figures and collects the decision.
"""
from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLineEdit, QVBoxLayout, QWidget

from ui.context import Context, Outcome
from ui.widgets import fmt_mmss, make_button, make_label, panel


def recovery_text(info) -> str:
    """The figures a person decides on, largest first: what the unit says was delivered."""
    dose = f"{info.delivered_dose_gy:.2f} Gy" if info.delivered_dose_gy is not None else "UNKNOWN — read the unit"
    device = (f"{info.device_irm_dose_gy:.2f} Gy" if info.device_irm_dose_gy is not None else "not read")
    state = (info.device_state or "not reporting").replace("_", " ").upper()
    return (f"DELIVERED (read back from the unit): {dose}\n"
            f"Preset {fmt_mmss(info.preset_s)} · journalled elapsed {fmt_mmss(info.journal_elapsed_s)}\n"
            f"Journal monitor dose {info.journal_irm_dose_gy:.2f} Gy · unit's counter {device}\n"
            f"X-ray unit: {state} · beam OFF, it will not restart by itself\n"
            f"Treatment {info.treatment_id} · plan {info.plan_id}")


class RecoveryScreen(QWidget):
    title = "Recovery"

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.info = None
        self._last_decision: str | None = None
        root = QHBoxLayout(self)
        lf, ll = panel()
        ll.addWidget(make_label("Interrupted treatment", "heading"))
        self.details = make_label("No interrupted treatment.", "figure", wrap=True)
        self.details.setObjectName("recoveryDetails")
        self.details.setStyleSheet("font-size: 28px;")
        ll.addWidget(self.details)
        self.explanation = make_label("", "info", wrap=True)
        self.explanation.setObjectName("recoveryExplanation")
        ll.addWidget(self.explanation)
        ll.addStretch(1)
        root.addWidget(lf, 3)
        rf, rl = panel()
        rl.addWidget(make_label("Decision (physicist or physician)", "heading"))
        form = QFormLayout()
        self.acknowledgement = QLineEdit(objectName="recoveryAck")
        self.acknowledgement.setPlaceholderText("what you checked: unit counter, record, patient")
        self.password = QLineEdit(objectName="recoveryPassword")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow(make_label("Checked"), self.acknowledgement)
        form.addRow(make_label("Password"), self.password)
        rl.addLayout(form)
        self.continue_button = make_button("Deliver the remainder (new plan)", "go", name="recoveryContinue")
        self.close_button = make_button("Close the treatment (incomplete)", "warn", name="recoveryClose")
        rl.addWidget(self.continue_button)
        rl.addWidget(self.close_button)
        self.message = make_label("", "error", wrap=True)
        self.message.setObjectName("recoveryMessage")
        rl.addWidget(self.message)
        rl.addStretch(1)
        root.addWidget(rf, 2)
        self.continue_button.clicked.connect(lambda: self._decide("continue"))
        self.close_button.clicked.connect(lambda: self._decide("close"))
        self.setTabOrder(self.acknowledgement, self.password)
        self.setTabOrder(self.password, self.continue_button)
        self.setTabOrder(self.continue_button, self.close_button)

    def focus_first(self) -> None:
        self.acknowledgement.setFocus()

    def show_status(self, status) -> None:
        if status is None:
            return
        if status.recovery is not None:
            self.info = status.recovery
            self.details.setText(recovery_text(status.recovery))
            self.explanation.setText(status.recovery.message)

    def _decide(self, decision: str) -> None:
        password = self.password.text()
        self.password.clear()
        ack = self.acknowledgement.text().strip()
        if not ack or not password:
            self.message.setText("Write what you checked and enter your password.")
            return
        service, session = self.ctx.service, self.ctx.session

        may_prescribe = session is not None and str(getattr(session.role, "value", session.role)) == \
            "radiation oncologist"

        def decide():
            info = service.decide_recovery(session, password, decision=decision, acknowledgement=ack)
            # the physician may plan the remainder at once; a physicist's decision hands over to the physician
            plan = service.plan_continuation(session, password) if decision == "continue" and may_prescribe else None
            return info, plan
        self._last_decision = decision
        self.message.setText("Recording the decision…")
        self.ctx.run(decide, self._done)

    def _done(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.message.setText("Refused: " + outcome.message)
            return
        info, plan = outcome.value
        self.details.setText(recovery_text(info))
        if plan is not None:
            text = (f"Decision recorded. Continuation plan {plan.plan_id} v{plan.version} created for the remainder: "
                    "it needs both approvals (screen 2).")
        elif self._last_decision == "continue":
            text = ("Decision recorded: deliver the remainder. Next: the physician signs in and presses 'Plan the "
                    "remainder' on screen 1; then both approvals.")
        else:
            text = "Decision recorded: the treatment is closed as incomplete. Next: sign the record (screen 5)."
        self.message.setText(text)
        self.message.setProperty("role", "info")
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
