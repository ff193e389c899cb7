"""Treatment time: t = D_rx / (Ḋ_surface(applicator) × k_out), and the prescription entry parser.

Every input is checked before it scales anything; anything doubtful is refused with a reason that
says what to do (models.Refused). Never clip, round away or default a value to make a plan work.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Iterable

from orconsole.config import SiteConfig
from orconsole.models import (Cavity, DeliveryType, Patient, Plan, QaOutcome, QaResult, Refused,
                              SourceCalibration, TrialProtocol)

# ASCII only: "２０" or "٢٠" would pass float() and must not pass here.
_PRESCRIPTION_TEXT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3})?", re.ASCII)


def parse_prescription_gy(text: str, protocol: TrialProtocol, config: SiteConfig | None = None) -> float:
    """Parse a prescription typed at the console ("20" or "20.0"); refuse anything else with a reason.

    Accepted only when it equals the protocol's prescription and stays within the hard ceiling.
    """
    config = config or SiteConfig()
    proto_gy = protocol.prescription_dose_gy
    if not isinstance(text, str):
        raise Refused("prescription_not_text",
                      f"prescription {text!r} was not typed text: enter the dose in Gy, e.g. {proto_gy:g}")
    stripped = text.strip(" \t")
    if not stripped:
        raise Refused("prescription_empty", f"no prescription entered: type the protocol dose, {proto_gy:g} Gy")
    if not stripped.isascii():
        raise Refused("prescription_non_ascii",
                      f"prescription {text!r} contains characters other than the digits 0–9 and '.': "
                      f"retype it on the console keyboard as {proto_gy:g}")
    if "," in stripped:
        raise Refused("prescription_decimal_comma",
                      f"prescription {text!r} uses a comma: use a decimal point, e.g. {proto_gy:.1f}")
    if not _PRESCRIPTION_TEXT.fullmatch(stripped):
        raise Refused("prescription_not_a_number",
                      f"prescription {text!r} is not a plain dose in Gy (digits and at most one '.'; no sign, "
                      f"exponent, NaN or infinity): enter {proto_gy:g}")
    try:
        value = Decimal(stripped)
    except InvalidOperation:  # pragma: no cover - the pattern already excludes this
        raise Refused("prescription_not_a_number", f"prescription {text!r} is not a number: enter {proto_gy:g}")
    dose_gy = float(value)
    _check_dose(dose_gy, protocol, config)
    return dose_gy


def _check_dose(dose_gy: float, protocol: TrialProtocol, config: SiteConfig) -> None:
    ceiling = config.prescription.hard_ceiling_dose_gy
    proto_gy = protocol.prescription_dose_gy
    if not isinstance(dose_gy, (int, float)) or isinstance(dose_gy, bool) or not math.isfinite(dose_gy):
        raise Refused("prescription_not_a_number",
                      f"prescription {dose_gy!r} is not a finite number of Gy: enter {proto_gy:g}")
    if dose_gy > ceiling:
        raise Refused("prescription_above_ceiling",
                      f"{dose_gy:g} Gy exceeds the hard ceiling of {ceiling:g} Gy for one session: "
                      f"this console will not plan it; the protocol prescribes {proto_gy:g} Gy")
    if dose_gy != proto_gy or dose_gy != config.prescription.protocol_dose_gy:
        hint = " (a missing or extra digit?)" if dose_gy in (proto_gy * 10, proto_gy / 10) else ""
        raise Refused("prescription_not_protocol",
                      f"{dose_gy:g} Gy differs from the {protocol.name} prescription of {proto_gy:g} Gy at the "
                      f"applicator surface{hint}: enter {proto_gy:g}, or treat off protocol outside this console")


@dataclass(frozen=True)
class TreatmentTime:
    """The calculated time and every input it came from (for the plan and the record)."""

    treatment_time_s: float              # exact, for the dose to deliver now
    preset_time_s: float                 # rounded to the timer resolution, what the timer gets
    full_prescription_time_s: float      # time for the whole prescription (plausibility is judged on it)
    dose_to_deliver_gy: float
    prescription_dose_gy: float
    applicator_cm: float
    surface_dose_rate_gy_per_min: float
    k_out: float
    qa_id: str
    source_serial: str
    calibration_digest: str

    @property
    def treatment_time_min(self) -> float:
        return self.treatment_time_s / 60.0


def todays_output_check(qa_results: Iterable[QaResult], *, source_serial: str, today: date) -> QaResult:
    """The latest output check of this source today that may be used, or Refused saying why not."""
    candidates = [q for q in qa_results if q.source_serial == source_serial and q.performed_on == today]
    if not candidates:
        raise Refused("qa_missing",
                      f"no output check of source {source_serial} today ({today.isoformat()}): the physicist "
                      "must perform the daily output check before a treatment time can be calculated")
    latest = candidates[-1]          # results arrive in the order they were made
    if latest.result is QaOutcome.FAIL:
        raise Refused("qa_failed",
                      f"today's output check {latest.qa_id} of source {source_serial} FAILED (k_out "
                      f"{latest.k_out:.4f}): no treatment; the physicist must find the cause and repeat the check")
    if latest.result is QaOutcome.WARNING and not latest.acknowledged:
        raise Refused("qa_warning_unacknowledged",
                      f"today's output check {latest.qa_id} is in the warning band (k_out {latest.k_out:.4f}) and "
                      "has not been acknowledged: the physicist must review and acknowledge it")
    return latest


def _round_to_resolution(seconds: float, resolution_s: float) -> float:
    steps = (Decimal(repr(seconds)) / Decimal(repr(resolution_s))).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return float(steps * Decimal(repr(resolution_s)))


def compute_treatment_time(*, prescription_dose_gy: float, applicator_cm: float, protocol: TrialProtocol,
                           calibration: SourceCalibration, qa_results: Iterable[QaResult], device_source_serial: str,
                           today: date, config: SiteConfig | None = None,
                           previously_delivered_gy: float = 0.0) -> TreatmentTime:
    """Calculate the treatment time, or raise Refused with what is wrong and what to do.

    `device_source_serial` is the serial the connected source reports; `today` the calendar day of use
    (from the caller's clock). For a continuation, `previously_delivered_gy` is what was delivered.
    """
    config = config or SiteConfig()
    _check_dose(prescription_dose_gy, protocol, config)
    if not (isinstance(previously_delivered_gy, (int, float)) and math.isfinite(previously_delivered_gy)
            and 0.0 <= previously_delivered_gy < prescription_dose_gy):
        raise Refused("previous_dose_invalid",
                      f"previously delivered dose {previously_delivered_gy!r} Gy must be at least 0 and below the "
                      f"prescription {prescription_dose_gy:g} Gy: check the interrupted treatment's record")

    if applicator_cm not in protocol.allowed_applicators_cm:
        allowed = ", ".join(f"{d:.1f}" for d in protocol.allowed_applicators_cm)
        raise Refused("applicator_not_allowed",
                      f"the {applicator_cm} cm applicator is not allowed by {protocol.name} (allowed: {allowed} cm): "
                      "choose an allowed applicator")
    if calibration.source_serial != device_source_serial:
        raise Refused("calibration_other_source",
                      f"the calibration is for source {calibration.source_serial} but the connected source is "
                      f"{device_source_serial}: load this source's calibration, or connect the calibrated source")
    if today < calibration.calibration_date:
        raise Refused("calibration_future",
                      f"calibration of source {calibration.source_serial} is dated {calibration.calibration_date}, "
                      f"after today ({today}): check the console's date and the calibration record")
    if today > calibration.valid_until:
        raise Refused("calibration_expired",
                      f"calibration of source {calibration.source_serial} expired on {calibration.valid_until}: "
                      "the physicist must recalibrate the source and import the new calibration")
    rate = calibration.dose_rate_for(applicator_cm)
    if rate is None:
        raise Refused("applicator_not_calibrated",
                      f"source {calibration.source_serial} has no calibrated dose rate for the {applicator_cm:.1f} cm "
                      "applicator: choose a calibrated applicator, or have the physicist calibrate it")

    qa = todays_output_check(qa_results, source_serial=device_source_serial, today=today)
    window = min(config.qa.k_out_window_fraction, protocol.tolerances.k_out_window_fraction)
    # 1e-12 absorbs binary rounding only (1.03 - 1.0 = 0.030000000000000027): the edge itself is allowed.
    if not math.isfinite(qa.k_out) or abs(qa.k_out - 1.0) > window + 1e-12:
        raise Refused("k_out_out_of_window",
                      f"today's output factor k_out = {qa.k_out:.4f} ({(qa.k_out - 1) * 100:+.1f} %) is outside the "
                      f"±{window * 100:.1f} % window (output check {qa.qa_id}): no treatment; the physicist must "
                      "repeat the output check (source fully inserted, chamber and holder seated) and find the cause")

    effective_rate_gy_per_min = rate.surface_dose_rate_gy_per_min * qa.k_out
    full_time_s = prescription_dose_gy / effective_rate_gy_per_min * 60.0
    lo, hi = config.planning.treatment_time_min_s, config.planning.treatment_time_max_s
    if not (lo <= full_time_s <= hi):
        raise Refused("time_implausible",
                      f"calculated time {full_time_s:.1f} s for {prescription_dose_gy:g} Gy is outside the plausible "
                      f"{lo:.0f}–{hi:.0f} s: no treatment; the physicist must check the calibration "
                      f"({rate.surface_dose_rate_gy_per_min} Gy/min for {applicator_cm:.1f} cm) and the output check")
    dose_now_gy = prescription_dose_gy - previously_delivered_gy
    time_s = dose_now_gy / effective_rate_gy_per_min * 60.0
    preset_s = _round_to_resolution(time_s, config.planning.timer_resolution_s)
    if preset_s <= 0:
        raise Refused("time_zero",
                      f"the remaining dose {dose_now_gy:.3f} Gy needs less than one timer step: nothing to deliver; "
                      "close the treatment and record it")
    return TreatmentTime(
        treatment_time_s=time_s, preset_time_s=preset_s, full_prescription_time_s=full_time_s,
        dose_to_deliver_gy=dose_now_gy, prescription_dose_gy=prescription_dose_gy, applicator_cm=applicator_cm,
        surface_dose_rate_gy_per_min=rate.surface_dose_rate_gy_per_min, k_out=qa.k_out, qa_id=qa.qa_id,
        source_serial=device_source_serial, calibration_digest=calibration.content_digest or "")


def make_plan(time: TreatmentTime, *, plan_id: str, patient: Patient, cavity: Cavity, protocol: TrialProtocol,
              created_at: datetime, created_by: str, supersedes_hash: str | None = None) -> Plan:
    """A version-1 plan (or a continuation, when dose was delivered before) from a calculated time."""
    continuation = time.prescription_dose_gy != time.dose_to_deliver_gy
    return Plan(plan_id=plan_id, patient=patient, cavity=cavity, protocol_name=protocol.name,
                delivery_type=DeliveryType.CONTINUATION if continuation else DeliveryType.TREATMENT,
                supersedes_hash=supersedes_hash,
                prescription_dose_gy=time.prescription_dose_gy,
                previously_delivered_gy=time.prescription_dose_gy - time.dose_to_deliver_gy,
                applicator_cm=time.applicator_cm, source_serial=time.source_serial,
                calibration_digest=time.calibration_digest, qa_id=time.qa_id, k_out=time.k_out,
                surface_dose_rate_gy_per_min=time.surface_dose_rate_gy_per_min,
                treatment_time_s=time.treatment_time_s, preset_time_s=time.preset_time_s,
                created_at=created_at, created_by=created_by)
