"""The console window itself: on an installation without any account the sign-in screen says exactly how
the first administrator is created; figures that stop arriving are marked as old, in words; a wrong
password is refused with the identity service's reason."""
from __future__ import annotations

import subprocess
import sys

from orconsole.statemachine import State
from orconsole.supervisor import Snapshot, SnapshotMailbox
from orconsole.treatment import DeviceInfo, StatusMailbox, WorkflowStatus, WorkflowStep
from tests.support.installation import THERAPIST, Installation
from tests.ui import steps


def test_without_any_account_the_sign_in_screen_says_how_to_create_the_first_administrator(console_factory, qtbot,
                                                                                         tmp_path):
    home = tmp_path / "fresh"
    home.mkdir()
    console = console_factory(Installation(home=home, db_url=f"sqlite:///{home / 'orconsole.sqlite3'}", passwords={}),
                              home=home)
    login = console.window.login
    qtbot.waitUntil(login.first_run.isVisible, timeout=10000)
    text = login.first_run.text()
    assert "NO USER ACCOUNT EXISTS YET" in text
    assert "orconsole admin create-first-admin --username NAME --full-name \"PRINTED NAME\" \\\n" in text
    assert f"--db '{console.installation.db_url}'" in text
    # the command is real: run as shown (names filled in, password on stdin), it creates the administrator,
    # who can then sign in here, and the first-run text goes away
    done = subprocess.run([sys.executable, "-m", "orconsole", "admin", "create-first-admin", "--username", "ada",
                           "--full-name", "Ada Lovelace", "--db", console.installation.db_url, "--password-stdin"],
                          input="correct horse battery\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    steps.login(qtbot, console, "ada", "correct horse battery")
    assert console.window.ctx.session.role == "administrator"
    steps.sign_out(qtbot, console)
    qtbot.waitUntil(lambda: not login.first_run.isVisible(), timeout=10000)
    # the supervisor keeps publishing while nothing happens: idle figures are not stale
    qtbot.wait(int(1500))
    assert "NOT UPDATING" not in console.window.banner.text()
    assert console.window.stale_s is None


def test_a_wrong_password_is_refused_with_the_reason_and_nobody_is_signed_in(installation, console_factory, qtbot):
    console = console_factory(installation)
    login = console.window.login
    assert not login.first_run.isVisible()
    steps.type_into(qtbot, login.username, THERAPIST)
    steps.type_into(qtbot, login.password, "not-the-password")
    steps.click(qtbot, login.sign_in)
    qtbot.waitUntil(lambda: login.error.text() not in ("", "Checking…"), timeout=10000)
    assert console.window.ctx.session is None
    assert login.password.text() == ""
    assert "password" in login.error.text().lower()


class _Feed:
    """A service whose Supervisor stops publishing (a hung thread): two mailboxes the test fills."""

    def __init__(self) -> None:
        self.treatment, self.status_box = SnapshotMailbox(), StatusMailbox()

    def subscribe_treatment(self):
        return self.treatment

    def subscribe_status(self):
        return self.status_box


def _snapshot(seq: int) -> Snapshot:
    return Snapshot(seq=seq, host_time_s=float(seq), state=State.BEAM_ON, plan_id="PLAN-1", plan_version=1,
                    preset_s=500.0, elapsed_s=100.0 + seq, remaining_s=400.0 - seq, primary_dose_gy=4.0,
                    secondary_dose_gy=4.0, prescription_dose_gy=20.0, dose_to_deliver_gy=20.0,
                    dose_rate_gy_per_min=2.4, kv=50.0, ua=40.0, device_state="beam_on", link_ok=True, interlocks=(),
                    last_message="beam on", termination=None, overruns=0)


def test_figures_that_stop_arriving_are_marked_old_in_words_and_fresh_ones_clear_it(styled, qtbot):
    from ui.app import ConsoleWindow

    feed = _Feed()
    feed.status_box.put(WorkflowStatus(seq=1, step=WorkflowStep.TREATING, patient=None, plan=None, approvals=(),
                                       missing_approvals=(), checklist=None, devices=DeviceInfo(None, None),
                                       record_id=None, record_sessions=0, delivered_primary_gy=0.0,
                                       delivered_secondary_gy=0.0, recovery=None, last_message=""))
    feed.treatment.put(_snapshot(1))
    window = ConsoleWindow(service=feed, identity=object(), store=None)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(lambda: window.ctx.snapshot is not None, timeout=5000)
        assert "BEAM ON" in window.banner.text() and "NOT UPDATING" not in window.banner.text()
        qtbot.waitUntil(lambda: window.stale_s is not None, timeout=5000)       # nothing new for > 1 s
        treatment = window.screens["treatment"]
        assert "DISPLAY NOT UPDATING" in window.banner.text() and "BEAM ON" in window.banner.text()
        assert "NOT UPDATING" in treatment.stale.text() and "s old" in treatment.stale.text()
        assert "DISPLAY NOT UPDATING" in window.alarm.text and "STOP" in window.alarm.text
        feed.treatment.put(_snapshot(2))
        qtbot.waitUntil(lambda: window.stale_s is None, timeout=5000)
        assert "NOT UPDATING" not in window.banner.text()
        assert treatment.stale.text() == ""
        assert "DISPLAY NOT UPDATING" not in window.alarm.text
    finally:
        window.shutdown()
