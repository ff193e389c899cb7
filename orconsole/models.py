"""Domain models of a treatment: patient, cavity, applicators, calibration, QA result, protocol, plan.

Everything that must never change after it was checked is a frozen pydantic model with a content
hash; an edit makes a new version that needs new approvals. Never mutate a model in place.
"""
from __future__ import annotations

import enum
import hashlib
import json
import math
from datetime import date, datetime
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from drivers.hal import APPLICATOR_DIAMETERS_CM


class Refused(ValueError):
    """A request the core will not carry out. `code` is for programs; `message` is what a person
    reads: what happened and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)


def canonical_json(data: Any) -> bytes:
    """Deterministic JSON for hashing: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _digest(model: BaseModel, *, exclude: set[str]) -> str:
    return hashlib.sha256(canonical_json(model.model_dump(mode="json", exclude=exclude))).hexdigest()


def _non_blank(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is empty: enter it")
    if value != value.strip():
        raise ValueError(f"{what} {value!r} has leading or trailing spaces: remove them")
    return value


# --------------------------------------------------------------------------------------------
# Applicators
# --------------------------------------------------------------------------------------------


def validate_applicator_cm(diameter_cm: float) -> float:
    """Return the diameter if it is one of the eight spherical applicators, else raise ValueError."""
    if isinstance(diameter_cm, bool) or not isinstance(diameter_cm, (int, float)) or not math.isfinite(diameter_cm):
        raise ValueError(f"applicator diameter {diameter_cm!r} is not a number")
    if float(diameter_cm) not in APPLICATOR_DIAMETERS_CM:
        sizes = ", ".join(f"{d:.1f}" for d in APPLICATOR_DIAMETERS_CM)
        raise ValueError(f"no spherical applicator of {diameter_cm} cm exists: choose one of {sizes} cm")
    return float(diameter_cm)


ApplicatorCm = Annotated[float, BeforeValidator(validate_applicator_cm)]


def applicator_label(diameter_cm: float) -> str:
    return f"{diameter_cm:.1f} cm sphere"


class Applicator(_Frozen):
    """One of the eight spherical applicators (1.5–5.0 cm diameter in 0.5 cm steps)."""

    diameter_cm: ApplicatorCm

    @property
    def label(self) -> str:
        return applicator_label(self.diameter_cm)


ALL_APPLICATORS: tuple[Applicator, ...] = tuple(Applicator(diameter_cm=d) for d in APPLICATOR_DIAMETERS_CM)


# --------------------------------------------------------------------------------------------
# Patient and cavity
# --------------------------------------------------------------------------------------------


class Patient(_Frozen):
    medical_record_number: str
    full_name: str
    date_of_birth: date
    trial_subject_id: str

    @field_validator("medical_record_number", "full_name", "trial_subject_id")
    @classmethod
    def _present(cls, value: str, info) -> str:
        return _non_blank(value, info.field_name.replace("_", " "))

    @field_validator("date_of_birth")
    @classmethod
    def _plausible_birth(cls, value: date) -> date:
        if value.year < 1900:
            raise ValueError(f"date of birth {value.isoformat()} is before 1900: check the entry")
        return value


class Cavity(_Frozen):
    """The resection cavity (after removal of the lesion) that the applicator fills."""

    site: str                               # e.g. "left frontal"
    lesion_label: str                       # e.g. "metastasis 1 (NSCLC)"
    cavity_diameter_cm: float = Field(gt=0, le=8.0)

    @field_validator("site", "lesion_label")
    @classmethod
    def _present(cls, value: str, info) -> str:
        return _non_blank(value, info.field_name.replace("_", " "))


# --------------------------------------------------------------------------------------------
# Source calibration and daily QA
# --------------------------------------------------------------------------------------------


class ApplicatorDoseRate(_Frozen):
    """Calibrated surface dose rate of one applicator, 50 kV, for one source."""

    diameter_cm: ApplicatorCm
    # Model-level sanity only (the ×60 fast simulator source reaches 156 Gy/min); the clinical guard is the
    # calibration import's limit and the treatment-time plausibility bounds of the site configuration.
    surface_dose_rate_gy_per_min: float = Field(gt=0, le=200.0)
    assumption: bool = False                # True where the value is not measured (flag it)


class SourceCalibration(_Frozen):
    """Calibration data of one X-ray source, dated. `content_digest` covers every other field and is
    verified on load: a calibration file edited by hand no longer matches its digest."""

    source_serial: str
    dose_rates: tuple[ApplicatorDoseRate, ...]
    qa_reference_reading_c: float = Field(gt=0, description="output-check chamber reading at calibration, C")
    calibration_date: date
    valid_until: date
    calibrated_by: str
    content_digest: Optional[str] = None

    @field_validator("source_serial", "calibrated_by")
    @classmethod
    def _present(cls, value: str, info) -> str:
        return _non_blank(value, info.field_name.replace("_", " "))

    @model_validator(mode="after")
    def _consistent(self) -> "SourceCalibration":
        if self.valid_until < self.calibration_date:
            raise ValueError(f"valid_until {self.valid_until} is before calibration_date {self.calibration_date}")
        seen = [r.diameter_cm for r in self.dose_rates]
        if len(seen) != len(set(seen)):
            raise ValueError("an applicator appears twice in the calibration: keep one dose rate per applicator")
        digest = self.compute_digest()
        if self.content_digest is None:
            object.__setattr__(self, "content_digest", digest)
        elif self.content_digest != digest:
            raise ValueError(
                f"calibration content digest {self.content_digest[:12]}… does not match its content "
                f"({digest[:12]}…): the calibration data were altered; re-import the signed calibration")
        return self

    def compute_digest(self) -> str:
        return _digest(self, exclude={"content_digest"})

    def dose_rate_for(self, diameter_cm: float) -> ApplicatorDoseRate | None:
        for rate in self.dose_rates:
            if rate.diameter_cm == diameter_cm:
                return rate
        return None

    def is_valid_on(self, day: date) -> bool:
        return self.calibration_date <= day <= self.valid_until


class QaOutcome(str, enum.Enum):
    PASS = "pass"
    WARNING = "warning"
    FAIL = "fail"


class QaResult(_Frozen):
    """Result of one daily output check (produced by the QA workflow, consumed by the calculation)."""

    qa_id: str
    source_serial: str
    performed_on: date                      # the calendar day of use it is valid for
    k_out: float = Field(gt=0, lt=10)
    result: QaOutcome
    acknowledged: bool = False              # a warning must be acknowledged by a physicist

    @field_validator("qa_id", "source_serial")
    @classmethod
    def _present(cls, value: str, info) -> str:
        return _non_blank(value, info.field_name.replace("_", " "))


# --------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------


class ProtocolTolerances(_Frozen):
    """Tolerances the trial protocol mandates. Where the site configuration is stricter, it wins."""

    k_out_window_fraction: float = Field(0.03, gt=0, le=0.05)
    independent_check_agreement_fraction: float = Field(0.02, gt=0, le=0.05)
    dose_rate_tolerance_fraction: float = Field(0.10, gt=0, le=0.20)


class TrialProtocol(_Frozen):
    name: str
    prescription_dose_gy: float = Field(20.0, gt=0)
    allowed_applicators_cm: tuple[float, ...] = APPLICATOR_DIAMETERS_CM
    tolerances: ProtocolTolerances = ProtocolTolerances()

    @field_validator("name")
    @classmethod
    def _present(cls, value: str) -> str:
        return _non_blank(value, "protocol name")

    @field_validator("allowed_applicators_cm")
    @classmethod
    def _applicators(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("the protocol allows no applicator: list at least one")
        return tuple(validate_applicator_cm(v) for v in value)


# --------------------------------------------------------------------------------------------
# Plan and approvals
# --------------------------------------------------------------------------------------------


class DeliveryType(str, enum.Enum):
    TREATMENT = "TREATMENT"
    CONTINUATION = "CONTINUATION"           # the remainder after an interrupted delivery


class Plan(_Frozen):
    """A treatment plan. Frozen from creation; approvals bind to `content_hash`, so any edit
    (`revised(...)`) yields a new version whose approvals must be given again."""

    plan_id: str
    version: int = Field(1, ge=1)
    supersedes_hash: Optional[str] = None
    patient: Patient
    cavity: Cavity
    protocol_name: str
    delivery_type: DeliveryType = DeliveryType.TREATMENT
    prescription_dose_gy: float = Field(gt=0)
    previously_delivered_gy: float = Field(0.0, ge=0)
    applicator_cm: ApplicatorCm
    source_serial: str
    calibration_digest: str
    qa_id: str
    k_out: float = Field(gt=0)
    surface_dose_rate_gy_per_min: float = Field(gt=0)
    treatment_time_s: float = Field(gt=0)   # exact, for the dose to deliver in this plan
    preset_time_s: float = Field(gt=0)      # at timer resolution (0.1 s), what the timer is set to
    created_at: datetime
    created_by: str

    @model_validator(mode="after")
    def _consistent(self) -> "Plan":
        if self.previously_delivered_gy >= self.prescription_dose_gy:
            raise ValueError("nothing remains to deliver: previously delivered dose reaches the prescription")
        if self.delivery_type is DeliveryType.TREATMENT and self.previously_delivered_gy != 0:
            raise ValueError("a first treatment cannot carry previously delivered dose: make it a CONTINUATION")
        if self.delivery_type is DeliveryType.CONTINUATION and self.supersedes_hash is None:
            raise ValueError("a continuation must name the plan it continues (supersedes_hash)")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must carry a time zone")
        return self

    @property
    def dose_to_deliver_gy(self) -> float:
        return self.prescription_dose_gy - self.previously_delivered_gy

    @property
    def content_hash(self) -> str:
        return _digest(self, exclude=set())

    def revised(self, *, created_at: datetime, created_by: str, **changes: Any) -> "Plan":
        """A new version with `changes`; it supersedes this one and carries no approval."""
        forbidden = {"plan_id", "version", "supersedes_hash"} & set(changes)
        if forbidden:
            raise Refused("plan_identity_fixed", f"{sorted(forbidden)} cannot be edited: they identify the plan")
        data = self.model_dump()
        data.update(changes)
        data.update(version=self.version + 1, supersedes_hash=self.content_hash,
                    created_at=created_at, created_by=created_by)
        return Plan.model_validate(data)


class ApproverRole(str, enum.Enum):
    PHYSICIAN = "physician"                 # radiation oncologist
    PHYSICIST = "physicist"


class IndependentCheck(_Frozen):
    """The second treatment-time figure and how well it agrees with the plan's."""

    method: str                             # "dosecheck" (separate code path) or "physicist entry"
    plan_content_hash: str
    plan_time_s: float = Field(gt=0)
    independent_time_s: float = Field(gt=0)
    agreement_fraction: float = Field(gt=0)

    @property
    def deviation_fraction(self) -> float:
        return abs(self.independent_time_s - self.plan_time_s) / self.plan_time_s

    @property
    def agrees(self) -> bool:
        return self.deviation_fraction <= self.agreement_fraction


class Approval(_Frozen):
    """Who approved which plan version, in which role, when, with which signature (a reference into
    the record store; signing itself is not done here)."""

    plan_content_hash: str
    role: ApproverRole
    approver_id: str
    approver_name: str
    approved_at: datetime
    signature_ref: str
    independent_check: Optional[IndependentCheck] = None

    @model_validator(mode="after")
    def _physicist_needs_check(self) -> "Approval":
        if self.approved_at.tzinfo is None:
            raise ValueError("approved_at must carry a time zone")
        if self.role is ApproverRole.PHYSICIST:
            check = self.independent_check
            if check is None:
                raise ValueError("the physicist's approval needs an independent check of the treatment time")
            if check.plan_content_hash != self.plan_content_hash:
                raise ValueError("the independent check was made for another plan version: repeat it")
            if not check.agrees:
                raise ValueError(
                    f"independent time {check.independent_time_s:.1f} s differs from the plan's "
                    f"{check.plan_time_s:.1f} s by {check.deviation_fraction * 100:.2f} % (limit "
                    f"{check.agreement_fraction * 100:.1f} %): find the discrepancy before approving")
        return self


class ApprovedPlan(_Frozen):
    """A plan and the approvals given to exactly this version."""

    plan: Plan
    approvals: tuple[Approval, ...] = ()

    @model_validator(mode="after")
    def _bound(self) -> "ApprovedPlan":
        roles = [a.role for a in self.approvals]
        if len(roles) != len(set(roles)):
            raise ValueError("one approval per role")
        for a in self.approvals:
            if a.plan_content_hash != self.plan.content_hash:
                raise ValueError(
                    f"approval by {a.approver_name} ({a.role.value}) is for plan version "
                    f"{a.plan_content_hash[:12]}…, not this one ({self.plan.content_hash[:12]}…): approve again")
        return self

    def with_approval(self, approval: Approval) -> "ApprovedPlan":
        if approval.plan_content_hash != self.plan.content_hash:
            raise Refused("approval_wrong_version",
                          f"this approval is for another plan version ({approval.plan_content_hash[:12]}…): "
                          f"review and approve version {self.plan.version} ({self.plan.content_hash[:12]}…)")
        if any(a.role is approval.role for a in self.approvals):
            raise Refused("approval_duplicate_role",
                          f"the plan already carries a {approval.role.value} approval")
        return ApprovedPlan(plan=self.plan, approvals=self.approvals + (approval,))

    def missing_roles(self) -> tuple[ApproverRole, ...]:
        have = {a.role for a in self.approvals}
        return tuple(r for r in ApproverRole if r not in have)

    @property
    def fully_approved(self) -> bool:
        return not self.missing_roles()
