"""k_TP, k_out, result levels, spread and the entered T/P units: hand-computed values."""
from __future__ import annotations

import pytest

from orconsole.config import SiteConfig
from orconsole.models import QaOutcome
from orconsole.qa import (QaInputError, QaPolicy, classify_k_out, k_out, k_tp, parse_pressure_kpa,
                          parse_temperature_c, spread_fraction)


def test_k_tp_matches_the_briefs_worked_example_with_t0_22():
    # (296.65 / 295.15) × (101.325 / 102.0) = 1.0050822 × 0.9933824 = 0.99843
    assert k_tp(23.5, 102.0, reference_temperature_c=22.0) == pytest.approx(0.99843, abs=5e-6)


def test_k_tp_is_one_at_the_reference_conditions():
    assert k_tp(20.0, 101.325) == pytest.approx(1.0, abs=1e-15)
    assert k_tp(22.0, 101.325, reference_temperature_c=22.0) == pytest.approx(1.0, abs=1e-15)


def test_k_tp_hand_computed_warm_low_pressure_room_t0_20():
    # (273.15 + 30) / 293.15 × 101.325 / 95 = 1.0341122 × 1.0665789 = 1.1029625
    assert k_tp(30.0, 95.0) == pytest.approx((303.15 / 293.15) * (101.325 / 95.0), rel=1e-12)
    assert k_tp(30.0, 95.0) == pytest.approx(1.10296, abs=1e-5)


def test_k_tp_refuses_non_physical_inputs():
    with pytest.raises(QaInputError):
        k_tp(20.0, 0.0)
    with pytest.raises(QaInputError):
        k_tp(float("nan"), 101.3)
    with pytest.raises(QaInputError):
        k_tp(-300.0, 101.3)


def test_k_out_is_corrected_mean_over_reference():
    assert k_out(2.04e-9, 2.00e-9) == pytest.approx(1.02, rel=1e-12)
    with pytest.raises(QaInputError):
        k_out(1e-9, 0.0)
    with pytest.raises(QaInputError):
        k_out(0.0, 1e-9)


@pytest.mark.parametrize("value,expected", [
    (1.0, QaOutcome.PASS), (1.02, QaOutcome.PASS), (0.98, QaOutcome.PASS),
    (1.0201, QaOutcome.WARNING), (0.975, QaOutcome.WARNING), (1.03, QaOutcome.WARNING), (0.97, QaOutcome.WARNING),
    (1.0301, QaOutcome.FAIL), (0.9, QaOutcome.FAIL), (1.89, QaOutcome.FAIL), (float("nan"), QaOutcome.FAIL),
    (float("inf"), QaOutcome.FAIL), (0.0, QaOutcome.FAIL),
])
def test_result_levels_default_two_and_three_percent(value, expected):
    assert classify_k_out(value) is expected


def test_result_levels_follow_the_site_configuration():
    tight = QaPolicy.from_site(SiteConfig.model_validate({"qa": {"k_out_window_fraction": 0.02,
                                                                 "k_out_warning_fraction": 0.01}}))
    assert classify_k_out(1.015, tight) is QaOutcome.WARNING
    assert classify_k_out(1.025, tight) is QaOutcome.FAIL
    us = QaPolicy.from_site(SiteConfig.model_validate({"qa": {"k_tp_reference_temperature_c": 22.0}}))
    assert us.reference_temperature_c == 22.0


def test_policy_refuses_a_warning_wider_than_the_window():
    with pytest.raises(ValueError):
        QaPolicy(k_out_warning_fraction=0.04, k_out_window_fraction=0.03)


def test_spread_is_range_over_mean():
    assert spread_fraction([1.0, 1.002, 0.998]) == pytest.approx(0.004 / 1.0)
    with pytest.raises(QaInputError):
        spread_fraction([1.0])


@pytest.mark.parametrize("text,celsius", [
    ("22.5", 22.5), ("22.5 C", 22.5), ("22,5 °C", 22.5), ("72.5 F", 22.5), ("72.5°F", 22.5), (21, 21.0),
])
def test_temperature_units(text, celsius):
    assert parse_temperature_c(text) == pytest.approx(celsius)


@pytest.mark.parametrize("text,kpa", [
    ("101.3", 101.3), ("101.3 kPa", 101.3), ("1013 hPa", 101.3), ("1013 mbar", 101.3),
    ("760 mmHg", 101.325), (99, 99.0),
])
def test_pressure_units(text, kpa):
    assert parse_pressure_kpa(text) == pytest.approx(kpa, abs=2e-3)


@pytest.mark.parametrize("text,hint", [("1013", "hPa"), ("760", "mmHg"), ("50 kPa", "plausible"),
                                       ("101 psi", "not known"), ("abc", "not a number")])
def test_implausible_or_unmarked_pressure_is_refused_not_clipped(text, hint):
    with pytest.raises(QaInputError, match=hint):
        parse_pressure_kpa(text)


@pytest.mark.parametrize("text", ["72", "5", "45 C", "20 K", "nan"])
def test_implausible_temperature_is_refused(text):
    with pytest.raises(QaInputError):
        parse_temperature_c(text)
