"""Screen 3, approval: the physician and the physicist each sign the current plan version with their own
password; the physicist enters the independent time check. An approved plan is frozen.

Whoever signs is authenticated here by the identity service (user + password), so two people can
approve at one console without logging the operator out. Entitlement is the service's decision.
"""
from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLineEdit, QVBoxLayout, QWidget

from ui.context import Context, Outcome
from ui.screens.patient_plan import plan_summary
from ui.widgets import make_button, make_label, panel


class ApprovalScreen(QWidget):
    title = "Approval"

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        root = QHBoxLayout(self)
        root.setSpacing(16)
        lf, ll = panel()
        ll.addWidget(make_label("Plan to approve", "heading"))
        self.plan_text = make_label("No plan", "figure", wrap=True)
        self.plan_text.setStyleSheet("font-size: 26px;")
        ll.addWidget(self.plan_text)
        ll.addWidget(make_label("Approvals", "heading"))
        self.approvals = make_label("none yet", "figure", wrap=True)
        self.approvals.setObjectName("approvalsText")
        self.approvals.setStyleSheet("font-size: 26px;")
        ll.addWidget(self.approvals)
        ll.addStretch(1)
        root.addWidget(lf, 3)

        rf, rl = panel()
        rl.addWidget(make_label("Sign the approval", "heading"))
        rl.addWidget(make_label("Physician and physicist each sign with their own user name and password. "
                                "Any change to the plan makes a new version that needs both approvals again.",
                                "info", wrap=True))
        form = QFormLayout()
        self.user = QLineEdit(objectName="approverUser")
        self.password = QLineEdit(objectName="approverPassword")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.physicist_time = QLineEdit(objectName="physicistTime")
        self.physicist_time.setPlaceholderText("physicist: your independent time in s")
        form.addRow(make_label("User name"), self.user)
        form.addRow(make_label("Password"), self.password)
        form.addRow(make_label("Independent time (s)"), self.physicist_time)
        rl.addLayout(form)
        self.sign_button = make_button("Sign approval", "primary", name="signApproval")
        rl.addWidget(self.sign_button)
        self.error = make_label("", "error", wrap=True)
        self.error.setObjectName("approvalError")
        rl.addWidget(self.error)
        rl.addStretch(1)
        root.addWidget(rf, 2)
        self.sign_button.clicked.connect(self._sign)
        self.password.returnPressed.connect(self._sign)
        self.setTabOrder(self.user, self.password)
        self.setTabOrder(self.password, self.physicist_time)
        self.setTabOrder(self.physicist_time, self.sign_button)

    def focus_first(self) -> None:
        if not self.user.text() and self.ctx.session is not None:
            self.user.setText(self.ctx.session.username)
        self.password.setFocus()

    def _sign(self) -> None:
        user, password = self.user.text().strip(), self.password.text()
        self.password.clear()
        text = self.physicist_time.text().strip()
        try:
            physicist_time_s = float(text) if text else None
        except ValueError:
            self.error.setText(f"independent time {text!r} is not a number of seconds: retype it, e.g. 1380.0")
            return
        if not user or not password:
            self.error.setText("Enter the approver's user name and password.")
            return
        service, identity = self.ctx.service, self.ctx.identity

        def approve():
            session = identity.login(user, password)
            try:
                return service.approve_plan(session, password, physicist_time_s=physicist_time_s)
            finally:
                identity.logout(session)
        self.error.setText("Signing…")
        self.ctx.run(approve, self._done)

    def _done(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.error.setText("Refused: " + outcome.message)
            return
        self.error.clear()
        self.physicist_time.clear()
        missing = outcome.value.missing_roles()
        self.error.setText("Signed. " + ("Still missing: " + ", ".join(r.value for r in missing) if missing
                                         else "The plan is fully approved and frozen."))
        self.error.setProperty("role", "info")
        self.error.style().unpolish(self.error)
        self.error.style().polish(self.error)

    def show_status(self, status) -> None:
        if status is None:
            return
        self.plan_text.setText(plan_summary(status.plan) if status.plan is not None else "No plan yet")
        lines = []
        for a in status.approvals:
            check = ""
            if a.independent_time_s is not None:
                check = f" · independent time {a.independent_time_s:.1f} s"
                if a.deviation_fraction is not None:
                    check += f" ({a.deviation_fraction * 100:+.2f} %)"
            lines.append(f"✓ {a.role}: {a.printed_name}, {a.signed_utc}{check}")
        for m in status.missing_approvals:
            lines.append(f"✗ {m}: NOT YET SIGNED")
        self.approvals.setText("\n".join(lines) if lines else "none yet")
