"""Look of the bedside console: type sizes, colours and the application style sheet, in one place.

Read at 1–2 m by a gloved user: large type, high contrast, touch-sized targets (>= 48 px). Colour is
never the only cue; every state colour here goes with words elsewhere. No logic, no device access.
"""
from __future__ import annotations

from dataclasses import dataclass

from orconsole.statemachine import State

MIN_TARGET_PX = 56          # every button and input at least this tall (touch with gloves; spec >= 48)
BASE_FONT_PX = 22
LABEL_FONT_PX = 24
HEADING_FONT_PX = 34
BANNER_FONT_PX = 40
COUNTDOWN_FONT_PX = 150
FIGURE_FONT_PX = 40

BACKGROUND = "#101418"
PANEL = "#1c232b"
TEXT = "#f2f5f8"
MUTED = "#b8c2cc"
ACCENT = "#4da3ff"
OK_GREEN = "#1f9d55"
WARN_AMBER = "#f0a500"
DANGER_RED = "#d62828"
BEAM_YELLOW = "#ffd400"


@dataclass(frozen=True)
class StateLook:
    words: str            # what the banner says, in capitals, readable without colour
    background: str
    foreground: str


STATE_LOOKS: dict[State, StateLook] = {
    State.IDLE: StateLook("NO PLAN LOADED — beam off", "#39434d", TEXT),
    State.PLAN_LOADED: StateLook("PLAN LOADED, NOT APPROVED — beam off", "#39434d", TEXT),
    State.APPROVED: StateLook("PLAN APPROVED — checklist not complete — beam off", "#24507a", TEXT),
    State.READY: StateLook("READY — beam off, not armed", "#24507a", TEXT),
    State.ARMED: StateLook("ARMED — beam off — press START to irradiate", WARN_AMBER, "#000000"),
    State.BEAM_ON: StateLook("☢ BEAM ON — X-RAYS — irradiating", BEAM_YELLOW, "#000000"),
    State.PAUSED: StateLook("PAUSED — beam off — timer holds its reading", WARN_AMBER, "#000000"),
    State.COMPLETED: StateLook("COMPLETED — beam off — full dose delivered", OK_GREEN, "#ffffff"),
    State.TERMINATED: StateLook("TERMINATED — beam off — treatment ended early", DANGER_RED, "#ffffff"),
    State.FAULT: StateLook("FAULT — beam stopped — confirm beam is off", DANGER_RED, "#ffffff"),
    State.INTERRUPTED: StateLook("INTERRUPTED TREATMENT — console restarted — recovery needed", DANGER_RED, "#ffffff"),
}

BEAM_STATES = frozenset({State.ARMED, State.BEAM_ON, State.PAUSED})


def state_look(state: State) -> StateLook:
    return STATE_LOOKS[state]


def style_sheet() -> str:
    """The application style sheet (Qt CSS)."""
    return f"""
    QWidget {{ background: {BACKGROUND}; color: {TEXT}; font-size: {BASE_FONT_PX}px; }}
    QLabel {{ background: transparent; }}
    QLabel[role="heading"] {{ font-size: {HEADING_FONT_PX}px; font-weight: 700; }}
    QLabel[role="caption"] {{ color: {MUTED}; font-size: {LABEL_FONT_PX - 4}px; }}
    QLabel[role="figure"] {{ font-size: {FIGURE_FONT_PX}px; font-weight: 700; }}
    QLabel[role="error"] {{ color: #ffb4b4; font-size: {LABEL_FONT_PX}px; font-weight: 700; }}
    QLabel[role="info"] {{ color: {MUTED}; font-size: {LABEL_FONT_PX - 2}px; }}
    QFrame[role="panel"] {{ background: {PANEL}; border-radius: 10px; }}
    QPushButton {{ background: #2e3a46; color: {TEXT}; border: 2px solid #5c6b7a; border-radius: 10px;
                   min-height: {MIN_TARGET_PX}px; padding: 6px 22px; font-size: {LABEL_FONT_PX}px;
                   font-weight: 600; }}
    QPushButton:focus {{ border: 4px solid {ACCENT}; }}
    QPushButton:disabled {{ background: #1f262d; color: #6d7a86; border: 2px dashed #3a4652; }}
    QPushButton[kind="primary"] {{ background: #1565c0; border-color: #64a8ff; }}
    QPushButton[kind="go"] {{ background: #1f7a3f; border-color: #6fdc98; }}
    QPushButton[kind="warn"] {{ background: #8a5a00; border-color: {WARN_AMBER}; }}
    QPushButton[kind="stop"] {{ background: {DANGER_RED}; color: white; border: 4px solid #ffffff;
                   font-size: {HEADING_FONT_PX}px; font-weight: 800; min-height: 110px; }}
    QPushButton[kind="stop"]:disabled {{ background: #4a1c1c; color: #b08080; border: 3px dashed #804040; }}
    QPushButton[kind="primary"]:disabled, QPushButton[kind="go"]:disabled, QPushButton[kind="warn"]:disabled {{
                   background: #1f262d; color: #6d7a86; border: 2px dashed #3a4652; }}
    QPushButton[size="big"] {{ min-height: 100px; font-size: {HEADING_FONT_PX - 4}px; font-weight: 800; }}
    QPushButton[kind="nav"] {{ text-align: left; padding-left: 14px; font-size: {LABEL_FONT_PX - 2}px; }}
    QPushButton[kind="nav"]:checked {{ background: #1565c0; border-color: #9cc8ff; }}
    QLineEdit, QComboBox, QDateEdit, QPlainTextEdit, QListWidget, QTableWidget {{
                   background: #0b0f13; color: {TEXT}; border: 2px solid #5c6b7a; border-radius: 8px;
                   min-height: {MIN_TARGET_PX - 8}px; padding: 4px 10px; font-size: {LABEL_FONT_PX}px; }}
    QLineEdit:focus, QComboBox:focus, QDateEdit:focus, QPlainTextEdit:focus, QListWidget:focus,
    QTableWidget:focus {{ border: 3px solid {ACCENT}; }}
    QComboBox QAbstractItemView {{ font-size: {LABEL_FONT_PX}px; }}
    QCheckBox {{ font-size: {LABEL_FONT_PX}px; spacing: 14px; min-height: {MIN_TARGET_PX}px; }}
    QCheckBox::indicator {{ width: 36px; height: 36px; }}
    QProgressBar {{ border: 2px solid #5c6b7a; border-radius: 8px; background: #0b0f13; min-height: 40px;
                    text-align: center; font-size: {LABEL_FONT_PX}px; color: {TEXT}; }}
    QProgressBar::chunk {{ background: {ACCENT}; border-radius: 6px; }}
    QHeaderView::section {{ background: {PANEL}; color: {TEXT}; font-size: {LABEL_FONT_PX - 2}px; padding: 6px; }}
    QTableWidget::item {{ padding: 6px; }}
    """
