"""The reason typed after an interruption reaches the hash-chained audit trail; an empty one is refused."""
from __future__ import annotations

import json

import pytest

from logs.store import Store
from orconsole.treatment import WorkflowRefused


class _Session:
    username = "tom"


class _Service:
    """Only what annotate_interruption reads; the method under test is the real one."""

    def __init__(self, store) -> None:
        from orconsole.treatment import TreatmentService

        self.store, self.supervisor, self._treat_box = store, None, None
        self._record_id, self._plan = "rec-1", None
        self.changes = []
        self.annotate_interruption = TreatmentService.annotate_interruption.__get__(self)

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
