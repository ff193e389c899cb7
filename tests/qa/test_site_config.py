"""QA limits come from the site file's [qa] section: safe defaults, range checks, file/line/field errors."""
from __future__ import annotations

import pytest

from orconsole.config import ConfigError, SiteConfig, parse_config
from orconsole.qa import QaInputError, QaPolicy, parse_pressure_kpa, parse_temperature_c


def test_site_defaults_are_the_documented_safe_limits():
    policy = QaPolicy.from_site(SiteConfig())
    assert (policy.readings_per_series, policy.spread_limit_fraction, policy.max_series) == (3, 0.005, 2)
    assert (policy.temperature_min_c, policy.temperature_max_c) == (10.0, 40.0)
    assert (policy.pressure_min_kpa, policy.pressure_max_kpa) == (70.0, 110.0)
    assert (policy.chamber_hv_v, policy.chamber_hv_tolerance_v, policy.measurement_range) == (300.0, 2.0, "LOW")
    assert policy.isotropy_tolerance_fraction == 0.03
    assert (policy.straightness_tolerance_mm, policy.centering_tolerance_mm) == (0.2, 0.2)
    assert policy.calibration_max_validity_days == 366 and policy.require_signature_for_treatment


def test_every_qa_limit_can_be_set_in_the_site_file_and_reaches_the_policy():
    config = parse_config(
        "[qa]\nreadings_per_series = 5\nspread_limit_fraction = 0.003\nmax_series = 3\n"
        "temperature_min_c = 15.0\ntemperature_max_c = 30.0\npressure_min_kpa = 80.0\npressure_max_kpa = 105.0\n"
        "chamber_hv_v = -300.0\nchamber_hv_tolerance_v = 1.0\nmeasurement_range = \"MEDIUM\"\n"
        "zero_timeout_s = 600.0\nisotropy_tolerance_fraction = 0.02\nstraightness_tolerance_mm = 0.1\n"
        "centering_tolerance_mm = 0.15\ncalibration_max_validity_days = 180\nk_tp_reference_temperature_c = 22.0\n")
    policy = QaPolicy.from_site(config)
    assert (policy.readings_per_series, policy.spread_limit_fraction, policy.max_series) == (5, 0.003, 3)
    assert (policy.chamber_hv_v, policy.chamber_hv_tolerance_v, policy.measurement_range) == (-300.0, 1.0, "MEDIUM")
    assert policy.zero_timeout_s == 600.0 and policy.isotropy_tolerance_fraction == 0.02
    assert (policy.straightness_tolerance_mm, policy.centering_tolerance_mm) == (0.1, 0.15)
    assert policy.calibration_max_validity_days == 180 and policy.reference_temperature_c == 22.0
    # the site's plausibility window is what the entry parser enforces
    assert parse_temperature_c("29 C", policy) == 29.0
    with pytest.raises(QaInputError, match="15–30"):
        parse_temperature_c("32 C", policy)
    with pytest.raises(QaInputError, match="80–105"):
        parse_pressure_kpa("1070 hPa", policy)


@pytest.mark.parametrize("body, field, line", [
    ("[qa]\nreadings_per_series = 1\n", "qa.readings_per_series", 2),
    ("# site\n[qa]\nspread_limit_fraction = 0.5\n", "qa.spread_limit_fraction", 3),
    ("[qa]\nmeasurement_range = \"ULTRA\"\n", "qa.measurement_range", 2),
    ("[qa]\nchamber_hv_v = 3000\n", "qa.chamber_hv_v", 2),
    ("[qa]\ncalibration_max_validity_days = 400\n", "qa.calibration_max_validity_days", 2),
    ("[qa]\nstraightness_tolerance_mm = 200\n", "qa.straightness_tolerance_mm", 2),
    ("[qa]\nisotropy_tolrance_fraction = 0.03\n", "qa.isotropy_tolrance_fraction", 2),
])
def test_a_bad_qa_limit_is_refused_naming_file_line_and_field(tmp_path, body, field, line):
    path = tmp_path / "site.toml"
    path.write_text(body, encoding="utf-8")
    from orconsole.config import load_config
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.field == field and err.line == line
    assert str(path) in err.message and f"line {line}" in err.message and field in err.message


@pytest.mark.parametrize("body, words", [
    ("[qa]\ntemperature_min_c = 35.0\ntemperature_max_c = 30.0\n", "must be below temperature_max_c"),
    ("[qa]\npressure_min_kpa = 100.0\npressure_max_kpa = 90.0\n", "must be below pressure_max_kpa"),
    ("[qa]\nrequire_signature_for_treatment = false\n", "requires the physicist's signature"),
])
def test_inconsistent_or_loosening_qa_settings_are_refused_with_the_reason(body, words):
    with pytest.raises(ConfigError, match=words):
        parse_config(body)
