"""Screenshots of the bedside screens, for the headless demo (treatment screen mid-treatment) and for
scripts/screenshots.py (docs/screenshots/*.png). Renders offscreen; sends no command at all.

Only reads a Snapshot (from a TreatmentService, a SnapshotMailbox or a Snapshot given directly).
Never blocks the treatment: reading a mailbox is a copy of its latest value.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SCREEN_SIZE = (1600, 1000)


def ensure_app():
    """The QApplication (offscreen when no display is configured), with the console's style sheet."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from ui import theme
    app = QApplication.instance() or QApplication(["orconsole-screenshots"])
    app.setStyleSheet(theme.style_sheet())
    return app


class _NoCommands:
    """A controller that refuses everything: a screenshot view must never command the beam."""

    def __getattr__(self, name: str):
        raise AttributeError(f"screenshot view: {name} is not available")


def _latest_snapshot(source: Any):
    if hasattr(source, "subscribe_treatment"):
        return source.subscribe_treatment().latest()
    if hasattr(source, "latest"):
        return source.latest()
    return source


def treatment_view(snapshot: Any):
    """A top-level widget: state banner, alarm bar and the treatment screen showing `snapshot`."""
    from PySide6.QtWidgets import QVBoxLayout, QWidget

    from ui.app import alarm_text
    from ui.bridge import FutureBridge
    from ui.screens.treatment import TreatmentScreen
    from ui.widgets import AlarmBar, StateBanner
    view = QWidget()
    layout = QVBoxLayout(view)
    layout.setContentsMargins(0, 0, 0, 0)
    banner, alarm = StateBanner(), AlarmBar()
    screen = TreatmentScreen(_NoCommands(), FutureBridge(view))
    layout.addWidget(banner)
    layout.addWidget(alarm)
    layout.addWidget(screen, 1)
    if snapshot is not None:
        banner.show_state(snapshot.state, snapshot.link_ok)
        alarm.show_alarm(alarm_text(snapshot))
        alarm._beeper.stop()
        screen.show_snapshot(snapshot)
    view.banner, view.alarm, view.screen = banner, alarm, screen
    return view


def grab(widget: Any, path: str | Path, size: tuple[int, int] = SCREEN_SIZE) -> Path:
    from PySide6.QtWidgets import QApplication
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    widget.resize(*size)
    widget.show()
    for _ in range(3):
        QApplication.processEvents()
    if not widget.grab().save(str(path), "PNG"):
        raise OSError(f"could not write the screenshot {path}: check the directory and free space")
    return path


def capture_treatment_screenshot(source: Any, path: str | Path, size: tuple[int, int] = SCREEN_SIZE) -> Path:
    """Write a PNG of the treatment screen for the latest Snapshot of `source` (service, mailbox or
    Snapshot). Call it from the thread that owns (or may create) the QApplication."""
    ensure_app()
    view = treatment_view(_latest_snapshot(source))
    try:
        return grab(view, path, size)
    finally:
        view.close()
        view.deleteLater()
