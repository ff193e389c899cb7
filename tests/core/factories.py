"""Builders of valid domain objects for the core tests: one place, so each test changes one thing."""
from __future__ import annotations

from datetime import date, datetime, timezone

from orconsole.config import SiteConfig
from orconsole.dosecalc import TreatmentTime, compute_treatment_time, make_plan
from orconsole.dosecheck import check_plan
from orconsole.models import (ApplicatorDoseRate, Approval, ApprovedPlan, ApproverRole, Cavity, Patient, Plan,
                              QaOutcome, QaResult, SourceCalibration, TrialProtocol)

TODAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc)
SERIAL = "XRS-0042"

# Published 50 kV surface dose rates for 3.0/4.0/5.0 cm; the others are test assumptions.
RATES_GY_PER_MIN = {1.5: 2.60, 2.0: 1.70, 2.5: 1.20, 3.0: 0.87, 3.5: 0.83, 4.0: 0.80, 4.5: 0.60, 5.0: 0.45}
MEASURED = {3.0, 4.0, 5.0}


def calibration(**changes) -> SourceCalibration:
    data = dict(source_serial=SERIAL,
                dose_rates=tuple(ApplicatorDoseRate(diameter_cm=d, surface_dose_rate_gy_per_min=r,
                                                    assumption=d not in MEASURED)
                                 for d, r in RATES_GY_PER_MIN.items()),
                qa_reference_reading_c=2.0e-8, calibration_date=date(2026, 1, 15),
                valid_until=date(2027, 1, 14), calibrated_by="Dr. P. Physicist")
    data.update(changes)
    return SourceCalibration(**data)


def protocol(**changes) -> TrialProtocol:
    return TrialProtocol(**{"name": "IORT-BM-01", **changes})


def qa(k_out: float = 1.0, result: QaOutcome = QaOutcome.PASS, **changes) -> QaResult:
    data = dict(qa_id="QA-2026-11-26-1", source_serial=SERIAL, performed_on=TODAY, k_out=k_out, result=result)
    data.update(changes)
    return QaResult(**data)


def patient(**changes) -> Patient:
    data = dict(medical_record_number="MRN-100234", full_name="Erika Mustermann",
                date_of_birth=date(1961, 3, 14), trial_subject_id="BM-017")
    data.update(changes)
    return Patient(**data)


def cavity() -> Cavity:
    return Cavity(site="left frontal", lesion_label="metastasis 1 (NSCLC)", cavity_diameter_cm=3.0)


def time_for(applicator_cm: float = 3.0, *, k_out: float = 1.0, config: SiteConfig | None = None,
             **kwargs) -> TreatmentTime:
    args = dict(prescription_dose_gy=20.0, applicator_cm=applicator_cm, protocol=protocol(),
                calibration=calibration(), qa_results=[qa(k_out)], device_source_serial=SERIAL, today=TODAY,
                config=config)
    args.update(kwargs)
    return compute_treatment_time(**args)


def plan(applicator_cm: float = 3.0, **kwargs) -> Plan:
    return make_plan(time_for(applicator_cm, **kwargs), plan_id="PLAN-017-1", patient=patient(), cavity=cavity(),
                     protocol=protocol(), created_at=NOW, created_by="dosimetrist.d")


def physician_approval(p: Plan) -> Approval:
    return Approval(plan_content_hash=p.content_hash, role=ApproverRole.PHYSICIAN, approver_id="onc.o",
                    approver_name="Dr. O. Oncologist", approved_at=NOW, signature_ref="sig-1")


def physicist_approval(p: Plan, *, physicist_time_s: float | None = None) -> Approval:
    check = check_plan(p, calibration(), agreement_fraction=0.02, physicist_time_s=physicist_time_s)
    return Approval(plan_content_hash=p.content_hash, role=ApproverRole.PHYSICIST, approver_id="phys.p",
                    approver_name="Dr. P. Physicist", approved_at=NOW, signature_ref="sig-2",
                    independent_check=check)


def approved(p: Plan | None = None) -> ApprovedPlan:
    p = p or plan()
    return ApprovedPlan(plan=p).with_approval(physician_approval(p)).with_approval(physicist_approval(p))
