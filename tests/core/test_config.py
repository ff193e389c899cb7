"""Site configuration: safe defaults, TOML loading, and errors that name file, line and field."""
from __future__ import annotations

import pydantic
import pytest

from orconsole.config import ConfigError, SiteConfig, load_config, parse_config


def test_defaults_are_the_safe_trial_values():
    c = SiteConfig()
    assert c.prescription.protocol_dose_gy == 20.0
    assert c.prescription.hard_ceiling_dose_gy == 20.0
    assert c.qa.k_out_window_fraction == 0.03
    assert c.qa.k_out_warning_fraction == 0.02
    assert c.qa.k_tp_reference_temperature_c == 20.0
    assert c.planning.independent_check_agreement_fraction == 0.02
    assert c.planning.timer_resolution_s == 0.1
    assert c.delivery.dose_rate_tolerance_fraction == 0.10
    assert c.delivery.backup_timer_margin_fraction == 0.05
    assert c.delivery.irm_limit_margin_fraction == 0.05
    assert c.delivery.journal_progress_interval_s <= 1.0
    assert 1 / c.link.status_poll_period_s >= 20


def test_no_file_means_defaults():
    assert load_config(None) == SiteConfig()


def test_a_site_file_overrides_values(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('site_name = "Augsburg OR 3"\n[qa]\nk_tp_reference_temperature_c = 22.0\n'
                    'k_out_window_fraction = 0.025\n[delivery]\nkv_tolerance_fraction = 0.01\n', encoding="utf-8")
    c = load_config(path)
    assert c.site_name == "Augsburg OR 3"
    assert c.qa.k_tp_reference_temperature_c == 22.0
    assert c.qa.k_out_window_fraction == 0.025
    assert c.delivery.kv_tolerance_fraction == 0.01
    assert c.qa.k_out_warning_fraction == 0.02       # untouched values keep their default


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[qa]\nk_out_window_fraction = 0.03\nk_out_warning_fraction = = 0.02\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 3
    assert str(path) in info.value.message and "line 3" in info.value.message


def test_out_of_range_value_names_file_line_and_field(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('# site\n[qa]\nk_tp_reference_temperature_c = 20.0\nk_out_window_fraction = 0.30\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.field == "qa.k_out_window_fraction" and err.line == 4
    assert "qa.k_out_window_fraction" in err.message and "line 4" in err.message and str(path) in err.message


def test_dotted_keys_are_located_too():
    with pytest.raises(ConfigError) as info:
        parse_config('site_name = "x"\ndelivery.ramp_up_s = -1\n')
    assert info.value.field == "delivery.ramp_up_s" and info.value.line == 2


@pytest.mark.parametrize("text, field", [
    ('[qa]\nk_out_windw_fraction = 0.03\n', "qa.k_out_windw_fraction"),       # typo: unknown key refused
    ('[prescription]\nhard_ceiling_dose_gy = 25.0\n', "prescription.hard_ceiling_dose_gy"),
    ('[prescription]\nprotocol_dose_gy = nan\n', "prescription.protocol_dose_gy"),
    ('[planning]\ntreatment_time_max_s = inf\n', "planning.treatment_time_max_s"),
    ('[delivery]\nnominal_kv = "fifty"\n', "delivery.nominal_kv"),
    ('[link]\nstatus_poll_period_s = 0.2\n', "link.status_poll_period_s"),
])
def test_bad_values_are_refused_not_clipped(text, field):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.field == field


@pytest.mark.parametrize("text, words", [
    ('[qa]\nk_out_warning_fraction = 0.03\nk_out_window_fraction = 0.02\n', "warning must come before"),
    ('[planning]\ntreatment_time_min_s = 3000\ntreatment_time_max_s = 2000\n', "must be below"),
    ('[prescription]\nprotocol_dose_gy = 20.0\nhard_ceiling_dose_gy = 18.0\n', "exceeds hard_ceiling"),
])
def test_inconsistent_sections_are_refused_with_the_section_line(text, words):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert words in info.value.message
    assert info.value.line == 1


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert "absent.toml" in info.value.message


def test_non_utf8_file_is_reported(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('site_name = "Klinik Süd"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_configuration_is_frozen():
    with pytest.raises(pydantic.ValidationError):
        SiteConfig().qa.k_out_window_fraction = 0.5
