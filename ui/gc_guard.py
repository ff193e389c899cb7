"""Python's cyclic garbage collector runs on the GUI thread only.

A Qt object freed by a collection that happens to run on a worker thread (the service or QA worker)
crashes the process. So automatic collection is switched off and a timer collects on the GUI thread.
Reference counting still frees everything that is not in a cycle at once. Never touches safety logic.
"""
from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

YOUNG_INTERVAL_MS = 500          # generation 0 every half second
FULL_EVERY_N_TICKS = 20          # a full collection every ten seconds


class GuiThreadGarbageCollector(QObject):
    """Install once on the GUI thread: `GuiThreadGarbageCollector(app)`; `stop()` restores automatic GC."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._was_enabled = gc.isenabled()
        gc.disable()
        # what exists now (modules, the application, its windows) lives as long as the process: freeze it, so a
        # full collection scans only what was made since and stays short (all threads wait for it: the GIL)
        gc.collect()
        gc.freeze()
        self._ticks = 0
        self._timer = QTimer(self)
        self._timer.setInterval(YOUNG_INTERVAL_MS)
        self._timer.timeout.connect(self._collect)
        self._timer.start()

    def _collect(self) -> None:
        self._ticks += 1
        gc.collect(2 if self._ticks % FULL_EVERY_N_TICKS == 0 else 0)

    def stop(self) -> None:
        self._timer.stop()
        gc.collect()
        if self._was_enabled:
            gc.enable()
