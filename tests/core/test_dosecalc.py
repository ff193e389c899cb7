"""Treatment time t = D_rx / (Ḋ_surface × k_out): hand-computed values and every refusal."""
from __future__ import annotations

from datetime import timedelta

import pytest

from orconsole.config import PlanningConfig, QaConfig, SiteConfig
from orconsole.dosecalc import compute_treatment_time, parse_prescription_gy, todays_output_check
from orconsole.models import ApplicatorDoseRate, DeliveryType, ProtocolTolerances, QaOutcome, Refused

from tests.core import factories as f


def refused_code(**kwargs) -> Refused:
    with pytest.raises(Refused) as info:
        f.time_for(**kwargs)
    assert info.value.message, "a refusal must carry a message"
    return info.value


# -- hand-computed values ------------------------------------------------------------------------

def test_3cm_at_k_out_1_is_20_gy_over_0_87_gy_per_min():
    t = f.time_for(3.0, k_out=1.0)
    # 20 / 0.87 = 22.98851 min = 1379.31 s
    assert t.treatment_time_min == pytest.approx(22.98851, abs=1e-5)
    assert t.treatment_time_s == pytest.approx(1379.3103, abs=1e-3)
    assert t.preset_time_s == 1379.3


@pytest.mark.parametrize("applicator_cm, rate, minutes", [(4.0, 0.80, 25.0), (5.0, 0.45, 44.4444)])
def test_published_applicators_give_published_times(applicator_cm, rate, minutes):
    t = f.time_for(applicator_cm)
    assert t.surface_dose_rate_gy_per_min == rate
    assert t.treatment_time_min == pytest.approx(minutes, abs=1e-4)


def test_k_out_scales_time_inversely():
    # 20 / (0.87 × 1.02) = 22.53775 min = 1352.265 s; a higher output shortens the time
    t = f.time_for(3.0, k_out=1.02)
    assert t.treatment_time_s == pytest.approx(20 / (0.87 * 1.02) * 60, rel=1e-12)
    assert t.treatment_time_s == pytest.approx(1352.265, abs=1e-3)
    assert t.preset_time_s == 1352.3


def test_preset_is_at_timer_resolution_rounding_half_up():
    # 20 / (0.80 × 0.99) = 25.2525… min = 1515.1515… s → 1515.2 s
    t = f.time_for(4.0, k_out=0.99)
    assert t.preset_time_s == 1515.2
    assert abs(t.preset_time_s - t.treatment_time_s) <= 0.05 + 1e-9


def test_the_recorded_incident_k_out_is_refused():
    # Incident: 230.7 s became 436.6 s because of a bad chamber reading: k_out = 230.7 / 436.6 = 0.5284.
    k_out = 230.7 / 436.6
    calib = f.calibration(dose_rates=(ApplicatorDoseRate(diameter_cm=3.0,
                                                         surface_dose_rate_gy_per_min=20 / 230.7 * 60),))
    config = SiteConfig(planning=PlanningConfig(treatment_time_min_s=60.0))
    # the same source with a good output check gives the incident's intended time
    good = f.time_for(3.0, k_out=1.0, calibration=calib, config=config)
    assert good.treatment_time_s == pytest.approx(230.7, abs=1e-9)
    err = refused_code(applicator_cm=3.0, k_out=k_out, calibration=calib, config=config)
    assert err.code == "k_out_out_of_window"
    assert "0.5284" in err.message and "repeat the output check" in err.message


@pytest.mark.parametrize("k_out", [0.9699, 1.0301, 1.1, 0.5])
def test_k_out_outside_3_percent_is_refused(k_out):
    assert refused_code(k_out=k_out).code == "k_out_out_of_window"


@pytest.mark.parametrize("k_out", [0.97, 1.03, 0.985])
def test_k_out_at_the_window_edge_is_accepted(k_out):
    assert f.time_for(k_out=k_out).k_out == k_out


def test_a_narrower_site_window_wins():
    config = SiteConfig(qa=QaConfig(k_out_window_fraction=0.01, k_out_warning_fraction=0.005))
    assert refused_code(k_out=1.015, config=config).code == "k_out_out_of_window"


def test_a_narrower_protocol_window_wins():
    proto = f.protocol(tolerances=ProtocolTolerances(k_out_window_fraction=0.01))
    assert refused_code(k_out=1.015, protocol=proto).code == "k_out_out_of_window"


# -- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dose_gy, code", [(2.0, "prescription_not_protocol"), (19.9, "prescription_not_protocol"),
                                           (20.5, "prescription_above_ceiling"),
                                           (200.0, "prescription_above_ceiling"),
                                           (float("nan"), "prescription_not_a_number"),
                                           (float("inf"), "prescription_not_a_number"),
                                           (-20.0, "prescription_not_protocol")])
def test_dose_other_than_protocol_or_above_ceiling_is_refused(dose_gy, code):
    assert refused_code(prescription_dose_gy=dose_gy).code == code


def test_a_protocol_above_the_hard_ceiling_is_refused_at_the_ceiling():
    assert refused_code(protocol=f.protocol(prescription_dose_gy=25.0),
                        prescription_dose_gy=25.0).code == "prescription_above_ceiling"


def test_applicator_not_calibrated_is_refused():
    calib = f.calibration(dose_rates=(ApplicatorDoseRate(diameter_cm=4.0, surface_dose_rate_gy_per_min=0.8),))
    err = refused_code(applicator_cm=3.0, calibration=calib)
    assert err.code == "applicator_not_calibrated" and "3.0 cm" in err.message


def test_applicator_not_allowed_by_protocol_is_refused():
    err = refused_code(applicator_cm=1.5, protocol=f.protocol(allowed_applicators_cm=(3.0, 4.0)))
    assert err.code == "applicator_not_allowed"


def test_expired_calibration_is_refused():
    calib = f.calibration(valid_until=f.TODAY - timedelta(days=1))
    err = refused_code(calibration=calib)
    assert err.code == "calibration_expired" and "recalibrate" in err.message


def test_calibration_valid_until_today_is_accepted():
    assert f.time_for(calibration=f.calibration(valid_until=f.TODAY)).preset_time_s > 0


def test_calibration_dated_after_today_is_refused():
    calib = f.calibration(calibration_date=f.TODAY + timedelta(days=1), valid_until=f.TODAY + timedelta(days=30))
    assert refused_code(calibration=calib).code == "calibration_future"


def test_calibration_of_another_source_is_refused():
    err = refused_code(device_source_serial="XRS-0099", qa_results=[f.qa(source_serial="XRS-0099")])
    assert err.code == "calibration_other_source"
    assert "XRS-0042" in err.message and "XRS-0099" in err.message


def test_no_output_check_today_is_refused():
    err = refused_code(qa_results=[f.qa(performed_on=f.TODAY - timedelta(days=1))])
    assert err.code == "qa_missing" and "output check" in err.message


def test_output_check_of_another_source_does_not_count():
    assert refused_code(qa_results=[f.qa(source_serial="XRS-0099")]).code == "qa_missing"


def test_failed_output_check_is_refused_even_after_an_earlier_pass():
    results = [f.qa(qa_id="QA-1"), f.qa(1.05, QaOutcome.FAIL, qa_id="QA-2")]
    assert refused_code(qa_results=results).code == "qa_failed"


def test_unacknowledged_warning_is_refused_and_acknowledged_warning_is_used():
    assert refused_code(qa_results=[f.qa(1.025, QaOutcome.WARNING)]).code == "qa_warning_unacknowledged"
    t = f.time_for(qa_results=[f.qa(1.025, QaOutcome.WARNING, acknowledged=True)])
    assert t.k_out == 1.025


def test_latest_output_check_of_the_day_is_used():
    chosen = todays_output_check([f.qa(1.01, qa_id="QA-1"), f.qa(0.99, qa_id="QA-2")],
                                 source_serial=f.SERIAL, today=f.TODAY)
    assert chosen.qa_id == "QA-2"


def test_time_below_plausibility_bound_is_refused():
    config = SiteConfig(planning=PlanningConfig(treatment_time_min_s=600.0))
    err = refused_code(applicator_cm=1.5, config=config)   # 461.5 s
    assert err.code == "time_implausible" and "461.5" in err.message


def test_time_above_plausibility_bound_is_refused():
    config = SiteConfig(planning=PlanningConfig(treatment_time_max_s=2400.0))
    assert refused_code(applicator_cm=5.0, config=config).code == "time_implausible"   # 2666.7 s


def test_absurd_calibrated_rate_is_refused_by_plausibility():
    calib = f.calibration(dose_rates=(ApplicatorDoseRate(diameter_cm=3.0, surface_dose_rate_gy_per_min=0.01),))
    assert refused_code(calibration=calib).code == "time_implausible"


# -- continuation ---------------------------------------------------------------------------------

def test_continuation_delivers_only_the_remaining_dose():
    t = f.time_for(3.0, previously_delivered_gy=12.0)
    assert t.dose_to_deliver_gy == 8.0
    assert t.treatment_time_s == pytest.approx(8.0 / 0.87 * 60)
    assert t.full_prescription_time_s == pytest.approx(20.0 / 0.87 * 60)
    p = f.make_plan(t, plan_id="P", patient=f.patient(), cavity=f.cavity(), protocol=f.protocol(),
                    created_at=f.NOW, created_by="x", supersedes_hash="ab" * 32)
    assert p.delivery_type is DeliveryType.CONTINUATION and p.previously_delivered_gy == 12.0


@pytest.mark.parametrize("previous", [-1.0, 20.0, 25.0, float("nan")])
def test_impossible_previous_dose_is_refused(previous):
    assert refused_code(previously_delivered_gy=previous).code == "previous_dose_invalid"


def test_compute_treatment_time_has_no_default_for_today():
    with pytest.raises(TypeError):
        compute_treatment_time(prescription_dose_gy=20.0, applicator_cm=3.0, protocol=f.protocol(),
                               calibration=f.calibration(), qa_results=[f.qa()], device_source_serial=f.SERIAL)


# -- prescription entry ----------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["20", "20.0", " 20 ", "20.00"])
def test_prescription_text_20_is_accepted(text):
    assert parse_prescription_gy(text, f.protocol()) == 20.0


@pytest.mark.parametrize("text, code", [
    ("200", "prescription_above_ceiling"),
    ("2", "prescription_not_protocol"),
    ("20.5", "prescription_above_ceiling"),
    ("19.99", "prescription_not_protocol"),
    ("20,0", "prescription_decimal_comma"),
    ("NaN", "prescription_not_a_number"),
    ("nan", "prescription_not_a_number"),
    ("inf", "prescription_not_a_number"),
    ("Infinity", "prescription_not_a_number"),
    ("-20", "prescription_not_a_number"),
    ("+20", "prescription_not_a_number"),
    ("1e308", "prescription_not_a_number"),
    ("2e1", "prescription_not_a_number"),
    ("0x14", "prescription_not_a_number"),
    ("20 Gy", "prescription_not_a_number"),
    ("2 0", "prescription_not_a_number"),
    ("20.", "prescription_not_a_number"),
    (".20", "prescription_not_a_number"),
    ("", "prescription_empty"),
    ("   ", "prescription_empty"),
    ("\t", "prescription_empty"),
    ("２０", "prescription_non_ascii"),          # full-width digits: float() would accept them
    ("٢٠", "prescription_non_ascii"),           # Arabic-Indic digits
    ("20\u00a0", "prescription_non_ascii"),     # no-break space
    ("0020", "prescription_not_a_number"),
])
def test_prescription_text_refused_with_reason(text, code):
    with pytest.raises(Refused) as info:
        parse_prescription_gy(text, f.protocol())
    assert info.value.code == code
    assert "20" in info.value.message, "the reason must say what to enter"


@pytest.mark.parametrize("value", [20, 20.0, None, b"20"])
def test_prescription_must_be_typed_text(value):
    with pytest.raises(Refused) as info:
        parse_prescription_gy(value, f.protocol())
    assert info.value.code == "prescription_not_text"


def test_fullwidth_digits_would_fool_float_so_the_guard_matters():
    assert float("２０") == 20.0   # why prescription_non_ascii exists
