"""Screen 1, login (and the lock screen): user name and password against orconsole.identity.

Authentication, lockout and audit are the identity service's; this screen only collects the two
fields and shows its answer. Never stores or logs a password.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFormLayout, QLineEdit, QVBoxLayout, QWidget

from ui.context import Context, Outcome
from ui.widgets import make_button, make_label, panel


def first_run_command(db_url: str | None) -> str:
    """The documented first-run step (docs/storage.md), for the store this console uses (one shell command;
    the line break is a shell continuation)."""
    db = f" \\\n      --db '{db_url}'" if db_url else ""
    return f'orconsole admin create-first-admin --username NAME --full-name "PRINTED NAME"{db}'


def first_run_text(db_url: str | None) -> str:
    """What to do on an installation without any account (docs/storage.md, 'First run')."""
    return ("NO USER ACCOUNT EXISTS YET, so nobody can sign in.\n"
            "An administrator creates the first one, once, in a terminal on this computer:\n\n"
            "  " + first_run_command(db_url) + "\n\n"
            "It asks for the password twice (at least 10 characters). Then the administrator adds\n"
            "the clinical accounts (same --db):\n"
            "  orconsole admin add-user --admin NAME --username USER --full-name \"PRINTED NAME\" \\\n"
            "      --role therapist|physicist|oncologist")


class LoginScreen(QWidget):
    """Emits `logged_in(Session)`. In lock mode it says who locked it and that the treatment continues."""

    logged_in = Signal(object)
    title = "Sign in"

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        frame, layout = panel()
        frame.setMaximumWidth(1400)
        outer.addWidget(frame, 0, Qt.AlignmentFlag.AlignHCenter)
        outer.addStretch(2)
        self.heading = make_label("ORConsole — sign in", "heading")
        layout.addWidget(self.heading)
        self.info = make_label("Intraoperative radiotherapy console. Sign in with your own account; every "
                               "action is recorded under your name.", "info", wrap=True)
        layout.addWidget(self.info)
        form = QFormLayout()
        form.setVerticalSpacing(14)
        self.username = QLineEdit()
        self.username.setObjectName("username")
        self.username.setPlaceholderText("user name")
        self.password = QLineEdit()
        self.password.setObjectName("password")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("password")
        form.addRow(make_label("User name"), self.username)
        form.addRow(make_label("Password"), self.password)
        layout.addLayout(form)
        self.sign_in = make_button("Sign in", "primary", name="signIn")
        layout.addWidget(self.sign_in)
        self.error = make_label("", "error", wrap=True)
        self.error.setObjectName("loginError")
        layout.addWidget(self.error)
        self.first_run = make_label("")          # no word wrap: explicit lines, so nothing is ever cut off
        self.first_run.setStyleSheet("color: #ffd27f; font-size: 21px; font-weight: 700; background: #2a2410; "
                                     "padding: 10px; border-left: 8px solid #f0a500;")
        self.first_run.setObjectName("firstRun")
        self.first_run.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.first_run.hide()
        layout.addWidget(self.first_run)
        self.sign_in.clicked.connect(self._submit)
        self.password.returnPressed.connect(self._submit)
        self.username.returnPressed.connect(self.password.setFocus)
        self.setTabOrder(self.username, self.password)
        self.setTabOrder(self.password, self.sign_in)
        self._busy = False

    def set_locked(self, locked_by: str | None) -> None:
        if locked_by:
            self.heading.setText("Console locked")
            self.info.setText(f"Locked after inactivity (last user: {locked_by}). The treatment supervisor keeps "
                              "running; sign in to continue.")
            self.username.setText(locked_by)
        else:
            self.heading.setText("ORConsole — sign in")
            self.username.clear()
        self.password.clear()
        self.error.clear()
        self.check_first_run()

    def check_first_run(self) -> None:
        """Ask the identity service (off the GUI thread) whether any account exists; if none, say how the
        first administrator is created. The console never creates an account itself."""
        has_users = getattr(self.ctx.identity, "has_users", None)
        if has_users is not None:
            self.ctx.run(has_users, self._first_run_known)

    def _first_run_known(self, outcome: Outcome) -> None:
        if not outcome.ok or outcome.value:
            self.first_run.hide()
            return
        self.first_run.setText(first_run_text(getattr(self.ctx.store, "display_url", None)))
        self.first_run.setMinimumHeight(self.first_run.sizeHint().height() + 2 * 10 + 8)   # + style padding
        self.first_run.show()

    def focus_first(self) -> None:
        (self.password if self.username.text() else self.username).setFocus()

    def _submit(self) -> None:
        if self._busy:
            return
        user, password = self.username.text().strip(), self.password.text()
        if not user or not password:
            self.error.setText("Enter your user name and your password.")
            return
        self._busy = True
        self.error.setText("Checking…")
        self.ctx.run(self.ctx.identity.login, self._done, user, password)

    def _done(self, outcome: Outcome) -> None:
        self._busy = False
        self.password.clear()
        if not outcome.ok:
            self.error.setText(outcome.message)
            self.password.setFocus()
            return
        self.error.clear()
        self.logged_in.emit(outcome.value)
