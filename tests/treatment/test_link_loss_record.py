"""The whole TreatmentService (orconsole.wiring, in-process fast bench): the link to the unit is lost during
beam. The record first holds the last IRM reading before the loss; continuation and signature are refused
until the unit's counter is read after Reconnect; then the session holds the unit's dose and the
continuation is planned on it (never on the lower last reading, which would over-dose)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from logs.records import RecordBook
from orconsole.commands.demo import _plan_and_approve
from orconsole.statemachine import State
from orconsole.treatment import WorkflowRefused
from simulators.bench import get_bench, reset_benches
from tests.support.installation import ONCOLOGIST, PHYSICIST, THERAPIST, console_args

pytestmark = pytest.mark.slow


@pytest.fixture
def console(installation, tmp_path, monkeypatch):
    from orconsole.wiring import build_treatment_service
    inst = installation.copy_to(tmp_path / "home")
    monkeypatch.setenv("ORCONSOLE_HOME", str(inst.home))
    monkeypatch.delenv("ORCONSOLE_INSTALLATION_KEY", raising=False)
    monkeypatch.delenv("ORCONSOLE_CONFIG", raising=False)
    bench = get_bench("link-loss-record", source="fast", applicator="3.0", seed="7")
    parts = build_treatment_service(console_args(inst, "link-loss-record"))
    try:
        yield parts, bench, inst.passwords
    finally:
        parts.service.close()
        parts.store.close()
        reset_benches()


def _session_irm_gy(store, record_id: str) -> float:
    return RecordBook(store).load(record_id).sessions[-1].dose_gy.secondary_irm_gy


def test_a_session_that_lost_its_link_is_settled_from_the_units_counter_before_a_continuation(console):
    parts, bench, passwords = console
    service = parts.service
    sessions = {u: parts.identity.login(u, passwords[u]) for u in (THERAPIST, PHYSICIST, ONCOLOGIST)}
    therapist = sessions[THERAPIST]
    service.prepare_devices()                              # orconsole.wiring has connected and started it
    _plan_and_approve(service, sessions, passwords, SimpleNamespace(dose="20", applicator=3.0))
    patient = service.status().patient
    assert service.run_checklist(therapist, medical_record_number=patient.medical_record_number,
                                 date_of_birth=patient.date_of_birth).ok
    box = service.subscribe_treatment()
    assert service.start_treatment(therapist).ok
    assert service.beam_on(therapist).ok
    assert box.wait_for(lambda s: s.state is State.BEAM_ON and s.elapsed_s >= 3.0, 20) is not None

    bench.faults["xrs"].silent = True                      # the cable is pulled: the unit's watchdog stops it
    assert box.wait_for(lambda s: s.state is State.FAULT, 10) is not None
    outcome = service.wait_for_end(30.0)
    unit_gy = bench.xrs_model.status().irm_dose_gy
    recorded_gy = _session_irm_gy(parts.store, outcome.record_id)
    assert recorded_gy < unit_gy - 0.05                    # the last reading before the loss: a lower bound

    for refused in (lambda: service.plan_continuation(sessions[ONCOLOGIST], passwords[ONCOLOGIST]),
                    lambda: service.finish_record(therapist, passwords[THERAPIST])):
        with pytest.raises(WorkflowRefused, match="Reconnect the X-ray unit"):
            refused()

    bench.faults["xrs"].silent = False                     # the cable is back
    for _ in range(3):                                    # an operator presses Reconnect again if it did not take
        result = service.reconnect_devices(therapist)
        if result.ok and "settled" in result.reason:
            break
        time.sleep(0.5)
    assert result.ok and "settled" in result.reason, result.reason
    deadline = time.monotonic() + 10
    while _session_irm_gy(parts.store, outcome.record_id) == recorded_gy and time.monotonic() < deadline:
        time.sleep(0.1)
    record = RecordBook(parts.store).load(outcome.record_id)
    assert record.sessions[-1].dose_gy.secondary_irm_gy == pytest.approx(unit_gy, abs=1e-6)
    assert f"{recorded_gy:.4f} Gy was the last reading before the link was lost" in record.sessions[-1].termination_detail
    assert parts.store.audit_entries(action="session IRM dose settled")

    plan = service.plan_continuation(sessions[ONCOLOGIST], passwords[ONCOLOGIST])
    assert plan.previously_delivered_gy == pytest.approx(unit_gy, abs=1e-5)
