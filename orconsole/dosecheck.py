"""Independent second calculation of the treatment time, for plan approval.

Written apart from dosecalc on purpose (dose rate in Gy/s, a table keyed by whole millimetres, no
shared helpers): a bug in one path should not hide in the other. Never import orconsole.dosecalc here.
"""
from __future__ import annotations

from orconsole.models import IndependentCheck, Plan, Refused, SourceCalibration


def _rate_table_gy_per_s(calibration: SourceCalibration) -> dict[int, float]:
    """Calibrated surface dose rates in Gy/s, keyed by applicator diameter in whole millimetres."""
    table: dict[int, float] = {}
    for entry in calibration.dose_rates:
        key_mm = int(round(entry.diameter_cm * 10))
        table[key_mm] = entry.surface_dose_rate_gy_per_min / 60.0
    return table


def independent_time_s(plan: Plan, calibration: SourceCalibration) -> float:
    """Recompute the plan's time from the calibration (not from the rate copied into the plan)."""
    if calibration.compute_digest() != plan.calibration_digest:
        raise Refused("check_calibration_mismatch",
                      "the plan was calculated from a different calibration than the one loaded: reload the "
                      "calibration the plan names, or recalculate the plan")
    if calibration.source_serial != plan.source_serial:
        raise Refused("check_calibration_mismatch",
                      f"the plan is for source {plan.source_serial}, the calibration for {calibration.source_serial}")
    key_mm = int(round(plan.applicator_cm * 10))
    rate_gy_per_s = _rate_table_gy_per_s(calibration).get(key_mm)
    if rate_gy_per_s is None:
        raise Refused("check_applicator_uncalibrated",
                      f"no calibrated rate for a {key_mm} mm applicator: the plan cannot be checked")
    dose_gy = plan.prescription_dose_gy - plan.previously_delivered_gy
    delivered_per_s_gy = rate_gy_per_s * plan.k_out
    return dose_gy / delivered_per_s_gy


def check_plan(plan: Plan, calibration: SourceCalibration, *, agreement_fraction: float,
               physicist_time_s: float | None = None) -> IndependentCheck:
    """Build the independent check for the physicist's approval.

    With `physicist_time_s` the physicist's own figure is compared; otherwise this module's figure is.
    The caller (and the Approval model) refuse approval unless `check.agrees`.
    """
    if physicist_time_s is not None:
        if not (isinstance(physicist_time_s, (int, float)) and physicist_time_s > 0
                and physicist_time_s < float("inf")):
            raise Refused("check_time_invalid",
                          f"the entered time {physicist_time_s!r} s is not a positive number of seconds: re-enter it")
        second_s, method = float(physicist_time_s), "physicist entry"
    else:
        second_s, method = independent_time_s(plan, calibration), "orconsole.dosecheck"
    return IndependentCheck(method=method, plan_content_hash=plan.content_hash,
                            plan_time_s=plan.treatment_time_s, independent_time_s=second_s,
                            agreement_fraction=agreement_fraction)
