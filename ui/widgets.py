"""Shared bedside widgets: the state banner, the interlock list, the alarm bar, figure tiles, helpers.

Each renders what a Snapshot says, in words as well as colour. No safety decisions and no device I/O
here: an alarm is shown because the core reports it, and it disappears only when the core clears it.
"""
from __future__ import annotations

import logging
import math

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QApplication, QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout,
                               QWidget)

from orconsole.interlocks import Effect, Latching
from orconsole.statemachine import State
from ui import theme

log = logging.getLogger(__name__)


def fmt_mmss(seconds: float | None) -> str:
    """mm:ss.s, truncated (never rounded up: a countdown must not show time that is not left)."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--.-"
    tenths = int(max(0.0, seconds) * 10 + 1e-6)
    minutes, rest = divmod(tenths, 600)
    return f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"


def fmt_value(value: float | None, unit: str, decimals: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return f"— {unit}"
    return f"{value:.{decimals}f} {unit}"


def make_label(text: str = "", role: str | None = None, *, wrap: bool = False) -> QLabel:
    label = QLabel(text)
    if role:
        label.setProperty("role", role)
    label.setWordWrap(wrap)
    return label


def make_button(text: str, kind: str | None = None, *, name: str | None = None) -> QPushButton:
    button = QPushButton(text)
    if kind:
        button.setProperty("kind", kind)
    if name:
        button.setObjectName(name)
    button.setMinimumHeight(theme.MIN_TARGET_PX)
    button.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
    return button


def panel(layout_cls=QVBoxLayout) -> tuple[QFrame, QVBoxLayout | QHBoxLayout]:
    frame = QFrame()
    frame.setProperty("role", "panel")
    layout = layout_cls(frame)
    layout.setContentsMargins(18, 14, 18, 14)
    layout.setSpacing(10)
    return frame, layout


class StateBanner(QLabel):
    """The treatment state in words, across the top of every screen. Colour repeats the words."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stateBanner")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumHeight(72)
        self.setWordWrap(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.state: State | None = None
        self.link_ok = True
        self.stale_s: float | None = None
        self.show_state(None)

    def show_state(self, state: State | None, link_ok: bool = True, stale_s: float | None = None,
                   workflow_words: str | None = None) -> None:
        """`stale_s`: age of the figures when no fresh snapshot arrived (None = fresh). `workflow_words`:
        where the workflow stands, said instead of the supervisor's 'no plan loaded' before a treatment
        (the service loads the plan into the supervisor only when it arms)."""
        self.state, self.link_ok, self.stale_s = state, link_ok, stale_s
        if state is None:
            words, bg, fg = "CONNECTING TO THE TREATMENT SUPERVISOR…", "#39434d", theme.TEXT
        else:
            look = theme.state_look(state)
            words, bg, fg = look.words, look.background, look.foreground
            if state is State.IDLE and workflow_words:
                words = f"BEAM OFF — {workflow_words}"
        if not link_ok:
            words += "  ·  LINK TO X-RAY UNIT LOST"
        if stale_s is not None:
            words = f"⚠ DISPLAY NOT UPDATING for {stale_s:.0f} s — last known: " + words
            bg, fg = "#5a4a00", "#ffffff"
        self.setText(words)
        self.setAccessibleName(f"Treatment state: {words}")
        self.setStyleSheet(f"QLabel#stateBanner {{ background: {bg}; color: {fg}; font-size: "
                           f"{theme.BANNER_FONT_PX}px; font-weight: 800; padding: 8px; "
                           f"border-bottom: 4px solid {fg}; }}")


class InterlockList(QFrame):
    """Active interlocks, each with its title, message, detail and what to do. 'None active' in words."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("role", "panel")
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(16, 12, 16, 12)
        self._title = make_label("Interlocks", "heading")
        self._layout.addWidget(self._title)
        self._items: list[QLabel] = []
        self._key: tuple = ()
        self.texts: list[str] = []
        self.show_interlocks(())

    def show_interlocks(self, interlocks) -> None:
        key = tuple((s.id, s.detail, s.condition_present) for s in interlocks)
        if key == self._key and self._items:
            return
        self._key = key
        for item in self._items:
            self._layout.removeWidget(item)
            item.setParent(None)
            item.deleteLater()
        self._items = []
        self.texts = [s.text for s in interlocks]
        if not interlocks:
            label = make_label("✓ No interlock active", "info")
            label.setStyleSheet(f"color: {theme.OK_GREEN}; font-weight: 700;")
            self._items.append(label)
        for s in interlocks:
            stop = "STOPS BEAM" if s.effect is Effect.TERMINATES_BEAM else "BLOCKS START"
            latched = " · LATCHED: a person must clear it" if s.latching is Latching.LATCHED \
                and not s.condition_present else ""
            detail = f" ({s.detail})" if s.detail else ""
            label = make_label(f"⚠ {s.title.upper()} — {stop}{latched}\n{s.message}{detail}\n→ {s.remediation}",
                               wrap=True)
            label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
            label.setStyleSheet(f"background: #3a1010; color: #ffffff; border-left: 10px solid {theme.DANGER_RED};"
                                f" padding: 8px; font-size: {theme.LABEL_FONT_PX - 2}px;")
            label.setAccessibleName(s.text)
            self._items.append(label)
        for item in self._items:
            self._layout.addWidget(item)
        self._title.setText(f"Interlocks — {len(interlocks)} active" if interlocks else "Interlocks")


class AlarmBar(QFrame):
    """A non-modal alarm strip: visible while the core reports an alarm, audible until acknowledged.

    Acknowledging silences the sound and is logged with the user's name; the text stays as long as the
    condition is reported. Nothing here can hide an alarm the core still reports.
    """

    acknowledged = Signal(str)

    BEEP_PERIOD_MS = 1500

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("alarmBar")
        self.setStyleSheet(f"QFrame#alarmBar {{ background: {theme.DANGER_RED}; }}"
                           "QFrame#alarmBar QLabel { color: white; font-weight: 800; font-size: 26px; }")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(16, 8, 16, 8)
        self.label = make_label("", wrap=True)
        self.ack_button = make_button("Silence alarm (F8)", "warn", name="silenceAlarm")
        self.ack_button.clicked.connect(self._acknowledge)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.ack_button)
        self._text = ""
        self._silenced_for = ""
        self.beeps = 0
        self.user_name = ""
        self._beeper = QTimer(self)
        self._beeper.setInterval(self.BEEP_PERIOD_MS)
        self._beeper.timeout.connect(self._beep)
        self.hide()

    @property
    def sounding(self) -> bool:
        return self._beeper.isActive()

    @property
    def text(self) -> str:
        return self._text

    def show_alarm(self, text: str) -> None:
        """Show `text` (empty: no alarm). A new or changed alarm sounds again even if one was silenced."""
        if text == self._text:
            return
        self._text = text
        if not text:
            self._beeper.stop()
            self.hide()
            self._silenced_for = ""
            return
        self.label.setText("ALARM: " + text)
        self.setAccessibleName("Alarm: " + text)
        self.show()
        if text != self._silenced_for:
            self.ack_button.setEnabled(True)
            self._beep()
            self._beeper.start()

    def _beep(self) -> None:
        self.beeps += 1
        QApplication.beep()

    def _acknowledge(self) -> None:
        if not self._text:
            return
        self._silenced_for = self._text
        self._beeper.stop()
        self.ack_button.setEnabled(False)
        log.warning("alarm silenced by %s: %s", self.user_name or "unknown user", self._text)
        self.acknowledged.emit(self._text)
