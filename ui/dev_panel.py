"""Developer mode (`orconsole --dev`): a panel that injects every simulator fault kind live.

The only place in ui/ that touches simulators (simulators.bench, never drivers/); it is built only in
developer mode against in-process simulators. It must never appear on a clinical console.
"""
from __future__ import annotations

import logging
from typing import Any

from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLineEdit, QVBoxLayout, QWidget

from ui.widgets import make_button, make_label, panel

log = logging.getLogger(__name__)


def fault_kinds() -> tuple[str, ...]:
    from simulators.xrs_model import FAULT_KINDS
    return tuple(FAULT_KINDS)


class DevPanel(QWidget):
    """Inject / clear each fault kind on the named in-process bench."""

    title = "Simulator (dev)"

    def __init__(self, bench: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bench = bench
        root = QVBoxLayout(self)
        frame, layout = panel()
        root.addWidget(frame)
        layout.addWidget(make_label("DEVELOPER MODE — simulated devices — fault injection", "heading"))
        layout.addWidget(make_label("Each button acts on the simulated X-ray unit at once, as the real fault "
                                    "would. Optional value (fraction or rate) below.", "info", wrap=True))
        row = QHBoxLayout()
        self.value = QLineEdit(objectName="faultValue")
        self.value.setPlaceholderText("optional value, e.g. 0.15")
        row.addWidget(make_label("Value"))
        row.addWidget(self.value, 1)
        layout.addLayout(row)
        grid = QGridLayout()
        self.inject_buttons: dict[str, Any] = {}
        self.clear_buttons: dict[str, Any] = {}
        for i, kind in enumerate(fault_kinds()):
            inject = make_button(f"Inject {kind.replace('_', ' ')}", "warn", name=f"inject_{kind}")
            clear = make_button("Clear", name=f"clear_{kind}")
            inject.clicked.connect(lambda _=False, k=kind: self.inject(k))
            clear.clicked.connect(lambda _=False, k=kind: self.clear(k))
            grid.addWidget(inject, i // 2, (i % 2) * 2)
            grid.addWidget(clear, i // 2, (i % 2) * 2 + 1)
            self.inject_buttons[kind] = inject
            self.clear_buttons[kind] = clear
        layout.addLayout(grid)
        self.message = make_label("", "info", wrap=True)
        self.message.setObjectName("devMessage")
        layout.addWidget(self.message)
        root.addStretch(1)

    def inject(self, kind: str) -> None:
        text = self.value.text().strip()
        params = {}
        if text:
            try:
                params["value"] = float(text)
            except ValueError:
                self.message.setText(f"value {text!r} is not a number")
                return
        try:
            self.bench.xrs_model.inject(kind, **params)
        except Exception as exc:
            self.message.setText(f"{kind}: not injected — {exc}")
            return
        log.warning("dev: injected %s %s", kind, params)
        self.message.setText(f"Injected {kind} {params or ''}")

    def clear(self, kind: str) -> None:
        try:
            self.bench.xrs_model.clear(kind)
        except Exception as exc:
            self.message.setText(f"{kind}: not cleared — {exc}")
            return
        self.message.setText(f"Cleared {kind}")
