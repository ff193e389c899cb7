"""The record writer never drops a delivery: when the store fails it retries until the store is back,
and the record cannot be closed meanwhile (the delivery stays 'delivering')."""
from __future__ import annotations

import queue
import threading
from types import SimpleNamespace

from orconsole.treatment import TreatmentService


REPORT = SimpleNamespace(name="session-1", device_log_path="journal/device-log-T-1.jsonl")


class _Writer:
    """Only what _write_reports touches; the method under test is the real one."""

    def __init__(self, failures: int) -> None:
        self._reports = queue.Queue()
        self._outcome_cond = threading.Condition()
        self._outcomes, self._closing, self._delivering = [], False, True
        self.messages, self.attempts, self.failures = [], 0, failures
        self.run = TreatmentService._write_reports.__get__(self)

    def _record_report(self, report):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError("database is locked")
        return f"outcome of {report.name}"

    def _apply_reason_notes(self):         # reasons typed after interruptions (tests/treatment/test_annotate.py)
        self.reasons_applied = getattr(self, "reasons_applied", 0) + 1

    def _changed(self, message=None):
        if message:
            self.messages.append(message)


def test_a_delivery_is_written_once_the_store_is_back():
    writer = _Writer(failures=2)
    thread = threading.Thread(target=writer.run)
    thread.start()
    writer._reports.put(REPORT)
    with writer._outcome_cond:
        assert writer._outcome_cond.wait_for(lambda: writer._outcomes, timeout=10)
    writer._reports.put(None)
    thread.join(5)
    assert writer._outcomes == ["outcome of session-1"] and writer.attempts == 3
    assert writer._delivering is False
    assert any("safe in the journal" in m and "as soon as the store answers again" in m for m in writer.messages)


def test_closing_the_service_ends_the_retries_without_pretending_the_delivery_was_written():
    writer = _Writer(failures=10**6)
    thread = threading.Thread(target=writer.run)
    thread.start()
    writer._reports.put(REPORT)
    while writer.attempts < 2:
        threading.Event().wait(0.05)
    writer._closing = True
    writer._reports.put(None)
    thread.join(10)
    assert not thread.is_alive() and writer._outcomes == []
