"""The reason typed after an interruption reaches the hash-chained audit trail and the record's Interruption
entry it explains (the latest interruption before it was typed); an empty one is refused."""
from __future__ import annotations

import json
import threading

import pytest

from logs.records import Interruption, RecordBook
from logs.samples import example_record
from logs.store import Store
from orconsole.treatment import WorkflowRefused
from simulators.clock import ManualClock


class _Session:
    username = "tom"


class _Service:
    """Only what annotate_interruption reads; the methods under test are the real ones."""

    def __init__(self, store, record_id: str = "rec-1") -> None:
        from orconsole.treatment import TreatmentService

        self.store, self.supervisor, self._treat_box = store, None, None
        self._record_id, self._plan = record_id, None
        self._book = RecordBook(store)
        self._lock = threading.Lock()
        self._clock = ManualClock()
        self._delivering = False
        self._reason_notes = []
        self.changes = []
        self.annotate_interruption = TreatmentService.annotate_interruption.__get__(self)
        self._apply_reason_notes = TreatmentService._apply_reason_notes.__get__(self)

    def _changed(self, message):
        self.changes.append(message)


def test_an_interruption_reason_is_written_to_the_audit_trail(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'a.sqlite3'}") as store:
        service = _Service(store)
        service.annotate_interruption(_Session(), "  surgeon asked for haemostasis  ")
        entry = store.audit_entries(action="interruption reason")[-1]
        details = entry.details if isinstance(entry.details, dict) else json.loads(entry.details)
        assert details["reason"] == "surgeon asked for haemostasis"
        assert details["record_id"] == "rec-1" and entry.actor == "tom"
        with pytest.raises(WorkflowRefused):
            service.annotate_interruption(_Session(), "   ")


def _interruption(mono_s: float, reason: str) -> Interruption:
    return Interruption(session_index=1, utc="2026-11-26T09:20:45.620000Z", monotonic_s=mono_s, reason=reason,
                        initiated_by="operator", delivered_so_far_gy=1.0)


def test_each_reason_goes_into_the_interruption_it_explains_even_when_typed_before_the_session_is_written(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'a.sqlite3'}") as store:
        book = RecordBook(store)
        record_id = book.start(example_record(), actor="tom")
        service = _Service(store, record_id)
        service._clock.advance(105.0)                 # after the pause at 100 s
        service._delivering = True                    # the session is not in the record yet
        service.annotate_interruption(_Session(), "patient coughed")
        assert book.load(record_id).interruptions == []
        service._clock.advance(100.0)                 # after the stop at 200 s
        service.annotate_interruption(_Session(), "surgeon asked for haemostasis")
        book.update(record_id, lambda r: r.interruptions.extend([_interruption(100.0, "pause"),
                                                                 _interruption(200.0, "stopped by the operator")]))
        service._delivering = False
        service._apply_reason_notes()                 # what the record writer does after writing the session
        reasons = [i.reason for i in book.load(record_id).interruptions]
        assert reasons == ["pause — reason given by tom: patient coughed",
                           "stopped by the operator — reason given by tom: surgeon asked for haemostasis"]
        service._apply_reason_notes()                 # nothing pending: nothing added twice
        assert [i.reason for i in book.load(record_id).interruptions] == reasons
