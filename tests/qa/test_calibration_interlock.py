"""CALIBRATION_NOT_VALID: a source without a valid active calibration cannot be made ready or armed; the
Supervisor asks for the reason with the other preconditions, and the interlock clears with its cause."""
from __future__ import annotations

import pytest

from orconsole.interlocks import REGISTRY, Effect, InterlockId, Latching
from orconsole.models import ApprovedPlan
from orconsole.supervisor import Supervisor
from simulators.clock import MonotonicClock
from tests.core import factories as f
from tests.core.fake_xrs import FakeXrs
from tests.core.test_supervisor import CONFIG, PLAN_TIME_S, TIMEOUT_S, ok, short_plan


def test_the_interlock_is_registered_blocks_start_and_clears_itself():
    d = REGISTRY[InterlockId.CALIBRATION_NOT_VALID]
    assert d.id.value == "calibration_not_valid"
    assert d.latching is Latching.SELF_CLEARING and d.effect is Effect.BLOCKS_START
    assert "calibration" in d.remediation.lower() and "approve" in d.remediation.lower()


@pytest.fixture
def rig(tmp_path):
    clock = MonotonicClock()
    xrs = FakeXrs(clock, dose_rate_gy_per_s=20.0 / PLAN_TIME_S)
    problem = {"text": "the calibration of source XRS-0412 (version 1, dated 2025-10-01) expired on 2026-10-01"}
    sup = Supervisor(xrs, journal_path=tmp_path / "journal.jsonl", clock=clock, device_source_serial=f.SERIAL,
                     config=CONFIG, today=lambda: f.TODAY, qa_results=lambda: [f.qa()],
                     calibration_problem=lambda: problem["text"])
    box = sup.subscribe()
    sup.start()
    yield sup, box, problem
    sup.close()


def test_an_expired_calibration_refuses_ready_with_the_reason_and_clears_when_fixed(rig):
    sup, box, problem = rig
    plan = short_plan()
    ok(sup.load_plan(ApprovedPlan(plan=plan.plan)))
    ok(sup.approve(plan))
    ok(sup.verify_identity(medical_record_number="MRN-100234", date_of_birth=f.patient().date_of_birth))
    refused = sup.confirm_ready().result(timeout=TIMEOUT_S)
    assert not refused.ok and "expired" in refused.reason
    snap = box.wait_for(lambda s: any(i.id is InterlockId.CALIBRATION_NOT_VALID for i in s.interlocks), TIMEOUT_S)
    assert snap is not None
    problem["text"] = None
    ok(sup.confirm_ready())
    snap = box.wait_for(lambda s: not any(i.id is InterlockId.CALIBRATION_NOT_VALID for i in s.interlocks),
                        TIMEOUT_S)
    assert snap is not None


def test_a_failing_calibration_probe_holds_treatment(rig):
    sup, _, problem = rig

    def broken():
        raise RuntimeError("database locked")

    sup._calibration_problem = broken
    plan = short_plan()
    ok(sup.load_plan(ApprovedPlan(plan=plan.plan)))
    ok(sup.approve(plan))
    ok(sup.verify_identity(medical_record_number="MRN-100234", date_of_birth=f.patient().date_of_birth))
    refused = sup.confirm_ready().result(timeout=TIMEOUT_S)
    assert not refused.ok and "could not be checked" in refused.reason
