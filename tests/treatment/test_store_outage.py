"""A record-store outage never keeps a beam on: STOP, pause and the emergency stop reach the Supervisor while
the store cannot be reached (the command is carried out and reported, its audit entry noted as missing), and
nothing that could start a beam is let through. The store is a PostgreSQL URL nobody listens on: the
StoreUnavailable is the real one raised by logs.store on a refused connection."""
from __future__ import annotations

import socket
import threading
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from logs.store import Store, StoreUnavailable
from orconsole.identity import IdentityService, PermissionDenied, Role, Session
from orconsole.statemachine import State
from orconsole.supervisor import CommandResult
from orconsole.treatment import TreatmentService


def _dead_url() -> str:
    with socket.socket() as s:          # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://orconsole@127.0.0.1:{port}/records"


class _Supervisor:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.sm = SimpleNamespace(state=State.ARMED)

    def beam_on(self):
        return self._done("beam_on", "beam on", State.BEAM_ON)

    def _done(self, name: str, reason: str, state: State) -> Future:
        self.calls.append(name)
        f: Future = Future()
        f.set_result(CommandResult(True, reason, state))
        return f

    def stop(self):
        return self._done("stop", "stopped by the operator; beam off", State.TERMINATED)

    def pause(self, reason):
        return self._done("pause", f"paused: {reason}; beam off", State.PAUSED)

    def resume(self):
        return self._done("resume", "beam on", State.BEAM_ON)

    def emergency_stop(self):
        return self._done("emergency_stop", "emergency stop; beam off", State.TERMINATED)


class _Service:
    """Only what the beam commands touch; the methods under test are the real ones."""

    def __init__(self, store: Store) -> None:
        self.store, self.identity = store, IdentityService(store, installation_key=None)
        self.supervisor, self.command_timeout_s, self._record_id = _Supervisor(), 5.0, "rec-1"
        self.messages: list[str] = []
        self._outcome_cond, self._delivering = threading.Condition(), False
        for name in ("_beam_command", "beam_on", "stop", "pause", "resume", "emergency_stop"):
            setattr(self, name, getattr(TreatmentService, name).__get__(self))

    def _require_supervisor(self):
        return self.supervisor

    def _changed(self, message=None):
        self.messages.append(message)


def _session(role: Role) -> Session:
    return Session(user_id="u-1", username="tom", full_name="Tom Therapist", role=role, started_utc="2026-01-01T00:00:00Z")


@pytest.fixture
def service():
    store = Store(_dead_url(), migrate=False)
    yield _Service(store)
    store.close()


def test_the_store_reports_a_refused_connection_as_unavailable_with_what_to_do(service):
    with pytest.raises(StoreUnavailable) as info:
        service.store.audit("tom", "anything")
    assert "record store" in info.value.message and "Restore the database server" in info.value.message
    assert not service.store.healthcheck().ok


@pytest.mark.parametrize("command", ["stop", "pause"])
def test_stop_and_pause_reach_the_supervisor_while_the_store_is_down(service, command):
    result = getattr(service, command)(_session(Role.RADIATION_THERAPIST))
    assert result.ok and service.supervisor.calls == [command]
    assert "not in the audit trail: the record store is unavailable" in service.messages[-1]


def test_the_emergency_stop_reports_its_result_while_the_store_is_down(service):
    result = service.emergency_stop()
    assert result.ok and service.supervisor.calls == ["emergency_stop"]
    assert "not in the audit trail" in service.messages[-1]


def test_beam_on_is_refused_while_the_store_is_down_and_leaves_no_delivery_pending(service):
    with pytest.raises(StoreUnavailable) as info:
        service.beam_on(_session(Role.RADIATION_THERAPIST))
    assert "record store" in info.value.message and service.supervisor.calls == []
    assert service._delivering is False      # else finish_record and a continuation stay refused for ever


def test_resume_is_refused_while_the_store_is_down(service):
    with pytest.raises(StoreUnavailable):
        service.resume(_session(Role.RADIATION_THERAPIST))
    assert service.supervisor.calls == []


def test_a_role_without_beam_permission_is_still_refused_stop_through_its_session(service):
    with pytest.raises(PermissionDenied):
        service.stop(_session(Role.ADMINISTRATOR))
    assert service.supervisor.calls == []


def test_the_supervisors_qa_probe_refuses_with_a_reason_when_the_store_is_down(service):
    """The Supervisor catches Refused from its QA probe (output-check interlock); anything else raised inside a
    Supervisor command ends an armed treatment in FAULT."""
    from datetime import date

    from orconsole.models import Refused
    from orconsole.qa import QaPolicy, StoreQaRepository

    service._qa_repo, service._today, service.qa_policy = StoreQaRepository(service.store), date.today, QaPolicy()
    probe = TreatmentService._qa_results_for_supervisor.__get__(service)
    with pytest.raises(Refused) as info:
        probe("XRS-1")
    assert "output check cannot be read" in info.value.message and "record store" in info.value.message
