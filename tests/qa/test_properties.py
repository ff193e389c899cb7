"""Properties of the QA formulas that must hold for every input, not only the hand-picked ones."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orconsole.models import QaOutcome
from orconsole.qa import (QaInputError, QaPolicy, classify_k_out, k_tp, parse_pressure_kpa, parse_temperature_c,
                          reference_reading_at)

temperatures = st.floats(min_value=10.0, max_value=40.0, allow_nan=False)
pressures = st.floats(min_value=70.0, max_value=110.0, allow_nan=False)


@given(temperatures, temperatures, pressures)
def test_k_tp_rises_with_temperature(t1, t2, p):
    if t2 - t1 > 1e-6:
        assert k_tp(t1, p) < k_tp(t2, p)
    elif t1 <= t2:
        assert k_tp(t1, p) <= k_tp(t2, p)


@given(temperatures, pressures, pressures)
def test_k_tp_falls_with_pressure(t, p1, p2):
    if p2 - p1 > 1e-6:
        assert k_tp(t, p1) > k_tp(t, p2)
    elif p1 <= p2:
        assert k_tp(t, p1) >= k_tp(t, p2)


@given(temperatures, pressures, st.sampled_from([20.0, 22.0]))
def test_corrected_reading_over_reference_does_not_depend_on_t0(t, p, t0):
    raw, reference_at_20 = 2.9e-9, 3.0e-9
    k20 = raw * k_tp(t, p) / reference_reading_at(reference_at_20, reference_temperature_c=20.0)
    k = raw * k_tp(t, p, reference_temperature_c=t0) / reference_reading_at(reference_at_20, reference_temperature_c=t0)
    assert k == pytest.approx(k20, rel=1e-12)


@given(st.floats(min_value=0.0, max_value=0.2, allow_nan=False))
def test_result_levels_are_symmetric_and_ordered(deviation):
    up, down = classify_k_out(1.0 + deviation), classify_k_out(1.0 - deviation)
    assert up is down
    order = [QaOutcome.PASS, QaOutcome.WARNING, QaOutcome.FAIL]
    assert order.index(classify_k_out(1.0 + deviation)) >= order.index(classify_k_out(1.0 + deviation / 2))


@given(st.floats(min_value=700.0, max_value=1100.0, allow_nan=False))
def test_hpa_and_mbar_are_tenths_of_kpa(hpa):
    assert parse_pressure_kpa(f"{hpa!r} hPa") == pytest.approx(hpa / 10)
    assert parse_pressure_kpa(f"{hpa!r} mbar") == pytest.approx(hpa / 10)


@given(st.floats(min_value=-100.0, max_value=200.0, allow_nan=False))
def test_temperature_is_accepted_only_inside_the_limits_never_clipped(value):
    policy = QaPolicy()
    if policy.temperature_min_c <= value <= policy.temperature_max_c:
        assert parse_temperature_c(value) == value
    else:
        with pytest.raises(QaInputError):
            parse_temperature_c(value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_k_out_outside_the_window_fails(value):
    outcome = classify_k_out(value)
    if not math.isfinite(value) or abs(value - 1.0) > 0.03 + 1e-9:
        assert outcome is QaOutcome.FAIL
