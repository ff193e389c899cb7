"""Regenerate docs/screenshots/*.png from a live workflow: the console window on the real TreatmentService
(built by orconsole.wiring, as `make demo-window` does) against the in-process simulators, driven through
its widgets by the same steps as the UI tests (tests/ui/steps.py). Offscreen.

Sends commands only to the simulated bench and to a throw-away installation in a temporary directory
(demo users from `orconsole demo --setup-only`). Usage: python scripts/screenshots.py [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from orconsole.statemachine import State  # noqa: E402
from tests.support.installation import (ONCOLOGIST, PHYSICIST, THERAPIST, Installation,  # noqa: E402
                                        make_installation)
from tests.ui import steps  # noqa: E402
from tests.ui.conftest import Console  # noqa: E402
from ui.screenshots import ensure_app  # noqa: E402

SCREEN_SIZE = (1920, 1080)      # a typical operating-room display, maximized window


class _Bot:
    """The few pytest-qt calls the steps use, on QTest (no pytest needed)."""

    mouseClick = staticmethod(QTest.mouseClick)   # noqa: N815 - pytest-qt's names
    keyClick = staticmethod(QTest.keyClick)       # noqa: N815
    keyClicks = staticmethod(QTest.keyClicks)     # noqa: N815

    def __init__(self) -> None:
        self.widgets = []

    def addWidget(self, widget) -> None:  # noqa: N802
        self.widgets.append(widget)

    # Never QTest.qWait here: it sleeps in C++ holding the GIL, which starves the supervisor and the
    # simulator threads (the X-ray link is then declared lost). Sleep in Python between event rounds.
    def waitExposed(self, widget, timeout: int = 5000) -> None:  # noqa: N802
        self.waitUntil(widget.isVisible, timeout)

    def wait(self, ms: int) -> None:
        deadline = time.monotonic() + ms / 1000
        while time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.01)

    def waitUntil(self, predicate, timeout: int = 5000) -> None:  # noqa: N802
        deadline = time.monotonic() + timeout / 1000
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} ms for {predicate}")
            QApplication.processEvents()
            time.sleep(0.01)


class _Env:
    """monkeypatch.setenv / delenv for a script (the environment of this process only)."""

    @staticmethod
    def setenv(name: str, value: str) -> None:
        os.environ[name] = value

    @staticmethod
    def delenv(name: str, raising: bool = True) -> None:
        os.environ.pop(name, None)


def shot(console, path: Path) -> Path:
    w = console.window
    w.alarm._beeper.stop()
    w.resize(*SCREEN_SIZE)
    for _ in range(5):
        QApplication.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not w.grab().save(str(path), "PNG"):
        raise OSError(f"could not write {path}: check the directory and free space")
    print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    app = ensure_app()
    out: Path = args.out
    bot = _Bot()
    from simulators.bench import reset_benches
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["ORCONSOLE_HOME"] = str(tmp / "template")
        template = make_installation(tmp / "template")
        consoles = []
        try:
            # 01: first run (no account yet) and the normal sign-in
            fresh = tmp / "fresh"
            fresh.mkdir()
            c = Console(bot, Installation(fresh, f"sqlite:///{fresh / 'orconsole.sqlite3'}", {}), fresh, _Env())
            consoles.append(c)
            bot.waitUntil(c.window.login.first_run.isVisible, 10000)
            shot(c, out / "01b-first-run-no-accounts.png")
            c.close()

            c = Console(bot, template, tmp / "home1", _Env())
            consoles.append(c)
            steps.type_into(bot, c.window.login.username, THERAPIST)
            shot(c, out / "01-login.png")
            # 02: physician: patient and plan; a refused prescription first
            steps.login(bot, c, ONCOLOGIST)
            steps.register_and_select_patient(bot, c)
            steps.prescribe(bot, c, "25")
            shot(c, out / "02b-prescription-refused.png")
            steps.prescribe(bot, c, "20")
            steps.wait_step(bot, c, "plan_created")
            shot(c, out / "02-patient-and-plan.png")
            # 03: approvals (physician signed, physicist about to)
            steps.approve(bot, c, ONCOLOGIST)
            screen = c.window.screens["approval"]
            steps.type_into(bot, screen.user, PHYSICIST)
            shot(c, out / "03-approval.png")
            steps.approve(bot, c, PHYSICIST)
            steps.wait_step(bot, c, "plan_approved")
            steps.sign_out(bot, c)
            # 04: checklist with the wrong applicator mounted, then passed
            c.bench.xrs_model.mount_applicator(3.0)
            steps.login(bot, c, THERAPIST)
            checklist = steps.warm_up_and_check(bot, c, expect_ok=False)
            bot.waitUntil(lambda: not checklist.checklist.item("applicator").ok, 10000)
            shot(c, out / "04-checklist-refused.png")
            c.bench.xrs_model.mount_applicator(1.5)
            try:
                bot.waitUntil(lambda: checklist.checklist.ok, 10000)
            except TimeoutError:
                raise SystemExit("checklist still not passed: " + "; ".join(
                    i.message for i in checklist.checklist.failures())) from None
            shot(c, out / "04b-checklist-passed.png")
            # 05: treatment: beam on, paused with the reason asked, completed
            steps.arm_and_start(bot, c)
            bot.waitUntil(lambda: c.window.ctx.snapshot.elapsed_s > 2.5, 15000)
            shot(c, out / "05-treatment-beam-on.png")
            t = c.window.screens["treatment"]
            steps.click(bot, t.pause_button)
            steps.wait_state(bot, c, State.PAUSED)
            bot.waitUntil(t.reason_panel.isVisible, 5000)
            shot(c, out / "05a-treatment-paused-reason.png")
            steps.click(bot, t.reason_panel.choice_buttons[0])
            steps.click(bot, t.reason_panel.record_button)
            bot.waitUntil(lambda: not c.window.ctx.snapshot.closing_segment and t.resume_button.isEnabled(), 10000)
            steps.click(bot, t.resume_button)
            steps.wait_state(bot, c, State.COMPLETED, State.TERMINATED, State.FAULT, timeout_ms=30000)
            steps.wait_step(bot, c, "delivery_ended")
            bot.waitUntil(t.record_button.isVisible, 10000)
            shot(c, out / "05c-treatment-completed.png")
            # 06: the record, signed and listed as verified
            steps.click(bot, t.record_button)
            r = c.window.screens["record"]
            steps.type_into(bot, r.password, c.password(THERAPIST))
            steps.click(bot, r.sign_button)
            steps.wait_step(bot, c, "record_signed")
            bot.waitUntil(lambda: r.table.rowCount() > 0, 10000)
            shot(c, out / "06-record.png")
            c.close()

            # 05b: an interlock during beam (injected from the developer panel); 08: that panel
            c = Console(bot, template, tmp / "home2", _Env())
            consoles.append(c)
            steps.plan_and_approve(bot, c)
            steps.login(bot, c, THERAPIST)
            steps.warm_up_and_check(bot, c)
            steps.arm_and_start(bot, c)
            bot.waitUntil(lambda: c.window.ctx.snapshot.elapsed_s > 2.0, 15000)
            steps.go(bot, c, "dev")
            shot(c, out / "08-developer-simulator-panel.png")
            steps.click(bot, c.window.screens["dev"].inject_buttons["interlock_open"])
            steps.wait_state(bot, c, State.TERMINATED, State.FAULT)
            bot.wait(800)
            shot(c, out / "05b-treatment-interlock.png")
            c.close()

            # 07: recovery after a console crash during beam (the unit's watchdog ended the beam)
            c = Console(bot, template, tmp / "home3", _Env())
            consoles.append(c)
            steps.plan_and_approve(bot, c)
            steps.login(bot, c, THERAPIST)
            steps.warm_up_and_check(bot, c)
            steps.arm_and_start(bot, c)
            bot.waitUntil(lambda: c.window.ctx.snapshot.elapsed_s > 3.0, 15000)
            home, bench_name = c.installation.home, c.bench_name
            shutil.copytree(home, tmp / "crash-image")
            c.bench.xrs_model.inject("silent")
            bot.waitUntil(lambda: not c.bench.xrs_model.status().hv_on, 5000)
            c.close()
            c.bench.xrs_model.clear("silent")
            shutil.rmtree(home)
            shutil.copytree(tmp / "crash-image", home)
            c = Console(bot, c.installation, home, _Env(), bench_name=bench_name)
            consoles.append(c)
            steps.login(bot, c, PHYSICIST)
            bot.waitUntil(lambda: c.window.current_key() == "recovery", 5000)
            steps.type_into(bot, c.window.screens["recovery"].acknowledgement,
                            "unit counter read: matches the journal; patient and applicator unchanged")
            shot(c, out / "07-recovery.png")
            c.close()
        finally:
            for console in consoles:
                console.close()
            reset_benches()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
