"""Plans are immutable once made; approvals bind to one content hash; calibrations carry a digest."""
from __future__ import annotations

from datetime import date

import pydantic
import pytest

from orconsole.dosecheck import check_plan, independent_time_s
from orconsole.models import (ALL_APPLICATORS, Applicator, ApplicatorDoseRate, Approval, ApprovedPlan,
                              ApproverRole, IndependentCheck, Patient, Refused)

from tests.core import factories as f


def test_there_are_eight_applicators_from_1_5_to_5_0_cm_in_half_cm_steps():
    assert [a.diameter_cm for a in ALL_APPLICATORS] == [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]


@pytest.mark.parametrize("diameter", [1.0, 3.2, 5.5, 0.0, -3.0, float("nan"), "3.0", True])
def test_no_other_applicator_exists(diameter):
    with pytest.raises(pydantic.ValidationError):
        Applicator(diameter_cm=diameter)


def test_plan_fields_cannot_be_changed():
    p = f.plan()
    with pytest.raises(pydantic.ValidationError):
        p.treatment_time_s = 1.0
    with pytest.raises(pydantic.ValidationError):
        p.patient.full_name = "Someone Else"


def test_plan_content_hash_is_stable_and_covers_every_field():
    p = f.plan()
    assert p.content_hash == f.plan().content_hash
    assert len(p.content_hash) == 64
    other_patient = p.model_copy(update={"patient": f.patient(trial_subject_id="BM-018")})
    assert other_patient.content_hash != p.content_hash


def test_an_edit_yields_a_new_version_that_needs_new_approvals():
    approved = f.approved()
    edited = approved.plan.revised(created_at=f.NOW, created_by="dosimetrist.d", applicator_cm=4.0,
                                   surface_dose_rate_gy_per_min=0.8, treatment_time_s=1500.0, preset_time_s=1500.0)
    assert edited.version == 2
    assert edited.supersedes_hash == approved.plan.content_hash
    assert edited.content_hash != approved.plan.content_hash
    with pytest.raises(pydantic.ValidationError, match="approve again"):
        ApprovedPlan(plan=edited, approvals=approved.approvals)
    fresh = ApprovedPlan(plan=edited)
    assert not fresh.fully_approved
    with pytest.raises(Refused) as info:
        fresh.with_approval(approved.approvals[0])
    assert info.value.code == "approval_wrong_version"


def test_revision_cannot_change_plan_identity():
    with pytest.raises(Refused):
        f.plan().revised(created_at=f.NOW, created_by="x", plan_id="OTHER")


def test_edited_values_are_validated_again():
    with pytest.raises(pydantic.ValidationError):
        f.plan().revised(created_at=f.NOW, created_by="x", applicator_cm=3.3)


def test_both_roles_are_needed_once_each():
    p = f.plan()
    one = ApprovedPlan(plan=p).with_approval(f.physician_approval(p))
    assert one.missing_roles() == (ApproverRole.PHYSICIST,) and not one.fully_approved
    both = one.with_approval(f.physicist_approval(p))
    assert both.fully_approved and both.missing_roles() == ()
    with pytest.raises(Refused) as info:
        both.with_approval(f.physician_approval(p))
    assert info.value.code == "approval_duplicate_role"


def test_physicist_approval_requires_an_agreeing_independent_check():
    p = f.plan()
    base = dict(plan_content_hash=p.content_hash, role=ApproverRole.PHYSICIST, approver_id="phys.p",
                approver_name="P", approved_at=f.NOW, signature_ref="sig")
    with pytest.raises(pydantic.ValidationError, match="independent check"):
        Approval(**base)
    bad = check_plan(p, f.calibration(), agreement_fraction=0.02, physicist_time_s=p.treatment_time_s * 1.021)
    assert not bad.agrees
    with pytest.raises(pydantic.ValidationError, match="find the discrepancy"):
        Approval(**base, independent_check=bad)
    ok = check_plan(p, f.calibration(), agreement_fraction=0.02, physicist_time_s=p.treatment_time_s * 1.019)
    assert Approval(**base, independent_check=ok).independent_check.agrees


def test_independent_check_for_another_version_is_refused():
    p = f.plan()
    check = check_plan(f.plan(4.0), f.calibration(), agreement_fraction=0.02)
    with pytest.raises(pydantic.ValidationError, match="another plan version"):
        Approval(plan_content_hash=p.content_hash, role=ApproverRole.PHYSICIST, approver_id="p",
                 approver_name="P", approved_at=f.NOW, signature_ref="s", independent_check=check)


@pytest.mark.parametrize("applicator_cm", [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0])
@pytest.mark.parametrize("k_out", [0.97, 1.0, 1.03])
def test_second_calculation_agrees_with_the_first(applicator_cm, k_out):
    p = f.plan(applicator_cm, k_out=k_out)
    assert independent_time_s(p, f.calibration()) == pytest.approx(p.treatment_time_s, rel=1e-9)
    assert check_plan(p, f.calibration(), agreement_fraction=0.02).agrees


def test_second_calculation_reads_the_calibration_not_the_plans_copy_of_the_rate():
    p = f.plan()
    wrong = p.model_copy(update={"treatment_time_s": p.treatment_time_s * 1.05})
    check = check_plan(wrong, f.calibration(), agreement_fraction=0.02)
    assert not check.agrees and check.deviation_fraction == pytest.approx(1 - 1 / 1.05, rel=1e-9)


def test_second_calculation_refuses_a_different_calibration():
    other = f.calibration(calibration_date=date(2026, 2, 1))
    with pytest.raises(Refused) as info:
        independent_time_s(f.plan(), other)
    assert info.value.code == "check_calibration_mismatch"


@pytest.mark.parametrize("entered", [0.0, -5.0, float("inf"), float("nan")])
def test_physicist_entry_must_be_a_positive_time(entered):
    with pytest.raises(Refused):
        check_plan(f.plan(), f.calibration(), agreement_fraction=0.02, physicist_time_s=entered)


def test_independent_check_deviation():
    c = IndependentCheck(method="m", plan_content_hash="h", plan_time_s=100.0, independent_time_s=102.0,
                         agreement_fraction=0.02)
    assert c.deviation_fraction == pytest.approx(0.02) and c.agrees
    assert not c.model_copy(update={"independent_time_s": 97.9}).agrees


def test_calibration_digest_detects_an_edited_calibration():
    calib = f.calibration()
    data = calib.model_dump()
    data["dose_rates"] = list(data["dose_rates"])
    data["dose_rates"][3] = dict(data["dose_rates"][3], surface_dose_rate_gy_per_min=0.95)
    with pytest.raises(pydantic.ValidationError, match="altered"):
        type(calib).model_validate(data)
    # unaltered data with its digest loads
    assert type(calib).model_validate(calib.model_dump()).content_digest == calib.content_digest


def test_calibration_rejects_duplicate_applicators_and_reversed_dates():
    with pytest.raises(pydantic.ValidationError, match="twice"):
        f.calibration(dose_rates=(ApplicatorDoseRate(diameter_cm=3.0, surface_dose_rate_gy_per_min=0.87),) * 2)
    with pytest.raises(pydantic.ValidationError, match="before calibration_date"):
        f.calibration(valid_until=date(2025, 1, 1))


def test_calibration_dose_rates_cannot_be_changed_in_place():
    calib = f.calibration()
    assert isinstance(calib.dose_rates, tuple)
    with pytest.raises(pydantic.ValidationError):
        calib.dose_rates[0].surface_dose_rate_gy_per_min = 9.0


@pytest.mark.parametrize("field, value", [("full_name", ""), ("full_name", "  "), ("medical_record_number", " 1"),
                                          ("trial_subject_id", ""), ("date_of_birth", date(1850, 1, 1))])
def test_patient_identifiers_must_be_present(field, value):
    with pytest.raises(pydantic.ValidationError):
        f.patient(**{field: value})


def test_patient_is_frozen():
    with pytest.raises(pydantic.ValidationError):
        f.patient().full_name = "X"
    assert isinstance(f.patient(), Patient)


def test_naive_timestamps_are_refused():
    with pytest.raises(pydantic.ValidationError, match="time zone"):
        f.plan().revised(created_at=f.NOW.replace(tzinfo=None), created_by="x")
