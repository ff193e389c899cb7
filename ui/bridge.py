"""The one hand-off between the supervisor's thread and the GUI thread.

`SnapshotBridge` polls the supervisor's overwrite-only SnapshotMailbox on a QTimer (~20 Hz) and emits
the latest Snapshot; `FutureBridge` resolves command Futures by calling back on the GUI thread. Never
blocks the GUI thread waiting on a Future, never queues snapshots (a stalled GUI sees only the latest).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

log = logging.getLogger(__name__)

SNAPSHOT_PERIOD_MS = 50
# The Supervisor publishes at every poll (20 Hz); figures older than this are shown as NOT UPDATING.
STALE_AFTER_S = 1.0


class SnapshotBridge(QObject):
    """Emits `snapshot` with the newest Snapshot whenever its sequence number changed."""

    snapshot = Signal(object)

    def __init__(self, mailbox: Any = None, *, period_ms: int = SNAPSHOT_PERIOD_MS,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._mailbox = mailbox
        self._last_seq: int | None = None
        self._latest = None
        self._arrived_s: float | None = None     # monotonic time the newest snapshot arrived here
        self._timer = QTimer(self)
        self._timer.setInterval(period_ms)
        self._timer.timeout.connect(self.poll)

    def set_mailbox(self, mailbox: Any) -> None:
        self._mailbox = mailbox
        self._last_seq = None

    @property
    def latest(self):
        return self._latest

    def age_s(self, now_s: float | None = None) -> float | None:
        """Seconds since the newest snapshot arrived in this bridge (None before the first one).

        The Snapshot carries no time of the last device reading, so this is how the UI knows its
        figures are stale: the supervisor publishes at every poll, and nothing new means nothing fresh.
        """
        if self._arrived_s is None:
            return None
        return (time.monotonic() if now_s is None else now_s) - self._arrived_s

    def start(self) -> None:
        self._timer.start()
        self.poll()

    def stop(self) -> None:
        self._timer.stop()

    @Slot()
    def poll(self) -> None:
        """Read the mailbox once (never waits) and emit if there is something new."""
        if self._mailbox is None:
            return
        snap = self._mailbox.latest()
        if snap is None or snap.seq == self._last_seq:
            return
        self._last_seq = snap.seq
        self._latest = snap
        self._arrived_s = time.monotonic()
        self.snapshot.emit(snap)


class FutureBridge(QObject):
    """`when_done(future, callback)`: run `callback(result)` on the GUI thread once the Future resolves.

    If the Future fails with an exception, `callback` gets a FailedCommand carrying the reason text, so
    every path ends in something a person can read.
    """

    _resolved = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._resolved.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    def when_done(self, future: Future, callback: Callable[[Any], None]) -> None:
        self._pending += 1
        future.add_done_callback(lambda f: self._resolved.emit(callback, f))

    @Slot(object, object)
    def _deliver(self, callback: Callable[[Any], None], future: Future) -> None:
        self._pending -= 1
        try:
            result = future.result(timeout=0)
        except Exception as exc:  # the command crashed: say so, do not swallow it
            log.exception("command failed")
            result = FailedCommand(f"the command failed: {exc}; the beam state is shown in the banner — "
                                   "if in doubt press STOP")
        callback(result)


class FailedCommand:
    """Stands in for a CommandResult when the Future raised."""

    ok = False
    state = None

    def __init__(self, reason: str) -> None:
        self.reason = reason
