"""docs/protocol/unidos.md stays true: every command, error code, fault kind and range maximum the
code knows is documented, and the documented maxima are the simulator's."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.unidos import ERROR_ACTIONS
from protocol import unidos as u
from simulators.unidos_model import FAULT_KINDS, RANGE_LIMITS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol" / "unidos.md").read_text(encoding="utf-8")
UNITS = {"fC": 1e-15, "pC": 1e-12, "nC": 1e-9, "µC": 1e-6, "fA": 1e-15, "pA": 1e-12, "nA": 1e-9, "µA": 1e-6}


def test_every_error_code_has_a_documented_action():
    assert set(ERROR_ACTIONS) == set(u.ERROR_MEANINGS)
    for code in ERROR_ACTIONS:
        assert re.search(rf"^\| {code} \| {re.escape(u.ERROR_MEANINGS[code])} \|", DOC, re.M), code


@pytest.mark.parametrize("mnemonic", sorted(u.COMMANDS))
def test_every_command_is_documented(mnemonic):
    assert re.search(rf"`[^`]*\b{mnemonic}\b[^`]*`", DOC)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_fault_kind_is_documented(kind):
    assert f"| `{kind}` |" in DOC


def _value(text: str) -> float:
    number, unit = text.strip().split()
    return float(number) * UNITS[unit]


@pytest.mark.parametrize("rng", list(u.Range))
def test_documented_range_maxima_are_the_simulators(rng):
    row = re.search(rf"^\| {rng.value}[^|]*\|([^|]+)\|([^|]+)\|([^|]+)\|([^|]+)\|", DOC, re.M)
    assert row, rng
    current_max, charge_max, charge_res, current_res = (_value(g) for g in row.groups())
    limits = RANGE_LIMITS[rng]
    assert current_max == pytest.approx(limits.current_max_a)
    assert charge_max == pytest.approx(limits.charge_max_c)
    assert charge_res == pytest.approx(limits.charge_resolution_c)
    assert current_res == pytest.approx(limits.current_resolution_a)
