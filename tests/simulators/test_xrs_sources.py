"""Simulated source data: published anchors, flagged assumptions, the fast source's scaling, calibration document."""
from datetime import date

import pytest

from simulators.sources import CALIBRATION_FORMAT, calibration_document, load_source


def test_clinical_source_carries_the_published_surface_dose_rates():
    rates = load_source("clinical").surface_dose_rate_gy_per_min
    assert rates[3.0] == 0.87 and rates[4.0] == 0.80 and rates[5.0] == 0.45


def test_3_5_and_4_5_cm_are_interpolated_between_the_anchors():
    rates = load_source("clinical").surface_dose_rate_gy_per_min
    assert rates[3.5] == pytest.approx((0.87 + 0.80) / 2)
    assert rates[4.5] == pytest.approx((0.80 + 0.45) / 2)


def test_small_applicators_and_interpolated_values_are_flagged_as_assumptions():
    source = load_source("clinical")
    assert set(source.assumed_diameters_cm) == {1.5, 2.0, 2.5, 3.5, 4.5}
    for a in source.applicators:
        assert ("ASSUMPTION" in a.note) == a.assumption


def test_smaller_applicators_have_higher_surface_dose_rates():
    rates = load_source("clinical").surface_dose_rate_gy_per_min
    ordered = [rates[d] for d in sorted(rates)]
    assert ordered == sorted(ordered, reverse=True)


def test_fast_source_is_the_clinical_shape_at_60_times_the_dose_rate():
    fast, clinical = load_source("fast"), load_source("clinical")
    for d, rate in clinical.surface_dose_rate_gy_per_min.items():
        assert fast.surface_dose_rate_gy_per_min[d] == pytest.approx(60 * rate)
    assert fast.serial != clinical.serial


def test_20_gy_with_the_3_cm_applicator_takes_about_23_s_on_the_fast_source():
    treatment_time_s = 20.0 / (load_source("fast").rate_for(3.0) / 60.0)
    assert 22.5 < treatment_time_s < 23.5


@pytest.mark.parametrize("name", ["fast", "clinical"])
def test_reference_reading_is_qa_current_times_exposure(name):
    source = load_source(name)
    assert source.reference_reading_c == pytest.approx(source.qa_chamber_current_a * source.qa_exposure_s)
    assert source.nominal_kv == 50.0 and source.nominal_ua == 40.0
    assert set(source.isotropy_baseline) == {"plus_x", "minus_x", "plus_y", "minus_y", "plus_z"}
    assert source.assumptions


def test_unknown_source_name_is_refused_with_the_choices():
    with pytest.raises(KeyError, match="clinical, fast"):
        load_source("turbo")


def test_calibration_document_has_the_documented_fields_and_is_valid_one_year():
    doc = calibration_document("clinical", calibrated_on=date(2026, 11, 26))
    assert doc["format"] == CALIBRATION_FORMAT == "orconsole-source-calibration/1"
    assert doc["source_serial"] == load_source("clinical").serial
    assert doc["calibration_date"] == "2026-11-26" and doc["valid_until"] == "2027-11-26"
    assert doc["reference_reading_nc"] == pytest.approx(3.0)
    assert set(doc) == {"format", "source_serial", "source_model", "calibration_date", "valid_until",
                        "calibrated_by", "nominal_kv", "nominal_ua", "qa_exposure_s", "reference_reading_nc",
                        "applicators"}
    by_d = {a["diameter_cm"]: a for a in doc["applicators"]}
    assert sorted(by_d) == [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert by_d[3.0] == {"diameter_cm": 3.0, "surface_dose_rate_gy_per_min": 0.87, "assumption": False,
                         "note": by_d[3.0]["note"]}
    assert by_d[1.5]["assumption"] is True


def test_calibration_on_29_february_is_valid_until_28_february_next_year():
    assert calibration_document("fast", calibrated_on=date(2028, 2, 29))["valid_until"] == "2029-02-28"
