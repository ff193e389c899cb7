"""The bedside console window and `run_console(args)`, called by `orconsole` with no sub-command.

Wires the screens to one TreatmentService (built by the core's composition root), polls its two
mailboxes on QTimers, keeps STOP reachable from every screen, locks after inactivity (never while a
beam is armed, on or paused). Never talks to drivers; never decides anything about the beam.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QMainWindow, QStackedWidget, QVBoxLayout, QWidget)

from orconsole.identity import Role
from orconsole.statemachine import State
from ui import theme
from ui.bridge import STALE_AFTER_S, SnapshotBridge
from ui.context import Context, refusal_text
from ui.screens.approval import ApprovalScreen
from ui.screens.calibration import CalibrationScreen
from ui.screens.checklist import ChecklistScreen
from ui.screens.login import LoginScreen
from ui.screens.patient_plan import PatientPlanScreen
from ui.screens.qa_history import QaHistoryScreen
from ui.screens.qa_output import OutputCheckScreen
from ui.screens.record import RecordScreen
from ui.screens.recovery import RecoveryScreen
from ui.screens.treatment import STOP_KEYS, TreatmentScreen
from ui.widgets import AlarmBar, StateBanner, make_button, make_label

log = logging.getLogger(__name__)

LOCK_AFTER_S = 300.0

_CLINICAL = (Role.RADIATION_THERAPIST, Role.MEDICAL_PHYSICIST, Role.RADIATION_ONCOLOGIST)
# screen key -> (button text, roles that see it)
NAVIGATION: dict[str, tuple[str, tuple[Role, ...]]] = {
    "patient": ("1 · Patient and plan", _CLINICAL),
    "approval": ("2 · Approval", (Role.MEDICAL_PHYSICIST, Role.RADIATION_ONCOLOGIST)),
    "checklist": ("3 · Checklist", _CLINICAL),
    "treatment": ("4 · Treatment", _CLINICAL),
    "record": ("5 · Record", _CLINICAL + (Role.ADMINISTRATOR,)),
    "recovery": ("6 · Recovery", _CLINICAL),
    "dev": ("7 · Simulator (dev)", _CLINICAL + (Role.ADMINISTRATOR,)),
    "qa_output": ("8 · Daily output check", (Role.MEDICAL_PHYSICIST,)),
    "qa_history": ("9 · QA trends", (Role.MEDICAL_PHYSICIST,)),
    "calibration": ("0 · Calibration", (Role.MEDICAL_PHYSICIST,)),
}


class _Result:
    """A CommandResult-shaped refusal for a service call that raised."""

    def __init__(self, ok: bool, reason: str, state: Any = None) -> None:
        self.ok, self.reason, self.state = ok, reason, state


class BeamControls:
    """The treatment screen's commands, mapped onto the TreatmentService, each returning a Future."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _call(self, fn, *args, urgent: bool = False):
        def call():
            try:
                return fn(*args)
            except Exception as exc:
                return _Result(False, refusal_text(exc))
        return self.ctx.submit(call, urgent=urgent)

    def arm(self):
        return self._call(self.ctx.service.start_treatment, self.ctx.session)

    def beam_on(self):
        return self._call(self.ctx.service.beam_on, self.ctx.session)

    def pause(self):
        return self._call(self.ctx.service.pause, self.ctx.session)

    def resume(self):
        return self._call(self.ctx.service.resume, self.ctx.session)

    def stop(self):
        session = self.ctx.session
        if session is None:       # anyone at the console may stop the beam, even when locked
            return self._call(self.ctx.service.emergency_stop, urgent=True)
        return self._call(self.ctx.service.stop, session, urgent=True)

    def disarm(self):
        session = self.ctx.session
        if session is None:       # locked console: STOP ends it, as anyone may
            return self._call(self.ctx.service.emergency_stop, urgent=True)
        return self._call(self.ctx.service.disarm, session, urgent=True)

    def reconnect(self):
        return self._call(self.ctx.service.reconnect_devices, self.ctx.session)

    def clear_latched(self, acknowledgement: str):
        """Clear every latched interlock whose condition is gone, each with the person's acknowledgement;
        the service checks who may clear which (a refusal says so)."""
        service, session = self.ctx.service, self.ctx.session
        snap = self.ctx.snapshot
        ids = [s.id for s in (snap.interlocks if snap is not None else ()) if not s.condition_present]

        def clear_all():
            if not ids:
                return _Result(False, "no latched interlock is ready to clear: remove its cause first")
            reasons, ok = [], True
            for iid in ids:
                try:
                    r = service.clear_interlock(session, iid, acknowledgement=acknowledgement)
                except Exception as exc:
                    r = _Result(False, refusal_text(exc))
                ok = ok and r.ok
                reasons.append(f"{iid.value}: {r.reason}")
            return _Result(ok, "; ".join(reasons))
        return self.ctx.submit(clear_all)

    def record_interruption_reason(self, reason: str) -> None:
        annotate = getattr(self.ctx.service, "annotate_interruption", None)
        log.warning("interruption reason given by %s: %s",
                    self.ctx.session.username if self.ctx.session else "unknown", reason)
        if annotate is not None:
            self.ctx.run(annotate, lambda o: None, self.ctx.session, reason)


class _ActivityFilter(QObject):
    """Notes the time of the last key press, click or touch anywhere in the application."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.last_activity_s = time.monotonic()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt
        if event.type() in (QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.TouchBegin,
                            QEvent.Type.Wheel):
            self.last_activity_s = time.monotonic()
        return False


class ConsoleWindow(QMainWindow):
    """The console. `service` is a started TreatmentService; `identity` its IdentityService."""

    locked = Signal()

    def __init__(self, *, service: Any, identity: Any, store: Any, dev_bench: Any = None,
                 lock_after_s: float = LOCK_AFTER_S, site_name: str = "") -> None:
        super().__init__()
        self.setWindowTitle("ORConsole — intraoperative radiotherapy" + (f" — {site_name}" if site_name else ""))
        self.ctx = Context(service=service, identity=identity, store=store, dev_bench=dev_bench, parent=self)
        self.lock_after_s = lock_after_s
        self._locked_user: str | None = None

        central = QWidget()
        self.setCentralWidget(central)
        root = QVBoxLayout(central)
        root.setContentsMargins(0, 0, 0, 0)
        root.setSpacing(0)
        self.stale_s: float | None = None
        self.banner = StateBanner()
        root.addWidget(self.banner)
        self.alarm = AlarmBar()
        root.addWidget(self.alarm)
        header = QHBoxLayout()
        header.setContentsMargins(16, 6, 16, 6)
        self.user_label = make_label("Not signed in", "info")
        self.user_label.setObjectName("userLabel")
        self.patient_label = make_label("", "info")
        self.patient_label.setObjectName("patientHeader")
        self.patient_label.setWordWrap(True)        # a long name must not widen the window past the screen
        self.user_label.setWordWrap(True)
        self.lock_button = make_button("Lock", name="lockButton")
        self.logout_button = make_button("Sign out", name="logoutButton")
        header.setSpacing(24)
        header.addWidget(self.user_label)
        header.addWidget(self.patient_label, 1)
        header.addWidget(self.lock_button)
        header.addWidget(self.logout_button)
        root.addLayout(header)
        self.next_step = make_label("", "info", wrap=True)
        self.next_step.setObjectName("nextStep")
        self.next_step.setStyleSheet(f"color: {theme.TEXT}; font-size: {theme.LABEL_FONT_PX}px; font-weight: 700; "
                                     "padding: 0px 16px 8px 16px;")
        root.addWidget(self.next_step)
        body = QHBoxLayout()
        body.setContentsMargins(12, 0, 12, 12)
        root.addLayout(body, 1)
        self.nav_box = QWidget()
        nav = QVBoxLayout(self.nav_box)
        nav.setContentsMargins(0, 0, 0, 0)
        self.nav_box.setFixedWidth(310)
        body.addWidget(self.nav_box)
        self.stack = QStackedWidget()
        body.addWidget(self.stack, 1)

        self.controls = BeamControls(self.ctx)
        self.login = LoginScreen(self.ctx)
        self.screens: dict[str, QWidget] = {
            "patient": PatientPlanScreen(self.ctx),
            "approval": ApprovalScreen(self.ctx),
            "checklist": ChecklistScreen(self.ctx),
            "treatment": TreatmentScreen(self.controls, self.ctx.futures, own_shortcuts=False),
            "record": RecordScreen(self.ctx),
            "recovery": RecoveryScreen(self.ctx),
        }
        if dev_bench is not None:
            from ui.dev_panel import DevPanel
            self.screens["dev"] = DevPanel(dev_bench)
        # the physicist's QA screens (docs/qa.md)
        self.screens["qa_output"] = OutputCheckScreen(self.ctx)
        self.screens["qa_history"] = QaHistoryScreen(self.ctx)
        self.screens["calibration"] = CalibrationScreen(self.ctx)
        self.stack.addWidget(self.login)
        self.nav_buttons: dict[str, Any] = {}
        for i, (key, screen) in enumerate(self.screens.items()):
            self.stack.addWidget(screen)
            text, _roles = NAVIGATION[key]
            button = make_button(text, "nav", name=f"nav_{key}")
            button.setCheckable(True)
            button.setToolTip(f"Ctrl+{i + 1}")
            button.clicked.connect(lambda _=False, k=key: self.show_screen(k))
            nav.addWidget(button)
            self.nav_buttons[key] = button
            shortcut = QShortcut(QKeySequence(f"Ctrl+{text[0]}"), self)
            shortcut.activated.connect(lambda k=key: self.show_screen(k))
        nav.addStretch(1)
        self.screens["checklist"].go_to_treatment.connect(lambda: self.show_screen("treatment"))
        self.screens["treatment"].go_to_record.connect(lambda: self.show_screen("record"))
        self.login.logged_in.connect(self._logged_in)
        self.lock_button.clicked.connect(self.lock)
        self.logout_button.clicked.connect(self.logout)
        self.alarm.acknowledged.connect(self._alarm_acknowledged)
        silence = QShortcut(QKeySequence("F8"), self)
        silence.activated.connect(self.alarm.ack_button.click)

        # STOP from anywhere, also when locked
        self.stop_shortcuts = []
        for key in STOP_KEYS:
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
            sc.activated.connect(self.screens["treatment"].stop)
            self.stop_shortcuts.append(sc)

        self.snapshots = SnapshotBridge(service.subscribe_treatment(), parent=self)
        self.snapshots.snapshot.connect(self._on_snapshot)
        self.statuses = SnapshotBridge(service.subscribe_status(), parent=self)
        self.statuses.snapshot.connect(self._on_status)
        self.activity = _ActivityFilter(self)
        QApplication.instance().installEventFilter(self.activity)
        self._idle_timer = QTimer(self)
        self._idle_timer.setInterval(1000)
        self._idle_timer.timeout.connect(self._check_idle)
        self._stale_timer = QTimer(self)
        self._stale_timer.setInterval(250)
        self._stale_timer.timeout.connect(self._check_stale)
        self._show_login()
        self.snapshots.start()
        self.statuses.start()
        self._idle_timer.start()
        self._stale_timer.start()

    # -- navigation ---------------------------------------------------------------------------------
    def current_key(self) -> str | None:
        widget = self.stack.currentWidget()
        return next((k for k, w in self.screens.items() if w is widget), None)

    def show_screen(self, key: str) -> None:
        if self.ctx.session is None or key not in self.screens or self.nav_buttons[key].isHidden():
            return
        screen = self.screens[key]
        self.stack.setCurrentWidget(screen)
        for k, b in self.nav_buttons.items():
            b.setChecked(k == key)
        show = getattr(screen, "show_status", None)
        if show is not None:
            show(self.ctx.status)
        focus = getattr(screen, "focus_first", None)
        if focus is not None:
            focus()

    def _show_login(self) -> None:
        self.nav_box.setVisible(False)
        self.lock_button.setVisible(False)
        self.logout_button.setVisible(False)
        self.login.set_locked(self._locked_user)
        self.stack.setCurrentWidget(self.login)
        self._show_next_step()
        self.login.focus_first()

    def _logged_in(self, session) -> None:
        self.ctx.set_session(session)
        self._locked_user = None
        self.alarm.user_name = session.full_name
        self.user_label.setText(f"Signed in: {session.full_name} ({session.role})")
        for key, button in self.nav_buttons.items():
            button.setVisible(Role(session.role) in NAVIGATION[key][1])
        self.nav_box.setVisible(True)
        self.lock_button.setVisible(True)
        self.logout_button.setVisible(True)
        self.activity.last_activity_s = time.monotonic()
        self._show_next_step()
        status, snap = self.ctx.status, self.ctx.snapshot
        if snap is not None and snap.state in theme.BEAM_STATES:
            target = "treatment"
        elif status is not None and status.recovery is not None and status.step.value == "interrupted":
            target = "recovery"
        else:
            target = next((k for k, b in self.nav_buttons.items() if not b.isHidden()), "record")
        self.show_screen(target)

    def lock(self) -> None:
        """Lock now (the treatment supervisor keeps running; STOP stays active)."""
        if self.ctx.session is None:
            return
        self._locked_user = self.ctx.session.username
        self.ctx.set_session(None)
        self.user_label.setText("Locked")
        self._show_login()
        self.locked.emit()

    def logout(self) -> None:
        snap = self.ctx.snapshot
        if snap is not None and snap.state in theme.BEAM_STATES:
            self.screens["treatment"].message.setText("Cannot sign out while a treatment is armed, on or paused.")
            return
        session = self.ctx.session
        if session is not None:
            self.ctx.run(self.ctx.identity.logout, lambda o: None, session)
        self._locked_user = None
        self.ctx.set_session(None)
        self.user_label.setText("Not signed in")
        self._show_login()

    def _check_idle(self) -> None:
        snap = self.ctx.snapshot
        if self.ctx.session is None or (snap is not None and snap.state in theme.BEAM_STATES):
            return
        if time.monotonic() - self.activity.last_activity_s >= self.lock_after_s:
            self.lock()

    # -- data -----------------------------------------------------------------------------------------
    def _on_snapshot(self, snap) -> None:
        previous = self.ctx.snapshot
        self.ctx.snapshot = snap
        self.stale_s = None
        self._show_banner()
        self.screens["treatment"].set_stale(None)
        self.screens["treatment"].show_snapshot(snap)
        self.screens["checklist"].show_snapshot(snap)
        changed = previous is None or previous.state is not snap.state
        ended_beam = previous is not None and previous.state in theme.BEAM_STATES \
            and snap.state in (State.TERMINATED, State.FAULT, State.COMPLETED)
        if self.ctx.session is not None and changed and (snap.state in (State.ARMED, State.BEAM_ON) or ended_beam):
            self.show_screen("treatment")   # the beam, and how it ended, are always in front
        self.alarm.show_alarm(alarm_text(snap))
        if snap.state in theme.BEAM_STATES:
            self.activity.last_activity_s = time.monotonic()   # never lock during a beam

    def _check_stale(self) -> None:
        """No new snapshot for STALE_AFTER_S: the figures on screen are old; say so, in words."""
        age = self.snapshots.age_s()
        snap = self.ctx.snapshot
        if age is None or age < STALE_AFTER_S:
            return
        self.stale_s = age
        self._show_banner()
        self.screens["treatment"].set_stale(age)
        self.alarm.show_alarm(" · ".join(x for x in (
            "DISPLAY NOT UPDATING — no news from the treatment supervisor; the figures shown are old. If the "
            "beam may be on, press STOP (Esc)", alarm_text(snap) if snap else "") if x))

    def _show_next_step(self) -> None:
        self.next_step.setText(next_step_text(self.ctx.status) if self.ctx.session is not None else
                               "NEXT: sign in with your own account (STOP works without signing in: Esc or F12)")

    def _show_banner(self) -> None:
        snap, status = self.ctx.snapshot, self.ctx.status
        words = _BANNER_STEP.get(status.step.value) if status is not None else None
        self.banner.show_state(snap.state if snap else None, snap.link_ok if snap else True, stale_s=self.stale_s,
                               workflow_words=words)

    def _on_status(self, status) -> None:
        self.ctx.status = status
        self._show_banner()
        p = status.patient
        self.patient_label.setText(
            (f"Patient: {p.full_name} · MRN {p.medical_record_number} · born {p.date_of_birth.isoformat()}"
             if p is not None else "No patient selected") + f" · step: {status.step.value.replace('_', ' ')}")
        self._show_next_step()
        self.screens["treatment"].set_workflow_ready(
            status.step.value in ("plan_approved", "ready_to_treat") and status.checklist is not None
            and status.checklist.ok)
        screen = self.stack.currentWidget()
        show = getattr(screen, "show_status", None)
        if show is not None:
            show(status)
        self.screens["record"].show_status(status)

    def _alarm_acknowledged(self, text: str) -> None:
        store = self.ctx.store
        who = self.ctx.session.username if self.ctx.session else "console (locked)"
        audit = getattr(store, "audit", None)
        if audit is not None:
            self.ctx.run(audit, lambda o: None, who, "alarm silenced", {"alarm": text})

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt
        snap = self.ctx.snapshot
        if snap is not None and snap.state in theme.BEAM_STATES:
            self.screens["treatment"].message.setText(
                "The console cannot be closed while a treatment is armed, on or paused: stop it first.")
            event.ignore()
            return
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        self._idle_timer.stop()
        self._stale_timer.stop()
        self.snapshots.stop()
        self.statuses.stop()
        self.alarm.show_alarm("")
        QApplication.instance().removeEventFilter(self.activity)
        self.ctx.close()


# what the banner says while the supervisor holds no plan (IDLE), from the workflow's step
_BANNER_STEP = {
    "devices_disconnected": "X-RAY UNIT NOT CONNECTED",
    "no_patient": "no patient selected",
    "patient_selected": "patient selected, no plan yet",
    "plan_created": "plan awaiting approvals",
    "plan_approved": "plan approved, checklist next",
    "delivery_ended": "delivery ended, record to sign",
    "record_signed": "record signed",
}

_NEXT_STEP = {
    "devices_disconnected": "the X-ray unit is not connected: check its cable and power, then restart the console",
    "no_patient": "select the patient (screen 1)",
    "patient_selected": "the physician prescribes and calculates the plan (screen 1)",
    "plan_created": "the physician and the physicist sign the plan (screen 2)",
    "plan_approved": "the therapist warms up the unit and runs the checklist (screen 3)",
    "ready_to_treat": "ARM, then START BEAM (screen 4)",
    "treating": "treatment in progress (screen 4) — STOP: Esc or F12",
    "delivery_ended": "sign the delivery record (screen 5); if the dose is incomplete, the physician plans "
                      "the remainder (screen 1)",
    "record_signed": "record signed: export it (screen 5) or select the next patient",
    "interrupted": "a physicist or physician decides on the interrupted treatment (screen 6)",
}


def next_step_text(status) -> str:
    """The obvious next step for this workflow status, in words (the service decides what is allowed)."""
    if status is None:
        return ""
    if getattr(status, "irm_unsettled", None) and status.step.value == "delivery_ended":
        return ("NEXT: settle the monitor dose — Reconnect the X-ray unit (screen 4) so the console reads its "
                "counter, or a physicist enters the dose the unit shows (screen 5); then sign or continue")
    return "NEXT: " + _NEXT_STEP.get(status.step.value, status.step.value.replace("_", " "))


def alarm_text(snap) -> str:
    """What the alarm bar says for this snapshot ('' = no alarm). Derived only from published facts."""
    parts = []
    if snap.state is State.FAULT:
        parts.append("FAULT — the treatment was stopped by a fault; confirm the beam is off")
    elif snap.state is State.TERMINATED and snap.termination is not None and snap.termination.value == "MACHINE":
        parts.append("TREATMENT TERMINATED BY THE MACHINE")
    elif snap.state is State.INTERRUPTED:
        parts.append("INTERRUPTED TREATMENT found after a restart — recovery decision needed")
    if not snap.link_ok:
        parts.append("LINK TO THE X-RAY UNIT LOST")
    if snap.state in theme.BEAM_STATES or snap.state in (State.FAULT, State.TERMINATED):
        parts.extend(s.title for s in snap.interlocks if s.title not in parts)
    return " · ".join(parts)


def run_console(args) -> int:
    """Open the console against the devices named in `args` (sim:// by default)."""
    import sys

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyleSheet(theme.style_sheet())
    from ui.gc_guard import GuiThreadGarbageCollector

    GuiThreadGarbageCollector(app)   # Qt objects are only ever freed on this thread
    try:
        from orconsole.wiring import build_treatment_service  # the core's composition root for a console
    except ImportError:
        print("orconsole: the core has no orconsole.wiring.build_treatment_service yet; the window cannot be "
              "wired to devices. Use `orconsole demo --headless`.", file=sys.stderr)
        return 2
    built = build_treatment_service(args)
    bench = None
    if getattr(args, "dev", False):
        bench = getattr(built, "bench", None)
    window = ConsoleWindow(service=built.service, identity=built.identity, store=built.store, dev_bench=bench)
    window.showMaximized()
    try:
        return app.exec()
    finally:
        built.service.close()
