"""Clocks for the simulated devices: the real monotonic clock, or a manual one tests advance.

A device model never calls time.* itself; it asks its clock. Never use the wall clock here.
"""
from __future__ import annotations

import threading
import time


class MonotonicClock:
    """The real clock: seconds from time.monotonic()."""

    def now_s(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; for deterministic model tests."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)
        self._lock = threading.Lock()

    def now_s(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds!r} s)")
        with self._lock:
            self._now_s += seconds
